"""The memblock shortcuts against the kernel's plain algorithm, on random operation sequences.

sim.mm.memblock starts its scans at a bisect instead of index 0, walks the free ranges one memory
region at a time, and inserts KHO's million reservations in merge passes
(reserve_mark_noinit_many).  Here every sequence runs twice: on the optimised code, and on the
same code with the bisects answering what a scan from the array's end would reach, the free
ranges walked as __next_mem_range's two indexes (also for free_mem_range_arrays), and
reserve_mark_noinit_many spelled as its loop of single calls.
Expect the same arrays (regions, capacity, where a doubled array lives, total_size), the
same return values and errors, the same log and the same free ranges, after every step.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

import sim.mm.memblock as memblock_mod
from sim.mm.memblock import MEMBLOCK_NONE, NUMA_NO_NODE, PHYS_ADDR_MAX, Memblock, MemblockType
from sim.sizes import PAGE_SIZE

G = 16
SPAN = 0x40000
MAX_REGIONS = 4        # tiny arrays, so that the sequences double them again and again

addr = st.integers(0, SPAN // G - 1).map(lambda g: g * G)
length = st.integers(1, 64).map(lambda g: g * G)
nid = st.integers(0, 3)
ranges = st.lists(st.tuples(addr, length), max_size=24)

op = st.one_of(
    st.tuples(st.just("add_node"), addr, length, nid),
    st.tuples(st.just("reserve"), addr, length),
    st.tuples(st.just("remove"), addr, length),
    st.tuples(st.just("phys_free"), addr, length),
    st.tuples(st.just("reserved_mark_noinit"), addr, length),
    st.tuples(st.just("mark_nomap"), addr, length),
    st.tuples(st.just("set_node_reserved"), addr, length, nid),
    st.tuples(st.just("alloc"), length, addr, st.sampled_from([-1, 0, 1]), st.booleans()),
    st.tuples(st.just("is_region_reserved"), addr, length),
    st.tuples(st.just("many"), ranges),
    # Runs of neighbouring pages, like the folios of one bitmap.
    st.tuples(st.just("many_adjacent"), addr, st.integers(1, 20), st.sampled_from([G, 2 * G])),
    # ... and ones that end where a reserved region starts, so they must merge with it.
    st.tuples(st.just("many_below"), st.integers(0, 30), st.integers(1, 4)),
)


class PlainMemblock(Memblock):
    """The reference: overlap and batch reservation as the kernel spells them."""

    def overlaps_region(self, type: MemblockType, base: int, size: int) -> bool:
        size = self._cap_size(base, size)
        return any(base < r.base + r.size and r.base < base + size for r in type._rgn)

    def reserve_mark_noinit_many(self, bases: Sequence[int], sizes: Sequence[int]) -> None:
        for base, size in zip(bases, sizes, strict=True):
            self.reserve(base, size)
            self.reserved_mark_noinit(base, size)

    def free_mem_range_arrays(self, nid: int = NUMA_NO_NODE,
                              flags: int = MEMBLOCK_NONE) -> tuple[array, array]:
        pieces = list(self._next_mem_range(nid, flags, self.memory, self.reserved))
        return array("Q", [s for s, _, _ in pieces]), array("Q", [e for _, e, _ in pieces])

    def _next_mem_range(self, nid: int, flags: int, type_a: MemblockType,
                        type_b: MemblockType | None) -> Iterator[tuple[int, int, int]]:
        """__next_mem_range()'s two indexes, both walking from 0, one step per piece."""
        idx_a = idx_b = 0
        while idx_a < len(type_a._rgn):
            m = type_a._rgn[idx_a]
            m_start, m_end = m.base, m.base + m.size
            if self._should_skip_region(type_a, m, nid, flags):
                idx_a += 1
                continue
            if type_b is None:
                yield m_start, m_end, m.nid
                idx_a += 1
                continue
            rb = type_b._rgn
            while idx_b < len(rb) + 1:
                r_start = rb[idx_b - 1].base + rb[idx_b - 1].size if idx_b else 0
                r_end = rb[idx_b].base if idx_b < len(rb) else PHYS_ADDR_MAX
                if r_start >= m_end:
                    idx_a += 1
                    break
                if m_start < r_end:
                    yield max(m_start, r_start), min(m_end, r_end), m.nid
                    if m_end <= r_end:
                        idx_a += 1
                    else:
                        idx_b += 1
                    break
                idx_b += 1
            else:
                idx_a += 1


def plain_scans() -> mock._patch_dict:
    """Every bisect answers where the kernel's scan would start: index 0, or the array's end."""
    return mock.patch.multiple(memblock_mod,
                               _first_ending_after=lambda rgn, addr: 0,
                               _first_starting_after=lambda rgn, addr: 0,
                               _first_ending_at_or_after=lambda rgn, addr: len(rgn))


def state(mb: Memblock) -> tuple:
    return tuple((t.max, t.array_addr, t.total_size, [(r.base, r.size, r.flags, r.nid) for r in t.regions])
                 for t in (mb.memory, mb.reserved))


def run(cls: type[Memblock], steps: list[tuple], debug: bool) -> list:
    mb = cls(numa=True)
    log: list[str] = []
    mb.printk = log.append
    mb.memblock_debug = debug
    mb.allow_resize()
    mb.memory.max = mb.reserved.max = MAX_REGIONS
    mb.add_node(0, SPAN, 0)
    trace: list = []
    for step in steps:
        kind = step[0]
        if kind == "add_node":
            result = mb.add_node(step[1], step[2], step[3])
        elif kind in ("reserve", "phys_free", "reserved_mark_noinit", "mark_nomap", "remove"):
            result = getattr(mb, kind)(step[1], step[2])
        elif kind == "set_node_reserved":
            result = mb.set_node(step[1], step[2], mb.reserved, step[3])
        elif kind == "alloc":
            _, size, start, node, bottom_up = step
            mb.set_bottom_up(bottom_up)
            result = mb.alloc_try_nid_raw(size, G, start, 0, node)
        elif kind == "is_region_reserved":
            result = mb.is_region_reserved(step[1], step[2])
        elif kind == "many":
            result = mb.reserve_mark_noinit_many([b for b, _ in step[1]], [s for _, s in step[1]])
        elif kind == "many_adjacent":
            _, base, count, size = step
            result = mb.reserve_mark_noinit_many([base + i * size for i in range(count)], [size] * count)
        else:
            _, which, count = step
            regions = list(mb.reserved.regions) or [mb.reserved.regions[0]]
            end = regions[which % len(regions)].base
            bases = [b for b in range(end - count * G, end, G) if b >= 0]
            result = mb.reserve_mark_noinit_many(bases, [G] * len(bases))
        trace.append((step, result, state(mb), list(mb.for_each_free_mem_range()), mb.free_mem_range_arrays(),
                      mb.free_mem_range_arrays(1),
                      list(mb.for_each_free_mem_range_reverse()), len(log)))
    trace.append(log)
    return trace


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=30), st.booleans())
def test_fast_paths_match_the_plain_algorithm(steps: list[tuple], debug: bool) -> None:
    fast = run(Memblock, steps, debug)
    with plain_scans():
        plain = run(PlainMemblock, steps, debug)
    # memblock=debug names the caller; the reference's loop is one frame deeper than the real one.
    plain[-1] = [line.replace(" reserve_mark_noinit_many+", " run+") for line in plain[-1]]
    for got, want in zip(fast, plain, strict=True):
        assert got == want


def test_the_plain_reference_really_scans_from_the_start() -> None:
    """Expect the reference to differ from the bisects (else the comparison above proves nothing)."""
    rgn = [memblock_mod.MemblockRegion(PAGE_SIZE * i, G) for i in range(1, 5)]
    with plain_scans():
        assert memblock_mod._first_ending_after(rgn, 3 * PAGE_SIZE) == 0
    assert memblock_mod._first_ending_after(rgn, 3 * PAGE_SIZE) == 2
