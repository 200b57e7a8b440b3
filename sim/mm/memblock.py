"""A faithful model of Linux 6.16 mm/memblock.c: the boot-time physical memory allocator.

The point is fidelity, not elegance: the region arrays are split, merged, doubled and
searched in exactly the order the kernel does it, because callers (the kernel's boot code,
KHO, the kernel's own memblock test suite) observe the resulting layouts byte for byte.
Addresses are u64 physical addresses; virtual = physical (``__pa``/``__va`` are the identity).
"""

from __future__ import annotations

import errno
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from sim.kernel.panic import KernelPanic
from sim.physmem import PhysMem
from sim.sizes import (
    PAGE_ALIGN,
    PAGE_SIZE,
    PFN_DOWN,
    PFN_PHYS,
    PFN_UP,
    PHYS_ADDR_MAX,
    PHYS_PFN,
    U64_MAX,
    round_down,
    round_up,
)

NUMA_NO_NODE = -1
NODES_SHIFT = 4
MAX_NUMNODES = 1 << NODES_SHIFT

# enum memblock_flags
MEMBLOCK_NONE = 0x0
MEMBLOCK_HOTPLUG = 0x1
MEMBLOCK_MIRROR = 0x2
MEMBLOCK_NOMAP = 0x4
MEMBLOCK_DRIVER_MANAGED = 0x8
MEMBLOCK_RSRV_NOINIT = 0x10
MEMBLOCK_RSRV_KERN = 0x20
MEMBLOCK_KHO_SCRATCH = 0x40

MEMBLOCK_ALLOC_ANYWHERE = PHYS_ADDR_MAX
MEMBLOCK_ALLOC_ACCESSIBLE = 0
MEMBLOCK_ALLOC_NOLEAKTRACE = 1
MEMBLOCK_LOW_LIMIT = 0
ARCH_LOW_ADDRESS_LIMIT = 0xFFFFFFFF

INIT_MEMBLOCK_REGIONS = 128
# sizeof(struct memblock_region) on 64-bit, with or without NUMA (padding): sizes the doubled arrays.
SIZEOF_MEMBLOCK_REGION = 24

# debugfs names, indexed by bit number (memblock_debug_show's flagname[]).
_FLAGNAME = ("HOTPLUG", "MIRROR", "NOMAP", "DRV_MNG", "RSV_NIT", "RSV_KERN", "KHO_SCRATCH")

_THIS_FILE = __file__


def _pa(x: int) -> str:
    """%pa / %pap of a 64-bit phys_addr_t."""
    return f"0x{x & U64_MAX:016x}"


def _hash_x(x: int) -> str:
    """printf's %#x: the 0x prefix is dropped for zero."""
    return f"{x:#x}" if x else "0"


def _region_base(r: MemblockRegion) -> int:
    return r.base


def _region_end(r: MemblockRegion) -> int:
    return r.base + r.size


# The arrays are sorted and disjoint, so a scan the kernel starts at one end of an array may
# start where the first region that matters lies: everything it would step over first
# cannot overlap.  These three bisects are the only shortcuts over the kernel's loops.

def _first_ending_after(rgn: list[MemblockRegion], addr: int) -> int:
    """Index of the first region ending above addr."""
    return bisect_right(rgn, addr, key=_region_end)


def _first_starting_after(rgn: list[MemblockRegion], addr: int) -> int:
    """Index of the first region starting above addr (the first gap ending above it)."""
    return bisect_right(rgn, addr, key=_region_base)


def _first_ending_at_or_after(rgn: list[MemblockRegion], addr: int) -> int:
    """Index of the first region ending at or above addr (the last gap starting below it)."""
    return bisect_left(rgn, addr, key=_region_end)


def _caller_name() -> str:
    """The function that called into memblock, standing in for _RET_IP_ under %pS."""
    f = sys._getframe(1)
    while f is not None and f.f_code.co_filename == _THIS_FILE:
        f = f.f_back
    return f.f_code.co_name if f is not None else "?"


@dataclass(slots=True)
class MemblockRegion:
    """struct memblock_region; nid is always 0 on a non-NUMA Memblock (the field does not exist)."""

    base: int = 0
    size: int = 0
    flags: int = MEMBLOCK_NONE
    nid: int = 0


class RegionArray(Sequence[MemblockRegion]):
    """The used part of a type's region array, as C code indexes it.

    ``regions[0]`` of an empty type is the zeroed slot the kernel leaves there, because the
    kernel (and its tests) read it: the empty fast path of memblock_add_range tests its size,
    and memblock_start_of_DRAM returns its base.
    """

    def __init__(self, owner: MemblockType) -> None:
        self._owner = owner

    def __len__(self) -> int:
        return len(self._owner._rgn)

    @overload
    def __getitem__(self, i: int) -> MemblockRegion: ...

    @overload
    def __getitem__(self, i: slice) -> list[MemblockRegion]: ...

    def __getitem__(self, i: int | slice) -> MemblockRegion | list[MemblockRegion]:
        rgn = self._owner._rgn
        if isinstance(i, slice):
            return rgn[i]
        if i == 0 and not rgn:
            return self._owner._empty
        return rgn[i]

    def __iter__(self) -> Iterator[MemblockRegion]:
        return iter(self._owner._rgn)


class MemblockType:
    """struct memblock_type: a sorted, non-overlapping array of regions with a capacity."""

    def __init__(self, name: str, max_regions: int = INIT_MEMBLOCK_REGIONS) -> None:
        self.name = name
        self.max = max_regions
        self.total_size = 0
        self._rgn: list[MemblockRegion] = []
        self._empty = MemblockRegion()
        # Physical address of a memblock-allocated array; 0 while the static one is in use.
        self.array_addr = 0
        self.regions = RegionArray(self)

    @property
    def cnt(self) -> int:
        return len(self._rgn)

    def __repr__(self) -> str:
        return f"MemblockType({self.name!r}, cnt={self.cnt}, max={self.max}, total_size={self.total_size:#x})"


class Memblock:
    """The global ``struct memblock`` plus the file-static state of mm/memblock.c."""

    def __init__(self, physmem: PhysMem | None = None, *, numa: bool = True, smp_cache_bytes: int = 64,
                 low_limit: int = ARCH_LOW_ADDRESS_LIMIT) -> None:
        self.physmem = physmem
        self.numa = numa
        self.max_numnodes = MAX_NUMNODES if numa else 1
        self.smp_cache_bytes = smp_cache_bytes
        self.low_limit = low_limit
        self.memory = MemblockType("memory")
        self.reserved = MemblockType("reserved")
        self.bottom_up_mode = False
        self.current_limit = MEMBLOCK_ALLOC_ANYWHERE
        self.can_resize = False
        self.memblock_debug = False
        self.kho_scratch_only = False
        # The state a doubling last failed in (see _double_array).
        self._double_failed: tuple[object, ...] | None = None
        # kernelcore=mirror; without it memblock_mark_mirror is a no-op and nothing is mirrored.
        self.mirrored_kernelcore = False
        self.system_has_some_mirror = False
        self.movable_node = False
        self.printk: Callable[[str], None] | None = None

    # ---- helpers ---------------------------------------------------------------------------

    def _log(self, text: str) -> None:
        if self.printk is not None:
            self.printk(text)

    def _dbg(self, text: str) -> None:
        """memblock_dbg(): pr_info only under memblock=debug."""
        if self.memblock_debug:
            self._log(text)

    def numa_valid_node(self, nid: int) -> bool:
        return 0 <= nid < self.max_numnodes

    def _node(self, nid: int) -> int:
        """What memblock_set_region_node() stores: nothing without NUMA, so reads give 0."""
        return nid if self.numa else 0

    @staticmethod
    def _cap_size(base: int, size: int) -> int:
        return min(size, PHYS_ADDR_MAX - base)

    def _choose_memblock_flags(self) -> int:
        if self.kho_scratch_only:
            return MEMBLOCK_KHO_SCRATCH
        return MEMBLOCK_MIRROR if self.system_has_some_mirror else MEMBLOCK_NONE

    # ---- array maintenance -----------------------------------------------------------------

    def _insert_region(self, type: MemblockType, idx: int, base: int, size: int, nid: int,
                       flags: int) -> None:
        type._rgn.insert(idx, MemblockRegion(base, size, flags, self._node(nid)))
        type.total_size += size

    def _remove_region(self, type: MemblockType, r: int) -> None:
        type.total_size -= type._rgn[r].size
        del type._rgn[r]
        if not type._rgn:
            type._empty = MemblockRegion(0, 0, 0, self._node(MAX_NUMNODES))

    def _double_array(self, type: MemblockType, new_area_start: int, new_area_size: int) -> int:
        """memblock_double_array(): the new array comes from memblock itself (slab is never up)."""
        if not self.can_resize:
            raise KernelPanic(f"memblock: cannot resize {type.name} array")
        old_size = type.max * SIZEOF_MEMBLOCK_REGION
        new_size = old_size << 1
        old_alloc_size = PAGE_ALIGN(old_size)
        new_alloc_size = PAGE_ALIGN(new_size)
        # Only the reserved array must avoid the range about to be reserved.
        if type is not self.reserved:
            new_area_start = new_area_size = 0
        # Simulator: a doubling that failed fails again while no region, size, flag or limit
        # has changed, whatever page the caller is about to reserve; not searching again keeps
        # a flood of failing reservations (a corrupt KHO bitmap in scratch-only mode) linear.
        state = (type.name, type.max, self.current_limit, self.kho_scratch_only, len(self.reserved._rgn),
                 self.reserved.total_size, tuple((r.base, r.size, r.flags) for r in self.memory._rgn))
        addr = 0
        if state != self._double_failed:
            addr = self._find_in_range(new_area_start + new_area_size, self.current_limit,
                                       new_alloc_size, PAGE_SIZE)
            if not addr and new_area_size:
                addr = self._find_in_range(0, min(new_area_start, self.current_limit), new_alloc_size,
                                           PAGE_SIZE)
        self._double_failed = None if addr else state
        if not addr:
            self._log(f"memblock: Failed to double {type.name} array from {type.max} to "
                      f"{type.max * 2} entries !\n")
            return -1
        self._dbg(f"memblock: {type.name} is doubled to {type.max * 2} at "
                  f"[{_pa(addr)}-{_pa(addr + new_size - 1)}]")
        old_addr = type.array_addr
        type.array_addr = addr
        type.max <<= 1
        if old_addr:
            self.phys_free(old_addr, old_alloc_size)
        self.reserve_kern(addr, new_alloc_size)
        return 0

    def _merge_regions(self, type: MemblockType, start_rgn: int, end_rgn: int) -> None:
        """Merge compatible neighbours, but only around the span that changed (kernel window)."""
        rgn = type._rgn
        i = start_rgn - 1 if start_rgn else 0
        end_rgn = min(end_rgn, len(rgn) - 1)
        while i < end_rgn:
            this, nxt = rgn[i], rgn[i + 1]
            if (this.base + this.size != nxt.base or this.nid != nxt.nid
                    or this.flags != nxt.flags):
                i += 1
                continue
            this.size += nxt.size
            del rgn[i + 1]
            end_rgn -= 1

    def _add_range(self, type: MemblockType, base: int, size: int, nid: int, flags: int) -> int:
        """memblock_add_range(): insert only the uncovered parts, then merge the window."""
        obase = base
        size = self._cap_size(base, size)
        end = base + size
        if not size:
            return 0
        rgn = type._rgn
        if type.regions[0].size == 0:
            rgn.append(MemblockRegion(base, size, flags, self._node(nid)))
            type.total_size = size
            return 0

        # Worst case needs cnt + 1 slots: with that many free the counting pass is skipped.
        insert = len(rgn) * 2 + 1 <= type.max
        while True:
            base = obase
            nr_new = 0
            start_rgn = end_rgn = -1
            idx = _first_ending_after(rgn, base)
            while idx < len(rgn):
                r = rgn[idx]
                rbase = r.base
                rend = rbase + r.size
                if rbase >= end:
                    break
                if rend <= base:
                    idx += 1
                    continue
                if rbase > base:
                    nr_new += 1
                    if insert:
                        if start_rgn == -1:
                            start_rgn = idx
                        end_rgn = idx + 1
                        self._insert_region(type, idx, base, rbase - base, nid, flags)
                        idx += 1
                base = min(rend, end)
                idx += 1
            if base < end:
                nr_new += 1
                if insert:
                    if start_rgn == -1:
                        start_rgn = idx
                    end_rgn = idx + 1
                    self._insert_region(type, idx, base, end - base, nid, flags)
            if not nr_new:
                return 0
            if insert:
                self._merge_regions(type, start_rgn, end_rgn)
                return 0
            while len(rgn) + nr_new > type.max:
                if self._double_array(type, obase, size) < 0:
                    return -errno.ENOMEM
            insert = True

    def _isolate_range(self, type: MemblockType, base: int, size: int) -> tuple[int, int] | None:
        """memblock_isolate_range(): split regions at the range's edges; returns the index span inside.

        None is the kernel's -ENOMEM: the array was full and no space for a bigger one was found.
        """
        size = self._cap_size(base, size)
        end = base + size
        start_rgn = end_rgn = 0
        if not size:
            return 0, 0
        while len(type._rgn) + 2 > type.max:
            if self._double_array(type, base, size) < 0:
                return None
        rgn = type._rgn
        idx = _first_ending_after(rgn, base)
        while idx < len(rgn):
            r = rgn[idx]
            rbase = r.base
            rend = rbase + r.size
            if rbase >= end:
                break
            if rend <= base:
                idx += 1
                continue
            if rbase < base:
                # Crosses the start: keep the lower part below, look at the upper part next.
                r.base = base
                r.size -= base - rbase
                type.total_size -= base - rbase
                self._insert_region(type, idx, rbase, base - rbase, r.nid, r.flags)
            elif rend > end:
                # Crosses the end: split off the part inside and examine it again.
                r.base = end
                r.size -= end - rbase
                type.total_size -= end - rbase
                self._insert_region(type, idx, rbase, end - rbase, r.nid, r.flags)
                continue
            else:
                if not end_rgn:
                    start_rgn = idx
                end_rgn = idx + 1
            idx += 1
        return start_rgn, end_rgn

    def _remove_range(self, type: MemblockType, base: int, size: int) -> int:
        span = self._isolate_range(type, base, size)
        if span is None:
            return -errno.ENOMEM
        start_rgn, end_rgn = span
        for i in range(end_rgn - 1, start_rgn - 1, -1):
            self._remove_region(type, i)
        return 0

    # ---- add / remove / reserve ------------------------------------------------------------

    def add_node(self, base: int, size: int, nid: int, flags: int = MEMBLOCK_NONE) -> int:
        if self.memblock_debug:
            self._dbg(f"memblock_add_node: [{_pa(base)}-{_pa(base + size - 1)}] nid={nid} "
                      f"flags={flags:x} {_caller_name()}+0x0/0x0\n")
        return self._add_range(self.memory, base, size, nid, flags)

    def add(self, base: int, size: int) -> int:
        if self.memblock_debug:
            self._dbg(f"memblock_add: [{_pa(base)}-{_pa(base + size - 1)}] {_caller_name()}+0x0/0x0\n")
        return self._add_range(self.memory, base, size, MAX_NUMNODES, MEMBLOCK_NONE)

    def remove(self, base: int, size: int) -> int:
        if self.memblock_debug:
            self._dbg(f"memblock_remove: [{_pa(base)}-{_pa(base + size - 1)}] {_caller_name()}+0x0/0x0\n")
        return self._remove_range(self.memory, base, size)

    def free(self, ptr: int, size: int) -> None:
        """memblock_free(void *ptr, size): NULL is a no-op; __pa is the identity here."""
        if ptr:
            self.phys_free(ptr, size)

    def phys_free(self, base: int, size: int) -> int:
        if self.memblock_debug:
            self._dbg(f"memblock_phys_free: [{_pa(base)}-{_pa(base + size - 1)}] "
                      f"{_caller_name()}+0x0/0x0\n")
        return self._remove_range(self.reserved, base, size)

    def _reserve(self, base: int, size: int, nid: int, flags: int) -> int:
        """__memblock_reserve(): reserve/reserve_kern are inline wrappers, so they share its trace name."""
        if self.memblock_debug:
            self._dbg(f"__memblock_reserve: [{_pa(base)}-{_pa(base + size - 1)}] nid={nid} "
                      f"flags={flags:x} {_caller_name()}+0x0/0x0\n")
        return self._add_range(self.reserved, base, size, nid, flags)

    def reserve(self, base: int, size: int) -> int:
        return self._reserve(base, size, NUMA_NO_NODE, MEMBLOCK_NONE)

    def reserve_kern(self, base: int, size: int) -> int:
        return self._reserve(base, size, NUMA_NO_NODE, MEMBLOCK_RSRV_KERN)

    def reserve_mark_noinit_many(self, bases: Sequence[int], sizes: Sequence[int]) -> None:
        """memblock_reserve() then memblock_reserved_mark_noinit() for each (base, size) in turn.

        KHO's deserialize_bitmap makes that pair of calls for every preserved folio, a million
        times on a big hand-over.  The array ends as those calls leave it, doublings included:
        a batch small enough that none of its calls could have doubled the array goes in one
        merge pass (each new region merges only with the neighbours the kernel's merge window
        reaches); a batch that meets an existing region or overlaps itself, the calls near a
        doubling, and everything under memblock=debug go one call at a time.
        """
        t = self.reserved
        i, n = 0, len(bases)
        while i < n:
            # Before call k a batch holds at most cnt + k regions; reserve needs one slot, the
            # isolate of mark_noinit two more.
            room = t.max - len(t._rgn) - 2
            if room < 1 or not t._rgn or self.memblock_debug:
                self.reserve(bases[i], sizes[i])
                self.reserved_mark_noinit(bases[i], sizes[i])
                i += 1
                continue
            j = min(n, i + room)
            if not self._merge_noinit_batch(t, bases, sizes, sorted(range(i, j), key=bases.__getitem__)):
                for base, size in zip(bases[i:j], sizes[i:j], strict=True):
                    self.reserve(base, size)
                    self.reserved_mark_noinit(base, size)
            i = j

    def _merge_noinit_batch(self, t: MemblockType, bases: Sequence[int], sizes: Sequence[int],
                            order: list[int]) -> bool:
        """Insert RSRV_NOINIT ranges (indices in address order) in one pass over the array; False,
        with the array untouched, if one overlaps another or a region already there."""
        rgn = t._rgn
        starts = [r.base for r in rgn]
        ends = [r.base + r.size for r in rgn]
        n = len(rgn)
        nid = self._node(NUMA_NO_NODE)
        flags = MEMBLOCK_RSRV_NOINIT
        out: list[MemblockRegion] = []
        pos = 0                           # rgn[:pos] are in out (or merged into the open run)
        run_base = run_end = -1           # the new region being grown, not yet in out
        prev_end = added = 0
        sizes_seen: dict[int, int] = {}   # one int object per distinct size: most are a folio's
        append, region, addr_max = out.append, MemblockRegion, PHYS_ADDR_MAX
        for k in order:
            base, size = bases[k], sizes[k]
            end = base + size
            if base < prev_end or not 0 < size <= addr_max - base:
                return False
            # Past the last old region starting at or before base, no bisect is needed.
            idx = bisect_right(starts, base, pos) if pos < n and starts[pos] <= base else pos
            if (idx and ends[idx - 1] > base) or (idx < n and starts[idx] < end):
                return False
            prev_end = end
            added += size
            if run_end == base:
                run_end = end             # continues the open run (no region fits between)
            else:
                if run_end >= 0:
                    run_size = sizes_seen.setdefault(run_end - run_base, run_end - run_base)
                    append(region(run_base, run_size, flags, nid))
                run_base, run_end = base, end
                if idx > pos:             # else out[-1] is the run just closed, which ends before base
                    out += rgn[pos:idx]
                    pos = idx
                    left = out[-1]
                    if left.base + left.size == base and left.nid == nid and left.flags == flags:
                        run_base = out.pop().base
            if pos < n and starts[pos] == end and rgn[pos].nid == nid and rgn[pos].flags == flags:
                run_end = ends[pos]
                pos += 1
        if run_end >= 0:
            out.append(MemblockRegion(run_base, run_end - run_base, flags, nid))
        out += rgn[pos:]
        rgn[:] = out
        t.total_size += added
        return True

    # ---- flags and nodes -------------------------------------------------------------------

    def _setclr_flag(self, type: MemblockType, base: int, size: int, set: bool, flag: int) -> int:
        span = self._isolate_range(type, base, size)
        if span is None:
            return -errno.ENOMEM
        start_rgn, end_rgn = span
        for r in type._rgn[start_rgn:end_rgn]:
            if set:
                r.flags |= flag
            else:
                r.flags &= ~flag
        self._merge_regions(type, start_rgn, end_rgn)
        return 0

    def mark_hotplug(self, base: int, size: int) -> int:
        return self._setclr_flag(self.memory, base, size, True, MEMBLOCK_HOTPLUG)

    def clear_hotplug(self, base: int, size: int) -> int:
        return self._setclr_flag(self.memory, base, size, False, MEMBLOCK_HOTPLUG)

    def mark_mirror(self, base: int, size: int) -> int:
        """Without kernelcore=mirror the kernel ignores firmware's mirror attribute entirely."""
        if not self.mirrored_kernelcore:
            return 0
        self.system_has_some_mirror = True
        return self._setclr_flag(self.memory, base, size, True, MEMBLOCK_MIRROR)

    def mark_nomap(self, base: int, size: int) -> int:
        return self._setclr_flag(self.memory, base, size, True, MEMBLOCK_NOMAP)

    def clear_nomap(self, base: int, size: int) -> int:
        return self._setclr_flag(self.memory, base, size, False, MEMBLOCK_NOMAP)

    def mark_kho_scratch(self, base: int, size: int) -> int:
        return self._setclr_flag(self.memory, base, size, True, MEMBLOCK_KHO_SCRATCH)

    def clear_kho_scratch(self, base: int, size: int) -> int:
        return self._setclr_flag(self.memory, base, size, False, MEMBLOCK_KHO_SCRATCH)

    def reserved_mark_noinit(self, base: int, size: int) -> int:
        return self._setclr_flag(self.reserved, base, size, True, MEMBLOCK_RSRV_NOINIT)

    def reserved_mark_kern(self, base: int, size: int) -> int:
        return self._setclr_flag(self.reserved, base, size, True, MEMBLOCK_RSRV_KERN)

    def set_kho_scratch_only(self) -> None:
        self.kho_scratch_only = True

    def clear_kho_scratch_only(self) -> None:
        self.kho_scratch_only = False

    def set_node(self, base: int, size: int, type: MemblockType, nid: int) -> int:
        """memblock_set_node(); compiled to nothing without CONFIG_NUMA."""
        if not self.numa:
            return 0
        span = self._isolate_range(type, base, size)
        if span is None:
            return -errno.ENOMEM
        start_rgn, end_rgn = span
        for r in type._rgn[start_rgn:end_rgn]:
            r.nid = nid
        self._merge_regions(type, start_rgn, end_rgn)
        return 0

    # ---- direction and limits --------------------------------------------------------------

    def set_bottom_up(self, enable: bool) -> None:
        self.bottom_up_mode = enable

    def bottom_up(self) -> bool:
        return self.bottom_up_mode

    def set_current_limit(self, limit: int) -> None:
        self.current_limit = limit

    def get_current_limit(self) -> int:
        return self.current_limit

    def allow_resize(self) -> None:
        self.can_resize = True

    # ---- iteration -------------------------------------------------------------------------

    def _should_skip_region(self, type: MemblockType, m: MemblockRegion, nid: int, flags: int) -> bool:
        if type is not self.memory:
            return False
        if self.numa_valid_node(nid) and nid != m.nid:
            return True
        if self.movable_node and m.flags & MEMBLOCK_HOTPLUG and not flags & MEMBLOCK_HOTPLUG:
            return True
        if flags & MEMBLOCK_MIRROR and not m.flags & MEMBLOCK_MIRROR:
            return True
        if not flags & MEMBLOCK_NOMAP and m.flags & MEMBLOCK_NOMAP:
            return True
        if not flags & MEMBLOCK_DRIVER_MANAGED and m.flags & MEMBLOCK_DRIVER_MANAGED:
            return True
        return bool(flags & MEMBLOCK_KHO_SCRATCH and not m.flags & MEMBLOCK_KHO_SCRATCH)

    def _next_mem_range(self, nid: int, flags: int, type_a: MemblockType,
                        type_b: MemblockType | None) -> Iterator[tuple[int, int, int]]:
        """__next_mem_range(): type_a minus type_b, one piece never spanning two type_a regions.

        The kernel's index walk, one type_a region at a time: its skip test is made once, and
        its pieces are the type_b gaps it overlaps, from the first that can (a bisect)."""
        ra = type_a._rgn
        idx_a = idx_b = 0
        while idx_a < len(ra):
            m = ra[idx_a]
            idx_a += 1
            if self._should_skip_region(type_a, m, nid, flags):
                continue
            m_start, m_end, m_nid = m.base, m.base + m.size, m.nid
            if type_b is None:
                yield m_start, m_end, m_nid
                continue
            rb = type_b._rgn
            b = max(idx_b, _first_starting_after(rb, m_start))
            while b <= len(rb):
                prev = rb[b - 1] if b else None
                r_start = prev.base + prev.size if prev is not None else 0
                if r_start >= m_end:
                    break
                r_end = rb[b].base if b < len(rb) else PHYS_ADDR_MAX
                if m_start < r_end:
                    yield max(m_start, r_start), min(m_end, r_end), m_nid
                    if m_end <= r_end:      # this region is done; the next starts in this gap
                        break
                b += 1
            idx_b = b

    def _next_mem_range_rev(self, nid: int, flags: int, type_a: MemblockType,
                            type_b: MemblockType | None) -> Iterator[tuple[int, int, int]]:
        """__next_mem_range_rev(): the same pieces as _next_mem_range, highest first."""
        ra = type_a._rgn
        idx_a = len(ra) - 1
        idx_b = len(type_b._rgn) if type_b is not None else 0
        jumped = -1
        while idx_a >= 0:
            m = ra[idx_a]
            m_start, m_end = m.base, m.base + m.size
            if self._should_skip_region(type_a, m, nid, flags):
                idx_a -= 1
                continue
            if type_b is None:
                yield m_start, m_end, m.nid
                idx_a -= 1
                continue
            rb = type_b._rgn
            if jumped != idx_a:
                idx_b, jumped = min(idx_b, _first_ending_at_or_after(rb, m_end)), idx_a
            advanced = False
            while idx_b >= 0:
                r_start = rb[idx_b - 1].base + rb[idx_b - 1].size if idx_b else 0
                r_end = rb[idx_b].base if idx_b < len(rb) else PHYS_ADDR_MAX
                if r_end <= m_start:
                    break
                if m_end > r_start:
                    yield max(m_start, r_start), min(m_end, r_end), m.nid
                    if m_start >= r_start:
                        idx_a -= 1
                    else:
                        idx_b -= 1
                    advanced = True
                    break
                idx_b -= 1
            if not advanced:
                idx_a -= 1

    def for_each_free_mem_range(self, nid: int = NUMA_NO_NODE,
                                flags: int = MEMBLOCK_NONE) -> Iterator[tuple[int, int, int]]:
        """Free (memory minus reserved) pieces as (start, end, nid), lowest first."""
        return self._next_mem_range(nid, flags, self.memory, self.reserved)

    def free_mem_range_arrays(self, nid: int = NUMA_NO_NODE,
                              flags: int = MEMBLOCK_NONE) -> tuple[array, array]:
        """for_each_free_mem_range()'s pieces as arrays of starts and ends (u64, 8 bytes each).

        memblock_free_all's walk after a big hand-over is a million pieces: here each memory
        region's are the reserved gaps a bisect finds, sliced out whole instead of one step of
        the iterator each.  Gap k of the reserved array is [end of region k-1 (or 0), base of
        region k (or PHYS_ADDR_MAX)); only the first and last a memory region meets are clipped.
        """
        rb = self.reserved._rgn
        r_starts = array("Q", [r.base for r in rb])
        r_ends = array("Q", [r.base + r.size for r in rb])
        n = len(rb)
        starts, ends = array("Q"), array("Q")
        for m in self.memory._rgn:
            if self._should_skip_region(self.memory, m, nid, flags):
                continue
            m_start, m_end = m.base, m.base + m.size
            first = bisect_right(r_starts, m_start)     # the first gap ending after m_start
            last = bisect_left(r_ends, m_end)           # the last gap starting before m_end
            if first > last:
                continue
            starts.append(max(m_start, r_ends[first - 1]) if first else m_start)
            starts += r_ends[first:last]
            ends += r_starts[first:last]
            ends.append(min(m_end, r_starts[last]) if last < n else m_end)
        return starts, ends

    def for_each_free_mem_range_reverse(self, nid: int = NUMA_NO_NODE,
                                        flags: int = MEMBLOCK_NONE) -> Iterator[tuple[int, int, int]]:
        return self._next_mem_range_rev(nid, flags, self.memory, self.reserved)

    def for_each_mem_range(self) -> Iterator[tuple[int, int]]:
        """Memory regions as (start, end); NOMAP ones are skipped, hotplug and driver-managed kept."""
        for s, e, _ in self._next_mem_range(NUMA_NO_NODE, MEMBLOCK_HOTPLUG | MEMBLOCK_DRIVER_MANAGED,
                                            self.memory, None):
            yield s, e

    def for_each_reserved_mem_range(self) -> Iterator[tuple[int, int]]:
        for s, e, _ in self._next_mem_range(NUMA_NO_NODE, MEMBLOCK_NONE, self.reserved, None):
            yield s, e

    def for_each_mem_pfn_range(self, nid: int = NUMA_NO_NODE) -> Iterator[tuple[int, int, int]]:
        """(start_pfn, end_pfn, nid) of the memory regions holding at least one whole page."""
        for r in self.memory._rgn:
            start_pfn, end_pfn = PFN_UP(r.base), PFN_DOWN(r.base + r.size)
            if start_pfn >= end_pfn:
                continue
            if not self.numa_valid_node(nid) or nid == r.nid:
                yield start_pfn, end_pfn, r.nid

    # ---- finding and allocating ------------------------------------------------------------

    def find_in_range_node(self, size: int, align: int, start: int, end: int, nid: int,
                           flags: int) -> int:
        """memblock_find_in_range_node(): a free, aligned spot of size bytes, or 0."""
        if end in (MEMBLOCK_ALLOC_ACCESSIBLE, MEMBLOCK_ALLOC_NOLEAKTRACE):
            end = self.current_limit
        # Page 0 is never handed out, which lets 0 mean "not found".
        start = max(start, PAGE_SIZE)
        end = max(start, end)
        if self.bottom_up_mode:
            for this_start, this_end, _ in self.for_each_free_mem_range(nid, flags):
                this_start = min(max(this_start, start), end)
                this_end = min(max(this_end, start), end)
                cand = round_up(this_start, align)
                if cand < this_end and this_end - cand >= size:
                    return cand
        else:
            for this_start, this_end, _ in self.for_each_free_mem_range_reverse(nid, flags):
                this_start = min(max(this_start, start), end)
                this_end = min(max(this_end, start), end)
                if this_end < size:
                    continue
                cand = round_down(this_end - size, align)
                if cand >= this_start:
                    return cand
        return 0

    def _find_in_range(self, start: int, end: int, size: int, align: int) -> int:
        """memblock_find_in_range(): any node, falling back from mirrored memory."""
        flags = self._choose_memblock_flags()
        while True:
            ret = self.find_in_range_node(size, align, start, end, NUMA_NO_NODE, flags)
            if ret or not flags & MEMBLOCK_MIRROR:
                return ret
            self._log(f"Could not allocate {_pa(size)} bytes of mirrored memory\n")
            flags &= ~MEMBLOCK_MIRROR

    def alloc_range_nid(self, size: int, align: int, start: int, end: int, nid: int,
                        exact_nid: bool) -> int:
        """memblock_alloc_range_nid(): find and reserve (RSRV_KERN, requested nid), with fallbacks."""
        flags = self._choose_memblock_flags()
        if not align:
            align = self.smp_cache_bytes
        while True:
            found = self.find_in_range_node(size, align, start, end, nid, flags)
            if found and not self._reserve(found, size, nid, MEMBLOCK_RSRV_KERN):
                return found
            if self.numa_valid_node(nid) and not exact_nid:
                found = self.find_in_range_node(size, align, start, end, NUMA_NO_NODE, flags)
                if found and not self.reserve_kern(found, size):
                    return found
            if not flags & MEMBLOCK_MIRROR:
                return 0
            flags &= ~MEMBLOCK_MIRROR
            self._log(f"Could not allocate {_pa(size)} bytes of mirrored memory\n")

    def phys_alloc_range(self, size: int, align: int, start: int, end: int) -> int:
        if self.memblock_debug:
            self._dbg(f"memblock_phys_alloc_range: {size} bytes align=0x{align:x} from={_pa(start)} "
                      f"max_addr={_pa(end)} {_caller_name()}+0x0/0x0\n")
        return self.alloc_range_nid(size, align, start, end, NUMA_NO_NODE, False)

    def phys_alloc(self, size: int, align: int) -> int:
        return self.phys_alloc_range(size, align, 0, MEMBLOCK_ALLOC_ACCESSIBLE)

    def phys_alloc_try_nid(self, size: int, align: int, nid: int) -> int:
        return self.alloc_range_nid(size, align, 0, MEMBLOCK_ALLOC_ACCESSIBLE, nid, False)

    def _alloc_internal(self, size: int, align: int, min_addr: int, max_addr: int, nid: int,
                        exact_nid: bool) -> int:
        """memblock_alloc_internal(): cap at current_limit, then drop min_addr if that fails."""
        if max_addr > self.current_limit:
            max_addr = self.current_limit
        alloc = self.alloc_range_nid(size, align, min_addr, max_addr, nid, exact_nid)
        if not alloc and min_addr:
            alloc = self.alloc_range_nid(size, align, 0, max_addr, nid, exact_nid)
        return alloc

    def _dbg_alloc_nid(self, func: str, size: int, align: int, nid: int, min_addr: int,
                       max_addr: int) -> None:
        self._dbg(f"{func}: {size} bytes align=0x{align:x} nid={nid} from={_pa(min_addr)} "
                  f"max_addr={_pa(max_addr)} {_caller_name()}+0x0/0x0\n")

    def alloc_exact_nid_raw(self, size: int, align: int, min_addr: int, max_addr: int, nid: int) -> int:
        if self.memblock_debug:
            self._dbg_alloc_nid("memblock_alloc_exact_nid_raw", size, align, nid, min_addr, max_addr)
        return self._alloc_internal(size, align, min_addr, max_addr, nid, True)

    def alloc_try_nid_raw(self, size: int, align: int, min_addr: int, max_addr: int, nid: int) -> int:
        if self.memblock_debug:
            self._dbg_alloc_nid("memblock_alloc_try_nid_raw", size, align, nid, min_addr, max_addr)
        return self._alloc_internal(size, align, min_addr, max_addr, nid, False)

    def alloc_try_nid(self, size: int, align: int, min_addr: int, max_addr: int, nid: int) -> int:
        if self.memblock_debug:
            self._dbg_alloc_nid("memblock_alloc_try_nid", size, align, nid, min_addr, max_addr)
        ptr = self._alloc_internal(size, align, min_addr, max_addr, nid, False)
        if ptr and self.physmem is not None:
            self.physmem.fill(ptr, size, 0)
        return ptr

    def alloc(self, size: int, align: int) -> int:
        return self.alloc_try_nid(size, align, MEMBLOCK_LOW_LIMIT, MEMBLOCK_ALLOC_ACCESSIBLE, NUMA_NO_NODE)

    def alloc_raw(self, size: int, align: int) -> int:
        return self.alloc_try_nid_raw(size, align, MEMBLOCK_LOW_LIMIT, MEMBLOCK_ALLOC_ACCESSIBLE,
                                      NUMA_NO_NODE)

    def alloc_from(self, size: int, align: int, min_addr: int) -> int:
        return self.alloc_try_nid(size, align, min_addr, MEMBLOCK_ALLOC_ACCESSIBLE, NUMA_NO_NODE)

    def alloc_low(self, size: int, align: int) -> int:
        return self.alloc_try_nid(size, align, MEMBLOCK_LOW_LIMIT, self.low_limit, NUMA_NO_NODE)

    def alloc_node(self, size: int, align: int, nid: int) -> int:
        return self.alloc_try_nid(size, align, MEMBLOCK_LOW_LIMIT, MEMBLOCK_ALLOC_ACCESSIBLE, nid)

    def alloc_or_panic(self, size: int, align: int) -> int:
        """memblock_alloc_or_panic(): the panic names the calling function, as __func__ does."""
        addr = self.alloc(size, align)
        if not addr:
            raise KernelPanic(f"{_caller_name()}: Failed to allocate {_pa(size)} bytes")
        return addr

    # ---- queries ---------------------------------------------------------------------------

    def phys_mem_size(self) -> int:
        return self.memory.total_size

    def reserved_size(self) -> int:
        return self.reserved.total_size

    def reserved_kern_size(self, limit: int, nid: int) -> int:
        """Bytes the kernel itself reserved below limit (on nid, or everywhere): sizes KHO scratch."""
        total = 0
        for r in self.reserved._rgn:
            if r.base > limit:
                break
            size = r.size
            if r.base + r.size > limit:
                size = limit - r.base
            if (nid == r.nid or not self.numa_valid_node(nid)) and r.flags & MEMBLOCK_RSRV_KERN:
                total += size
        return total

    def estimated_nr_free_pages(self) -> int:
        return PHYS_PFN(self.phys_mem_size() - self.reserved_kern_size(MEMBLOCK_ALLOC_ANYWHERE,
                                                                        NUMA_NO_NODE))

    def start_of_DRAM(self) -> int:
        return self.memory.regions[0].base

    def end_of_DRAM(self) -> int:
        """C reads regions[-1] of an empty array; we refuse instead of inventing a value."""
        if not self.memory._rgn:
            raise IndexError("memblock_end_of_DRAM: no memory regions")
        r = self.memory._rgn[-1]
        return r.base + r.size

    def overlaps_region(self, type: MemblockType, base: int, size: int) -> bool:
        size = self._cap_size(base, size)
        i = _first_ending_after(type._rgn, base)
        return i < len(type._rgn) and type._rgn[i].base < base + size

    def is_region_reserved(self, base: int, size: int) -> bool:
        return self.overlaps_region(self.reserved, base, size)

    def search(self, type: MemblockType, addr: int) -> int:
        """memblock_search(): binary search for the region holding addr, -1 if none."""
        i = _first_ending_after(type._rgn, addr)
        return i if i < len(type._rgn) and type._rgn[i].base <= addr else -1

    def is_reserved(self, addr: int) -> bool:
        return self.search(self.reserved, addr) != -1

    def is_memory(self, addr: int) -> bool:
        return self.search(self.memory, addr) != -1

    def is_map_memory(self, addr: int) -> bool:
        i = self.search(self.memory, addr)
        return i != -1 and not self.memory._rgn[i].flags & MEMBLOCK_NOMAP

    def is_region_memory(self, base: int, size: int) -> bool:
        idx = self.search(self.memory, base)
        end = base + self._cap_size(base, size)
        if idx == -1:
            return False
        r = self.memory._rgn[idx]
        return r.base + r.size >= end

    def search_pfn_nid(self, pfn: int) -> tuple[int, int, int]:
        """memblock_search_pfn_nid(): (nid, start_pfn, end_pfn); nid is NUMA_NO_NODE if unmapped."""
        mid = self.search(self.memory, PFN_PHYS(pfn))
        if mid == -1:
            return NUMA_NO_NODE, 0, 0
        r = self.memory._rgn[mid]
        return r.nid, PFN_DOWN(r.base), PFN_DOWN(r.base + r.size)

    # ---- trimming and limits ---------------------------------------------------------------

    def trim_memory(self, align: int) -> None:
        """Shrink memory regions to align in place; total_size is (as in the kernel) not updated."""
        rgn = self.memory._rgn
        i = 0
        while i < len(rgn):
            r = rgn[i]
            orig_start, orig_end = r.base, r.base + r.size
            start, end = round_up(orig_start, align), round_down(orig_end, align)
            if start == orig_start and end == orig_end:
                i += 1
                continue
            if start < end:
                r.base = start
                r.size = end - start
                i += 1
            else:
                self._remove_region(self.memory, i)

    def _find_max_addr(self, limit: int) -> int:
        for r in self.memory._rgn:
            if limit <= r.size:
                return r.base + limit
            limit -= r.size
        return PHYS_ADDR_MAX

    def enforce_memory_limit(self, limit: int) -> None:
        """mem=: keep the first limit bytes of memory, truncating memory and reserved above them."""
        if not limit:
            return
        max_addr = self._find_max_addr(limit)
        if max_addr == PHYS_ADDR_MAX:
            return
        self._remove_range(self.memory, max_addr, PHYS_ADDR_MAX)
        self._remove_range(self.reserved, max_addr, PHYS_ADDR_MAX)

    def cap_memory_range(self, base: int, size: int) -> None:
        """Keep only [base, base+size) of mapped memory (NOMAP regions survive), and of reserved."""
        if not size:
            return
        if not self.memory.total_size:
            self._log("memblock_cap_memory_range: No memory registered yet\n")
            return
        span = self._isolate_range(self.memory, base, size)
        if span is None:
            return
        start_rgn, end_rgn = span
        rgn = self.memory._rgn
        for i in range(len(rgn) - 1, end_rgn - 1, -1):
            if not rgn[i].flags & MEMBLOCK_NOMAP:
                self._remove_region(self.memory, i)
        for i in range(start_rgn - 1, -1, -1):
            if not rgn[i].flags & MEMBLOCK_NOMAP:
                self._remove_region(self.memory, i)
        self._remove_range(self.reserved, 0, base)
        self._remove_range(self.reserved, base + size, PHYS_ADDR_MAX)

    def mem_limit_remove_map(self, limit: int) -> None:
        if not limit:
            return
        max_addr = self._find_max_addr(limit)
        if max_addr == PHYS_ADDR_MAX:
            return
        self.cap_memory_range(0, max_addr)

    # ---- text output -----------------------------------------------------------------------

    def debugfs_show(self, type: MemblockType) -> str:
        """memblock_debug_show(): the debugfs memblock/memory and memblock/reserved files."""
        out = []
        for i, r in enumerate(type._rgn):
            end = r.base + r.size - 1
            nid = f"{r.nid:4d}" if self.numa_valid_node(r.nid) else f"{'x':>4}"
            if r.flags:
                name = next((n for j, n in enumerate(_FLAGNAME) if r.flags & (1 << j)), "UNKNOWN")
            else:
                name = "NONE"
            out.append(f"{i:4d}: {_pa(r.base)}..{_pa(end)} {nid} {name}\n")
        return "".join(out)

    def _dump(self, type: MemblockType) -> list[str]:
        lines = [f" {type.name}.cnt  = {type.cnt:#x}\n"]
        for idx, r in enumerate(type._rgn):
            nid_buf = f" on node {r.nid}" if self.numa and self.numa_valid_node(r.nid) else ""
            lines.append(f" {type.name}[{_hash_x(idx)}]\t[{_pa(r.base)}-{_pa(r.base + r.size - 1)}], "
                         f"{_pa(r.size)} bytes{nid_buf} flags: {_hash_x(r.flags)}\n")
        return lines

    def dump_all(self) -> str:
        """__memblock_dump_all(): the ``memblock=debug`` configuration dump, as text."""
        lines = ["MEMBLOCK configuration:\n",
                 f" memory size = {_pa(self.memory.total_size)} reserved size = "
                 f"{_pa(self.reserved.total_size)}\n"]
        lines += self._dump(self.memory)
        lines += self._dump(self.reserved)
        return "".join(lines)
