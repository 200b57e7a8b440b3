"""Property tests: random operation sequences against a byte-granule model of memblock.

The model keeps, per 16-byte granule, the (nid, flags) memblock must hold for it: an add only
gives attributes to granules not yet covered, setters change covered granules, removes drop
them. The region arrays must expand to exactly that, stay sorted and disjoint, be minimal
right after an add, and keep total_size equal to the sum of sizes (except for what
trim_memory shaved off, the kernel's documented quirk).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sim.mm.memblock import (
    MAX_NUMNODES,
    MEMBLOCK_HOTPLUG,
    MEMBLOCK_KHO_SCRATCH,
    MEMBLOCK_NOMAP,
    MEMBLOCK_NONE,
    MEMBLOCK_RSRV_KERN,
    MEMBLOCK_RSRV_NOINIT,
    NUMA_NO_NODE,
    Memblock,
    MemblockType,
)
from sim.sizes import PAGE_SIZE, round_down, round_up

G = 16              # granule: every address and size below is a multiple of it
SPAN = 0x10000      # the arena the random operations play in
Attrs = dict[int, tuple[int, int]]

addr = st.integers(0, SPAN // G - 1).map(lambda g: g * G)
length = st.integers(1, SPAN // G // 4).map(lambda g: g * G)
nid = st.integers(0, 3)

op = st.one_of(
    st.tuples(st.just("add"), addr, length),
    st.tuples(st.just("add_node"), addr, length, nid, st.sampled_from([MEMBLOCK_NONE, MEMBLOCK_HOTPLUG])),
    st.tuples(st.just("reserve"), addr, length),
    st.tuples(st.just("reserve_kern"), addr, length),
    st.tuples(st.just("remove"), addr, length),
    st.tuples(st.just("phys_free"), addr, length),
    st.tuples(st.just("setclr"), addr, length,
              st.sampled_from(["mark_hotplug", "clear_hotplug", "mark_nomap", "clear_nomap",
                               "mark_kho_scratch", "clear_kho_scratch", "reserved_mark_noinit"])),
    st.tuples(st.just("set_node"), addr, length, nid, st.booleans()),
    st.tuples(st.just("alloc"), length, st.sampled_from([G, 64, 256, PAGE_SIZE]), addr,
              st.sampled_from([NUMA_NO_NODE, 0, 1, 2, 3]), st.booleans()),
    st.tuples(st.just("trim"), st.sampled_from([G, 64, 256])),
)

SETTER_FLAGS = {
    "mark_hotplug": ("memory", MEMBLOCK_HOTPLUG, True), "clear_hotplug": ("memory", MEMBLOCK_HOTPLUG, False),
    "mark_nomap": ("memory", MEMBLOCK_NOMAP, True), "clear_nomap": ("memory", MEMBLOCK_NOMAP, False),
    "mark_kho_scratch": ("memory", MEMBLOCK_KHO_SCRATCH, True),
    "clear_kho_scratch": ("memory", MEMBLOCK_KHO_SCRATCH, False),
    "reserved_mark_noinit": ("reserved", MEMBLOCK_RSRV_NOINIT, True),
}


@dataclass
class Model:
    memory: Attrs = field(default_factory=dict)
    reserved: Attrs = field(default_factory=dict)
    trimmed: int = 0   # bytes trim_memory shaved off without updating total_size

    def add(self, attrs: Attrs, base: int, size: int, nid: int, flags: int) -> None:
        for g in range(base, base + size, G):
            attrs.setdefault(g, (nid, flags))

    def drop(self, attrs: Attrs, base: int, size: int) -> None:
        for g in range(base, base + size, G):
            attrs.pop(g, None)


def expand(t: MemblockType) -> Attrs:
    return {g: (r.nid, r.flags) for r in t.regions for g in range(r.base, r.base + r.size, G)}


def check_sorted_disjoint(t: MemblockType) -> None:
    regions = list(t.regions)
    assert t.cnt == len(regions) <= t.max
    for r in regions:
        assert r.size > 0
    for a, b in zip(regions, regions[1:], strict=False):
        assert a.base + a.size <= b.base, f"{t.name}: {a} overlaps or precedes {b}"


def check_minimal(t: MemblockType) -> None:
    regions = list(t.regions)
    for a, b in zip(regions, regions[1:], strict=False):
        assert not (a.base + a.size == b.base and a.nid == b.nid and a.flags == b.flags), \
            f"{t.name}: mergeable neighbours {a} {b}"


def check_free_ranges(mb: Memblock, model: Model) -> None:
    """Free pieces: memory (minus NOMAP) minus reserved, never spanning two memory regions."""
    fwd = list(mb.for_each_free_mem_range())
    assert list(mb.for_each_free_mem_range_reverse()) == fwd[::-1]
    covered: set[int] = set()
    for s, e, _ in fwd:
        assert s <= e
        assert any(r.base <= s and e <= r.base + r.size for r in mb.memory.regions)
        covered.update(range(s, e, G))
    expected = {g for g, (_, f) in model.memory.items() if not f & MEMBLOCK_NOMAP} - set(model.reserved)
    assert covered == expected


def apply(mb: Memblock, model: Model, step: tuple) -> bool:
    """Run one operation on both; True when it was an add (after which arrays must be minimal)."""
    kind = step[0]
    if kind in ("add", "add_node") and not mb.memory.regions[0].size and step[2]:
        # memblock_add_range's empty fast path sets total_size = size: trim's drift is gone.
        model.trimmed = 0
    if kind == "add":
        mb.add(step[1], step[2])
        model.add(model.memory, step[1], step[2], MAX_NUMNODES, MEMBLOCK_NONE)
        return True
    if kind == "add_node":
        mb.add_node(step[1], step[2], step[3], step[4])
        model.add(model.memory, step[1], step[2], step[3], step[4])
        return True
    if kind in ("reserve", "reserve_kern"):
        getattr(mb, kind)(step[1], step[2])
        flags = MEMBLOCK_NONE if kind == "reserve" else MEMBLOCK_RSRV_KERN
        model.add(model.reserved, step[1], step[2], NUMA_NO_NODE, flags)
        return True
    if kind == "remove":
        mb.remove(step[1], step[2])
        model.drop(model.memory, step[1], step[2])
    elif kind == "phys_free":
        mb.phys_free(step[1], step[2])
        model.drop(model.reserved, step[1], step[2])
    elif kind == "setclr":
        _, base, size, name = step
        type_name, flag, set_it = SETTER_FLAGS[name]
        getattr(mb, name)(base, size)
        attrs = getattr(model, type_name)
        for g in range(base, base + size, G):
            if g in attrs:
                n, f = attrs[g]
                attrs[g] = (n, f | flag if set_it else f & ~flag)
    elif kind == "set_node":
        _, base, size, node, on_reserved = step
        mb.set_node(base, size, mb.reserved if on_reserved else mb.memory, node)
        attrs = model.reserved if on_reserved else model.memory
        for g in range(base, base + size, G):
            if g in attrs:
                attrs[g] = (node, attrs[g][1])
    elif kind == "alloc":
        return alloc(mb, model, step)
    else:
        trim(mb, model, step[1])
    return False


def alloc(mb: Memblock, model: Model, step: tuple) -> bool:
    _, size, align, start, node, bottom_up = step
    mb.set_bottom_up(bottom_up)
    found = mb.alloc_try_nid_raw(size, align, start, 0, node)
    if not found:
        return True
    assert found >= PAGE_SIZE and found % align == 0
    granules = range(found, found + size, G)
    mem = [model.memory.get(g) for g in granules]
    assert all(m is not None and not m[1] & MEMBLOCK_NOMAP for m in mem), "allocated outside memory"
    assert not any(g in model.reserved for g in granules), "allocated reserved memory"
    # A chunk found on the requested node keeps that nid; a fallback is reserved with NUMA_NO_NODE.
    used = node if mem[0] is not None and mem[0][0] == node else NUMA_NO_NODE
    model.add(model.reserved, found, size, used, MEMBLOCK_RSRV_KERN)
    return True


def trim(mb: Memblock, model: Model, align: int) -> None:
    """Derive the expected effect from the (already verified) regions, one at a time."""
    for r in list(mb.memory.regions):
        start, end = round_up(r.base, align), round_down(r.base + r.size, align)
        if start >= end:
            model.drop(model.memory, r.base, r.size)
            continue
        model.drop(model.memory, r.base, start - r.base)
        model.drop(model.memory, end, r.base + r.size - end)
        model.trimmed += r.size - (end - start)
    mb.trim_memory(align)


@settings(max_examples=200, deadline=None)
@given(st.lists(op, max_size=40))
# Found by hypothesis: adding to an emptied array resets the drift trim left in total_size.
@example([("add_node", 0, 16, 0, 0), ("add_node", 0, 80, 0, 0), ("trim", 64), ("remove", 0, 64),
          ("add", 0, 16)])
def test_random_operations_match_the_model(steps: list[tuple]) -> None:
    mb = Memblock(numa=True)
    model = Model()
    for step in steps:
        was_add = apply(mb, model, step)
        for t, attrs in ((mb.memory, model.memory), (mb.reserved, model.reserved)):
            check_sorted_disjoint(t)
            assert expand(t) == attrs, f"{t.name} differs from the model after {step}"
            if was_add:
                check_minimal(t)
        assert mb.memory.total_size == sum(r.size for r in mb.memory.regions) + model.trimmed
        assert mb.reserved.total_size == sum(r.size for r in mb.reserved.regions)
    check_free_ranges(mb, model)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(addr, length), max_size=30), st.booleans())
def test_uma_nids_always_read_zero(ranges: list[tuple[int, int]], bottom_up: bool) -> None:
    """Without CONFIG_NUMA there is no nid field: every region, whatever it came from, reads 0."""
    mb = Memblock(numa=False)
    mb.set_bottom_up(bottom_up)
    for i, (base, size) in enumerate(ranges):
        if i % 3 == 0:
            mb.add_node(base, size, 5, MEMBLOCK_NONE)
        elif i % 3 == 1:
            mb.reserve(base, size)
        else:
            mb.alloc_try_nid_raw(G, G, 0, 0, 2)
    for t in (mb.memory, mb.reserved):
        check_sorted_disjoint(t)
        check_minimal(t)
        assert all(r.nid == 0 for r in t.regions)
