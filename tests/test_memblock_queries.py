"""What the kernel's own callers rely on beyond the simulator suite (spec §2.7-§2.11): queries,
iterators, limits, KHO scratch-only mode, mirror and movable_node policies, allocation knobs."""

import pytest
from memblock_common import MEM_SIZE, B, E, K, both_directions, new_memblock, setup_memblock

from sim.mm.memblock import (
    INIT_MEMBLOCK_REGIONS,
    MAX_NUMNODES,
    MEMBLOCK_ALLOC_ANYWHERE,
    MEMBLOCK_ALLOC_NOLEAKTRACE,
    MEMBLOCK_HOTPLUG,
    MEMBLOCK_KHO_SCRATCH,
    MEMBLOCK_MIRROR,
    MEMBLOCK_NOMAP,
    MEMBLOCK_NONE,
    MEMBLOCK_RSRV_KERN,
    MEMBLOCK_RSRV_NOINIT,
    NUMA_NO_NODE,
    Memblock,
)
from sim.sizes import PAGE_SIZE, PHYS_ADDR_MAX, SZ_1M


def regions(mb: Memblock, name: str) -> list[tuple[int, int]]:
    return [(r.base, r.size) for r in getattr(mb, name).regions]


# ---- sizes -------------------------------------------------------------------------------------

def test_reserved_kern_size() -> None:
    mb = new_memblock()
    mb.add(0, SZ_1M)
    mb.reserve_kern(0x1000, 0x1000)
    mb._reserve(0x10000, 0x2000, 1, MEMBLOCK_RSRV_KERN)
    mb.reserve(0x20000, 0x1000)
    mb._reserve(0x30000, 0x4000, 0, MEMBLOCK_RSRV_KERN | MEMBLOCK_RSRV_NOINIT)
    assert mb.reserved_kern_size(MEMBLOCK_ALLOC_ANYWHERE, NUMA_NO_NODE) == 0x7000
    assert mb.reserved_kern_size(MEMBLOCK_ALLOC_ANYWHERE, 1) == 0x2000
    assert mb.reserved_kern_size(MEMBLOCK_ALLOC_ANYWHERE, 0) == 0x4000
    # A region crossing the limit counts up to it; the walk stops at the first one above it.
    assert mb.reserved_kern_size(0x11000, NUMA_NO_NODE) == 0x2000
    assert mb.reserved_kern_size(0x30000, NUMA_NO_NODE) == 0x3000
    assert mb.phys_mem_size() == SZ_1M
    assert mb.reserved_size() == 0x8000
    assert mb.estimated_nr_free_pages() == (SZ_1M - 0x7000) // PAGE_SIZE


def test_start_and_end_of_dram() -> None:
    mb = new_memblock()
    assert mb.start_of_DRAM() == 0
    with pytest.raises(IndexError):
        mb.end_of_DRAM()
    mb.add(0x100000, 0x1000)
    mb.add(0x1000, 0x1000)
    assert (mb.start_of_DRAM(), mb.end_of_DRAM()) == (0x1000, 0x101000)


# ---- lookups -----------------------------------------------------------------------------------

def test_search_and_is_memory() -> None:
    mb = new_memblock()
    assert mb.search(mb.memory, 0x1000) == -1
    mb.add(0x1000, 0x2000)
    mb.add(0x10000, 0x1000)
    mb.mark_nomap(0x10000, 0x1000)
    mb.reserve(0x1800, 0x100)
    assert mb.search(mb.memory, 0x10800) == 1
    assert mb.search(mb.memory, 0x5000) == -1
    probes = (0x0, 0x1000, 0x2FFF, 0x3000, 0x10FFF)
    assert [mb.is_memory(a) for a in probes] == [False, True, True, False, True]
    assert mb.is_map_memory(0x1000) and not mb.is_map_memory(0x10000)
    assert mb.is_region_memory(0x1000, 0x2000)
    assert not mb.is_region_memory(0x1000, 0x2001)
    assert not mb.is_region_memory(0x3000, 1)
    assert mb.is_reserved(0x18FF) and not mb.is_reserved(0x1900)
    assert mb.is_region_reserved(0x1000, 0x801) and not mb.is_region_reserved(0x1000, 0x800)
    assert mb.search_pfn_nid(0x10) == (MAX_NUMNODES, 0x10, 0x11)
    assert mb.search_pfn_nid(0x5)[0] == NUMA_NO_NODE


# ---- iterators ---------------------------------------------------------------------------------

def test_for_each_mem_range_skips_nomap() -> None:
    mb = new_memblock()
    mb.add(0x1000, 0x2000)
    mb.add_node(0x10000, 0x1000, 1, MEMBLOCK_HOTPLUG)
    mb.add(0x20000, 0x1000)
    mb.mark_nomap(0x20000, 0x1000)
    assert list(mb.for_each_mem_range()) == [(0x1000, 0x3000), (0x10000, 0x11000)]


def test_for_each_reserved_mem_range() -> None:
    mb = new_memblock()
    mb.reserve(0x5000, 0x100)
    mb.reserve_kern(0x1000, 0x100)
    assert list(mb.for_each_reserved_mem_range()) == [(0x1000, 0x1100), (0x5000, 0x5100)]


def test_for_each_mem_pfn_range() -> None:
    mb = new_memblock()
    mb.add_node(0x1800, 0x2000, 0, MEMBLOCK_NONE)   # pfns [2, 3)
    mb.add_node(0x5100, 0xE00, 1, MEMBLOCK_NONE)    # no whole page: skipped
    mb.add_node(0x8000, 0x3000, 1, MEMBLOCK_NOMAP)  # NOMAP is not filtered here
    assert list(mb.for_each_mem_pfn_range()) == [(2, 3, 0), (8, 11, 1)]
    assert list(mb.for_each_mem_pfn_range(1)) == [(8, 11, 1)]


def test_free_ranges_never_span_touching_regions() -> None:
    mb = new_memblock()
    mb.add_node(0x1000, 0x1000, 0, MEMBLOCK_NONE)
    mb.add_node(0x2000, 0x1000, 1, MEMBLOCK_NONE)
    mb.reserve(0x1800, 0x100)
    mb.reserve_kern(0x1900, 0x100)  # touches the plain one: an empty piece between them
    assert list(mb.for_each_free_mem_range()) == [
        (0x1000, 0x1800, 0), (0x1900, 0x1900, 0), (0x1A00, 0x2000, 0), (0x2000, 0x3000, 1)]
    assert list(mb.for_each_free_mem_range(1)) == [(0x2000, 0x3000, 1)]
    assert list(mb.for_each_free_mem_range_reverse(0)) == [
        (0x1A00, 0x2000, 0), (0x1900, 0x1900, 0), (0x1000, 0x1800, 0)]


# ---- limits ------------------------------------------------------------------------------------

def limits_layout() -> Memblock:
    mb = new_memblock()
    mb.add(0x1000, 0x2000)
    mb.add(0x10000, 0x1000)
    mb.add(0x20000, 0x4000)
    mb.reserve(0x10000, 0x800)
    mb.reserve(0x21000, 0x1000)
    return mb


def test_enforce_memory_limit() -> None:
    mb = limits_layout()
    mb.enforce_memory_limit(0)
    mb.enforce_memory_limit(0x7000)  # more than there is: nothing happens
    assert len(regions(mb, "memory")) == 3
    mb.enforce_memory_limit(0x2800)
    assert regions(mb, "memory") == [(0x1000, 0x2000), (0x10000, 0x800)]
    assert regions(mb, "reserved") == [(0x10000, 0x800)]


def test_mem_limit_remove_map_keeps_nomap() -> None:
    mb = limits_layout()
    mb.mark_nomap(0x20000, 0x4000)
    mb.mem_limit_remove_map(0x2800)
    assert regions(mb, "memory") == [(0x1000, 0x2000), (0x10000, 0x800), (0x20000, 0x4000)]
    assert mb.memory.regions[2].flags == MEMBLOCK_NOMAP
    assert regions(mb, "reserved") == [(0x10000, 0x800)]


def test_cap_memory_range() -> None:
    mb = limits_layout()
    mb.cap_memory_range(0x2000, 0x9000)
    assert regions(mb, "memory") == [(0x2000, 0x1000)]
    assert regions(mb, "reserved") == []
    assert mb.memory.total_size == 0x1000


# ---- allocation knobs --------------------------------------------------------------------------

def test_align_zero_means_cache_line() -> None:
    mb = setup_memblock()
    assert mb.phys_alloc(2, 0) == E - 32


def test_page_zero_is_never_handed_out() -> None:
    mb = new_memblock()
    mb.add(0, 2 * PAGE_SIZE)
    mb.set_bottom_up(True)
    assert mb.phys_alloc(PAGE_SIZE, PAGE_SIZE) == PAGE_SIZE
    assert mb.phys_alloc(16, 16) == 0


def test_current_limit() -> None:
    mb = setup_memblock()
    mb.set_current_limit(B + 16 * K)
    assert mb.get_current_limit() == B + 16 * K
    assert mb.alloc(64, 32) == B + 16 * K - 64
    # max_addr above the limit is capped for the virtual API ...
    assert mb.alloc_try_nid_raw(64, 32, 0, E, NUMA_NO_NODE) == B + 16 * K - 128
    # ... NOLEAKTRACE means "the limit" as ACCESSIBLE does ...
    assert mb.phys_alloc_range(64, 32, 0, MEMBLOCK_ALLOC_NOLEAKTRACE) == B + 16 * K - 192
    # ... and the physical API takes an explicit end as given.
    assert mb.phys_alloc_range(64, 32, 0, MEMBLOCK_ALLOC_ANYWHERE) == E - 64


def test_phys_alloc_range_keeps_min() -> None:
    """Unlike the virtual API the physical one never drops min_addr."""
    mb = setup_memblock()
    assert mb.phys_alloc_range(256, 32, B + 512, B + 544) == 0
    assert mb.alloc_try_nid(256, 32, B + 512, B + 544, NUMA_NO_NODE) == B + 288


def test_phys_alloc_try_nid_falls_back() -> None:
    mb = new_memblock()
    mb.add_node(B, 4 * K, 0, MEMBLOCK_NONE)
    mb.add_node(B + 4 * K, 4 * K, 1, MEMBLOCK_NONE)
    assert mb.phys_alloc_try_nid(K, 32, 0) == B + 3 * K
    assert mb.reserved.regions[0].nid == 0
    assert mb.phys_alloc_try_nid(4 * K, 32, 0) == B + 4 * K
    assert mb.reserved.regions[1].nid == NUMA_NO_NODE


# ---- KHO scratch-only mode ---------------------------------------------------------------------

@both_directions
def test_kho_scratch_only(direction: str) -> None:
    mb = setup_memblock(direction)
    mb.mark_kho_scratch(B + 8 * K, 8 * K)
    mb.set_kho_scratch_only()
    assert mb.kho_scratch_only
    addr = mb.alloc(64, 32)
    assert addr == {"top_down": B + 16 * K - 64, "bottom_up": B + 8 * K}[direction]
    assert mb.alloc(8 * K, 32) == 0  # no fallback outside the scratch
    mb.clear_kho_scratch_only()
    assert mb.alloc(8 * K, 32) == {"top_down": E - 8 * K, "bottom_up": B}[direction]


def test_kho_scratch_only_doubles_into_scratch() -> None:
    mb = setup_memblock()
    mb.allow_resize()
    mb.mark_kho_scratch(B + 16 * K, 8 * K)
    mb.set_kho_scratch_only()
    for i in range(INIT_MEMBLOCK_REGIONS + 1):
        mb.reserve(SZ_1M + 2 * i * 0x100, 0x100)
    assert mb.reserved.max == 2 * INIT_MEMBLOCK_REGIONS
    array = mb.reserved.regions[mb.reserved.cnt - 1]
    assert (array.base, array.size, array.flags) == (B + 16 * K, 8 * K, MEMBLOCK_RSRV_KERN)


def test_clear_kho_scratch() -> None:
    mb = setup_memblock()
    mb.mark_kho_scratch(B, MEM_SIZE)
    mb.clear_kho_scratch(B + 8 * K, 8 * K)
    assert [(r.base - B, r.size, r.flags) for r in mb.memory.regions] == [
        (0, 8 * K, MEMBLOCK_KHO_SCRATCH),
        (8 * K, 8 * K, MEMBLOCK_NONE),
        (16 * K, 16 * K, MEMBLOCK_KHO_SCRATCH)]
    mb.mark_kho_scratch(B + 8 * K, 8 * K)
    assert mb.memory.cnt == 1  # the setter merges its window back


# ---- mirror and movable_node -------------------------------------------------------------------

def test_mark_mirror_is_a_noop_without_kernelcore_mirror() -> None:
    mb = setup_memblock()
    assert mb.mark_mirror(B, 8 * K) == 0
    assert mb.memory.regions[0].flags == MEMBLOCK_NONE
    assert not mb.system_has_some_mirror


def test_mirror_preferred_then_fallback_with_warning() -> None:
    mb = setup_memblock()
    log: list[str] = []
    mb.printk = log.append
    mb.mirrored_kernelcore = True
    mb.mark_mirror(B, 8 * K)
    assert mb.memory.regions[0].flags == MEMBLOCK_MIRROR
    assert mb.alloc(64, 32) == B + 8 * K - 64
    assert log == []
    assert mb.alloc(16 * K, 32) == E - 16 * K
    assert log == ["Could not allocate 0x0000000000004000 bytes of mirrored memory\n"]


@both_directions
def test_movable_node_skips_hotplug_memory(direction: str) -> None:
    mb = new_memblock()
    mb.add_node(B, 16 * K, 0, MEMBLOCK_HOTPLUG)
    mb.add_node(B + 16 * K, 16 * K, 1, MEMBLOCK_NONE)
    mb.set_bottom_up(direction == "bottom_up")
    mb.movable_node = True
    assert mb.alloc(64, 32) == {"top_down": E - 64, "bottom_up": B + 16 * K}[direction]
    assert mb.alloc(16 * K, 32) == 0
    mb.movable_node = False
    assert mb.alloc(16 * K, 32) == B


def test_hotplug_setters() -> None:
    mb = setup_memblock()
    mb.mark_hotplug(B + 8 * K, 8 * K)
    assert mb.memory.cnt == 3 and mb.memory.regions[1].flags == MEMBLOCK_HOTPLUG
    mb.clear_hotplug(B, MEM_SIZE)
    assert mb.memory.cnt == 1 and mb.memory.regions[0].flags == MEMBLOCK_NONE
    mb.mark_nomap(B, 4 * K)
    mb.clear_nomap(B, 4 * K)
    assert mb.memory.cnt == 1


def test_reserved_mark_kern_and_noinit() -> None:
    mb = new_memblock()
    mb.reserve(0x1000, 0x3000)
    mb.reserved_mark_kern(0x1000, 0x1000)
    mb.reserved_mark_noinit(0x3000, 0x1000)
    assert [(r.base, r.size, r.flags) for r in mb.reserved.regions] == [
        (0x1000, 0x1000, MEMBLOCK_RSRV_KERN), (0x2000, 0x1000, MEMBLOCK_NONE),
        (0x3000, 0x1000, MEMBLOCK_RSRV_NOINIT)]
    assert mb.reserved_kern_size(PHYS_ADDR_MAX, NUMA_NO_NODE) == 0x1000
