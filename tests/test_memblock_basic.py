"""basic_api.c: add, reserve, remove, free, direction, trim, overlaps and set_node (spec §4.2).

Every test runs with and without CONFIG_NUMA, as the kernel's simulator can be built both ways.
"""

import pytest
from memblock_common import MEM_SIZE, B, assert_region, new_memblock

from sim.kernel.panic import KernelPanic
from sim.mm.memblock import (
    INIT_MEMBLOCK_REGIONS,
    MAX_NUMNODES,
    MEMBLOCK_ALLOC_ANYWHERE,
    MEMBLOCK_HOTPLUG,
    MEMBLOCK_NONE,
    MEMBLOCK_RSRV_KERN,
    NUMA_NO_NODE,
    Memblock,
)
from sim.sizes import (
    PAGE_ALIGN,
    PHYS_ADDR_MAX,
    SZ_1G,
    SZ_1K,
    SZ_1M,
    SZ_2G,
    SZ_2M,
    SZ_4K,
    SZ_16M,
    SZ_32M,
    SZ_64K,
    SZ_128M,
)

pytestmark = pytest.mark.parametrize("numa", [True, False], ids=["numa", "uma"])

SZ_2K, SZ_8K, SZ_16K, SZ_32K = 2 * SZ_1K, 8 * SZ_1K, 16 * SZ_1K, 32 * SZ_1K
SZ_128K, SZ_512K = 128 * SZ_1K, 512 * SZ_1K
SZ_4M, SZ_8M, SZ_64M, SZ_256M, SZ_512M = 4 * SZ_1M, 8 * SZ_1M, 64 * SZ_1M, 256 * SZ_1M, 512 * SZ_1M
REGION_SIZE = 24
NEW_RESERVED_ARRAY = PAGE_ALIGN(INIT_MEMBLOCK_REGIONS * 2 * REGION_SIZE)


# ---- initialization and add --------------------------------------------------------------------

def test_initialization(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    for t, name in ((mb.memory, "memory"), (mb.reserved, "reserved")):
        assert t.regions is not None
        assert t.cnt == 0
        assert t.max == INIT_MEMBLOCK_REGIONS
        assert t.name == name
        assert t.regions[0].size == 0
    assert mb.bottom_up() is False
    assert mb.current_limit == MEMBLOCK_ALLOC_ANYWHERE


def test_add_simple(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(SZ_1G, SZ_4M)
    assert_region(mb.memory.regions[0], SZ_1G, SZ_4M)
    assert mb.memory.cnt == 1
    assert mb.memory.total_size == SZ_4M


def test_add_node_simple(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add_node(SZ_1M, SZ_16M, 1, MEMBLOCK_HOTPLUG)
    rgn = mb.memory.regions[0]
    assert_region(rgn, SZ_1M, SZ_16M)
    assert rgn.nid == (1 if numa else 0)
    assert rgn.flags == MEMBLOCK_HOTPLUG
    assert mb.memory.cnt == 1
    assert mb.memory.total_size == SZ_16M


def test_add_disjoint(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(SZ_1G, SZ_8K)
    mb.add(SZ_1G + SZ_16K, SZ_8K)
    assert_region(mb.memory.regions[0], SZ_1G, SZ_8K)
    assert_region(mb.memory.regions[1], SZ_1G + SZ_16K, SZ_8K)
    assert mb.memory.cnt == 2
    assert mb.memory.total_size == SZ_16K


def test_add_overlap_top(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(SZ_512M, SZ_1G)
    mb.add(SZ_256M, SZ_512M)
    assert_region(mb.memory.regions[0], SZ_256M, 1280 * SZ_1M)
    assert mb.memory.cnt == 1
    assert mb.memory.total_size == 1280 * SZ_1M


def test_add_overlap_bottom(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(SZ_128M, SZ_512M)
    mb.add(SZ_256M, SZ_1G)
    assert_region(mb.memory.regions[0], SZ_128M, 1152 * SZ_1M)
    assert mb.memory.cnt == 1
    assert mb.memory.total_size == 1152 * SZ_1M


def test_add_within(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(SZ_8M, SZ_32M)
    mb.add(SZ_16M, SZ_1M)
    assert_region(mb.memory.regions[0], SZ_8M, SZ_32M)
    assert mb.memory.cnt == 1
    assert mb.memory.total_size == SZ_32M


def test_add_twice(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(SZ_16K, SZ_2M)
    mb.add(SZ_16K, SZ_2M)
    assert mb.memory.cnt == 1
    assert mb.memory.total_size == SZ_2M


def test_add_between(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(SZ_1G, SZ_8K)
    mb.add(SZ_1G + SZ_16K, SZ_8K)
    mb.add(SZ_1G + SZ_8K, SZ_8K)
    assert_region(mb.memory.regions[0], SZ_1G, 24 * SZ_1K)
    assert mb.memory.cnt == 1
    assert mb.memory.total_size == 24 * SZ_1K


def test_add_near_max(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    base = PHYS_ADDR_MAX - SZ_1M
    mb.add(base, SZ_2M)
    assert_region(mb.memory.regions[0], base, PHYS_ADDR_MAX - base)
    assert mb.memory.cnt == 1
    assert mb.memory.total_size == SZ_1M


def test_add_many(numa: bool) -> None:
    """The 129th memory region doubles the array; the new array is reserved where it landed."""
    mb = new_memblock(numa=numa)
    mb.allow_resize()
    p = PAGE_ALIGN(B)
    mb.add(p, SZ_8K)
    base = p + SZ_8K
    for k in range(INIT_MEMBLOCK_REGIONS):
        base += 64
        mb.add(base, 64)
        base += 64
        assert mb.memory.cnt == k + 2
        assert mb.memory.total_size == SZ_8K + (k + 1) * 64
    assert mb.memory.max == 2 * INIT_MEMBLOCK_REGIONS
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == NEW_RESERVED_ARRAY == SZ_8K
    assert_region(mb.reserved.regions[0], p, SZ_8K)
    assert mb.reserved.regions[0].flags == MEMBLOCK_RSRV_KERN

    mb.add(SZ_16K, SZ_16K)
    assert_region(mb.memory.regions[0], SZ_16K, SZ_16K)
    assert mb.memory.cnt == INIT_MEMBLOCK_REGIONS + 2
    assert mb.memory.total_size == INIT_MEMBLOCK_REGIONS * 64 + SZ_8K + SZ_16K
    assert mb.memory.max == 2 * INIT_MEMBLOCK_REGIONS


def test_add_many_without_resize_panics(numa: bool) -> None:
    """Before memblock_allow_resize() a full array is fatal (6.6+)."""
    mb = new_memblock(numa=numa)
    for k in range(INIT_MEMBLOCK_REGIONS):
        mb.add(SZ_1M + 2 * k * SZ_4K, SZ_4K)
    with pytest.raises(KernelPanic, match="^memblock: cannot resize memory array$"):
        mb.add(SZ_1G, SZ_4K)


# ---- reserve -----------------------------------------------------------------------------------

def test_reserve_simple(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.reserve(SZ_2G, SZ_128M)
    assert_region(mb.reserved.regions[0], SZ_2G, SZ_128M)
    assert mb.reserved.regions[0].nid == (NUMA_NO_NODE if numa else 0)
    assert mb.reserved.regions[0].flags == MEMBLOCK_NONE


def test_reserve_disjoint(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.reserve(SZ_256M, SZ_16M)
    mb.reserve(SZ_512M, SZ_512M)
    assert_region(mb.reserved.regions[0], SZ_256M, SZ_16M)
    assert_region(mb.reserved.regions[1], SZ_512M, SZ_512M)
    assert mb.reserved.cnt == 2
    assert mb.reserved.total_size == 528 * SZ_1M


def test_reserve_overlap_top(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.reserve(SZ_1G, SZ_1G)
    mb.reserve(SZ_128M, SZ_1G)
    assert_region(mb.reserved.regions[0], SZ_128M, 1920 * SZ_1M)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == 1920 * SZ_1M


def test_reserve_overlap_bottom(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.reserve(SZ_2K, SZ_128K)
    mb.reserve(SZ_128K, SZ_128K)
    assert_region(mb.reserved.regions[0], SZ_2K, 254 * SZ_1K)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == 254 * SZ_1K


def test_reserve_within(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.reserve(SZ_1M, SZ_8M)
    mb.reserve(SZ_2M, SZ_64K)
    assert_region(mb.reserved.regions[0], SZ_1M, SZ_8M)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == SZ_8M


def test_reserve_twice(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.reserve(SZ_16K, SZ_2M)
    mb.reserve(SZ_16K, SZ_2M)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == SZ_2M


def test_reserve_between(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.reserve(SZ_1G, SZ_8K)
    mb.reserve(SZ_1G + SZ_16K, SZ_8K)
    mb.reserve(SZ_1G + SZ_8K, SZ_8K)
    assert_region(mb.reserved.regions[0], SZ_1G, 24 * SZ_1K)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == 24 * SZ_1K


def test_reserve_near_max(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    base = PHYS_ADDR_MAX - SZ_1M
    mb.reserve(base, SZ_2M)
    assert_region(mb.reserved.regions[0], base, SZ_1M)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == SZ_1M


def _memory_base(i: int) -> int:
    """MEMORY_BASE(i) of basic_api.c: 32K blocks every 64K from 128K up (outside memory)."""
    return SZ_128K + 2 * SZ_32K * i


def _assert_after_doubling(mb: Memblock) -> None:
    assert mb.reserved.cnt == INIT_MEMBLOCK_REGIONS + 2
    assert mb.reserved.total_size == (INIT_MEMBLOCK_REGIONS + 1) * SZ_32K + NEW_RESERVED_ARRAY
    assert mb.reserved.max == 2 * INIT_MEMBLOCK_REGIONS


def _assert_reserve_after_doubling(mb: Memblock) -> None:
    mb.reserve(SZ_16K, SZ_16K)
    assert_region(mb.reserved.regions[0], SZ_16K, SZ_16K)
    assert mb.reserved.cnt == INIT_MEMBLOCK_REGIONS + 3
    assert mb.reserved.total_size == (INIT_MEMBLOCK_REGIONS + 1) * SZ_32K + NEW_RESERVED_ARRAY + SZ_16K
    assert mb.reserved.max == 2 * INIT_MEMBLOCK_REGIONS


def test_reserve_many(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.allow_resize()
    mb.add(B, MEM_SIZE)
    for i in range(INIT_MEMBLOCK_REGIONS):
        mb.reserve(_memory_base(i), SZ_32K)
        assert mb.reserved.cnt == i + 1
        assert mb.reserved.total_size == (i + 1) * SZ_32K
    mb.reserve(_memory_base(INIT_MEMBLOCK_REGIONS), SZ_32K)
    _assert_after_doubling(mb)
    _assert_reserve_after_doubling(mb)


def test_reserve_all_locations(numa: bool) -> None:
    """Whichever slot the array-doubling reservation lands in, the end state is the same."""
    for skip in range(INIT_MEMBLOCK_REGIONS + 1):
        mb = new_memblock(numa=numa)
        mb.allow_resize()
        mb.add(B, MEM_SIZE)
        for i in range(INIT_MEMBLOCK_REGIONS + 1):
            if i == skip:
                continue
            mb.reserve(_memory_base(i), SZ_32K)
            n = i + 1 if i < skip else i
            assert mb.reserved.cnt == n, f"skip={skip} i={i}"
            assert mb.reserved.total_size == n * SZ_32K
        mb.reserve(_memory_base(skip), SZ_32K)
        _assert_after_doubling(mb)
        _assert_reserve_after_doubling(mb)


def test_reserve_many_may_conflict(numa: bool) -> None:
    """The doubled reserved array must not land on the range whose reservation triggered it."""
    o = PAGE_ALIGN(B)

    def base_offset(i: int) -> int:
        return o + 2 * SZ_32K * i

    for skip in range(1, INIT_MEMBLOCK_REGIONS + 2):
        mb = new_memblock(numa=numa)
        mb.allow_resize()
        mb.add(base_offset(0), SZ_32K)
        mb.add(base_offset(skip), SZ_32K)
        for i in range(1, INIT_MEMBLOCK_REGIONS + 2):
            if i == skip:
                continue
            mb.reserve(base_offset(i), SZ_32K)
            n = i if i < skip else i - 1
            assert mb.reserved.cnt == n, f"skip={skip} i={i}"
            assert mb.reserved.total_size == n * SZ_32K
        mb.reserve(base_offset(skip), SZ_32K)
        _assert_after_doubling(mb)
        rgn = mb.reserved.regions[0]
        assert rgn.base + rgn.size == base_offset(0) + SZ_32K, f"skip={skip}"
        assert rgn.size == NEW_RESERVED_ARRAY
        _assert_reserve_after_doubling(mb)


# ---- remove ------------------------------------------------------------------------------------

def test_remove_simple(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(SZ_2K, SZ_4K)
    mb.add(SZ_128K, SZ_4M)
    mb.remove(SZ_2K, SZ_4K)
    assert_region(mb.memory.regions[0], SZ_128K, SZ_4M)
    assert mb.memory.cnt == 1
    assert mb.memory.total_size == SZ_4M


def test_remove_absent(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(SZ_512K, SZ_4M)
    mb.remove(SZ_64M, SZ_1G)
    assert_region(mb.memory.regions[0], SZ_512K, SZ_4M)
    assert mb.memory.cnt == 1
    assert mb.memory.total_size == SZ_4M


def test_remove_overlap_top(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(SZ_32M, SZ_32M)
    mb.remove(SZ_16M, SZ_32M)
    assert_region(mb.memory.regions[0], 48 * SZ_1M, SZ_16M)
    assert mb.memory.cnt == 1
    assert mb.memory.total_size == SZ_16M


def test_remove_overlap_bottom(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(SZ_2M, SZ_64M)
    mb.remove(SZ_32M, SZ_256M)
    assert_region(mb.memory.regions[0], SZ_2M, 30 * SZ_1M)
    assert mb.memory.cnt == 1
    assert mb.memory.total_size == 30 * SZ_1M


def test_remove_within(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(SZ_1M, SZ_32M)
    mb.remove(SZ_16M, SZ_1M)
    assert_region(mb.memory.regions[0], SZ_1M, 15 * SZ_1M)
    assert_region(mb.memory.regions[1], 17 * SZ_1M, SZ_16M)
    assert mb.memory.cnt == 2
    assert mb.memory.total_size == 31 * SZ_1M


def test_remove_only_region(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(SZ_2K, SZ_4K)
    mb.remove(SZ_2K, SZ_4K)
    rgn = mb.memory.regions[0]
    assert_region(rgn, 0, 0)
    assert rgn.flags == 0
    assert rgn.nid == (MAX_NUMNODES if numa else 0)
    assert mb.memory.cnt == 0
    assert mb.memory.total_size == 0


def test_remove_near_max(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(PHYS_ADDR_MAX - SZ_2M, SZ_2M)
    mb.remove(PHYS_ADDR_MAX - SZ_1M, SZ_2M)
    assert_region(mb.memory.regions[0], PHYS_ADDR_MAX - SZ_2M, SZ_1M)
    assert mb.memory.cnt == 1
    assert mb.memory.total_size == SZ_1M


def test_remove_overlap_two(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(SZ_16M, SZ_32M)
    mb.add(SZ_64M, SZ_64M)
    mb.remove(SZ_32M, SZ_64M)
    assert_region(mb.memory.regions[0], SZ_16M, SZ_16M)
    assert_region(mb.memory.regions[1], 96 * SZ_1M, SZ_32M)
    assert mb.memory.cnt == 2
    assert mb.memory.total_size == 48 * SZ_1M


# ---- free --------------------------------------------------------------------------------------

def test_free_simple(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.reserve(SZ_4M, SZ_1M)
    mb.reserve(SZ_8M, SZ_1M)
    mb.free(SZ_4M, SZ_1M)
    assert_region(mb.reserved.regions[0], SZ_8M, SZ_1M)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == SZ_1M


def test_free_null_is_noop(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.reserve(0, SZ_1M)
    mb.free(0, SZ_1M)
    assert_region(mb.reserved.regions[0], 0, SZ_1M)
    assert mb.reserved.cnt == 1


def test_free_absent(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.reserve(SZ_2M, SZ_8K)
    mb.free(SZ_16M, SZ_128M)
    assert_region(mb.reserved.regions[0], SZ_2M, SZ_8K)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == SZ_8K


def test_free_overlap_top(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.reserve(SZ_8M, SZ_32M)
    mb.free(SZ_1M, SZ_8M)
    assert_region(mb.reserved.regions[0], 9 * SZ_1M, 31 * SZ_1M)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == 31 * SZ_1M


def test_free_overlap_bottom(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.reserve(SZ_8M, SZ_32M)
    mb.free(SZ_32M, SZ_32M)
    assert_region(mb.reserved.regions[0], SZ_8M, 24 * SZ_1M)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == 24 * SZ_1M


def test_free_within(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.reserve(SZ_1M, SZ_8M)
    mb.free(SZ_4M, SZ_1M)
    assert_region(mb.reserved.regions[0], SZ_1M, 3 * SZ_1M)
    assert_region(mb.reserved.regions[1], 5 * SZ_1M, SZ_4M)
    assert mb.reserved.cnt == 2
    assert mb.reserved.total_size == 7 * SZ_1M


def test_free_only_region(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.reserve(SZ_2K, SZ_4K)
    mb.free(SZ_2K, SZ_4K)
    assert_region(mb.reserved.regions[0], 0, 0)
    assert mb.reserved.cnt == 0
    assert mb.reserved.total_size == 0


def test_phys_free_near_max(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.reserve(PHYS_ADDR_MAX - SZ_2M, SZ_2M)
    mb.phys_free(PHYS_ADDR_MAX - SZ_1M, SZ_2M)
    assert_region(mb.reserved.regions[0], PHYS_ADDR_MAX - SZ_2M, SZ_1M)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == SZ_1M


def test_free_overlap_two(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.reserve(SZ_16M, SZ_32M)
    mb.reserve(SZ_64M, SZ_64M)
    mb.free(SZ_32M, SZ_64M)
    assert_region(mb.reserved.regions[0], SZ_16M, SZ_16M)
    assert_region(mb.reserved.regions[1], 96 * SZ_1M, SZ_32M)
    assert mb.reserved.cnt == 2
    assert mb.reserved.total_size == 48 * SZ_1M


# ---- direction ---------------------------------------------------------------------------------

def test_set_bottom_up(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.set_bottom_up(False)
    assert mb.bottom_up_mode is False
    mb.set_bottom_up(True)
    assert mb.bottom_up_mode is True


def test_bottom_up(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.bottom_up_mode = False
    assert mb.bottom_up() is False
    mb.bottom_up_mode = True
    assert mb.bottom_up() is True


# ---- trim --------------------------------------------------------------------------------------

def test_trim_memory_aligned(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(32, 128)
    mb.trim_memory(32)
    assert_region(mb.memory.regions[0], 32, 128)
    assert mb.memory.cnt == 1


def test_trim_memory_too_small(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(32, 64)
    mb.add(128, 30)
    mb.trim_memory(32)
    assert_region(mb.memory.regions[0], 32, 64)
    assert mb.memory.cnt == 1


def test_trim_memory_unaligned_base(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(32, 64)
    mb.add(130, 62)
    mb.trim_memory(32)
    assert_region(mb.memory.regions[0], 32, 64)
    assert_region(mb.memory.regions[1], 160, 32)
    assert mb.memory.cnt == 2


def test_trim_memory_unaligned_end(numa: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(32, 64)
    mb.add(128, 62)
    mb.trim_memory(32)
    assert_region(mb.memory.regions[0], 32, 64)
    assert_region(mb.memory.regions[1], 128, 32)
    assert mb.memory.cnt == 2


def test_trim_memory_does_not_update_total_size(numa: bool) -> None:
    """The kernel's quirk (spec §1.5): shrinking in place leaves total_size alone."""
    mb = new_memblock(numa=numa)
    mb.add(32, 64)
    mb.add(130, 62)
    mb.add(256, 30)
    mb.trim_memory(32)
    assert mb.memory.cnt == 2
    assert mb.memory.total_size == 64 + 62  # only the removed region was subtracted


# ---- overlaps ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("base", "size", "expected"), [
    (SZ_1M, SZ_1M, False),
    (SZ_2G, SZ_1M, False),
    (SZ_1G - SZ_1M, SZ_1M, False),
    (SZ_1G + SZ_4M, SZ_1M, False),
    (SZ_1G - SZ_1M, SZ_2M, True),
    (SZ_1G + SZ_2M, SZ_2M, True),
    (SZ_1G, SZ_4M, True),
    (SZ_1G - SZ_2M, SZ_8M, True),
    (SZ_1G + SZ_1M, SZ_1M, True),
])
def test_overlaps_region(numa: bool, base: int, size: int, expected: bool) -> None:
    mb = new_memblock(numa=numa)
    mb.add(SZ_1G, SZ_4M)
    assert mb.overlaps_region(mb.memory, base, size) is expected


# ---- set_node ----------------------------------------------------------------------------------

def test_set_node(numa: bool) -> None:
    """Reserved regions get their memory node; the block crossing the node boundary is split."""
    mb = new_memblock(numa=numa)
    mb.allow_resize()
    mb.add(B, MEM_SIZE)
    half = mb.phys_mem_size() // 2
    mb.set_node(mb.start_of_DRAM(), half, mb.memory, 0)
    mb.set_node(mb.start_of_DRAM() + half, half, mb.memory, 1)
    if not numa:
        # memblock_set_node() compiles to nothing without CONFIG_NUMA.
        assert mb.memory.cnt == 1
        assert mb.memory.regions[0].nid == 0
        return
    assert mb.memory.cnt == 2
    assert_region(mb.memory.regions[0], B, half)
    assert mb.memory.regions[0].nid == 0
    assert_region(mb.memory.regions[1], B + half, half)
    assert mb.memory.regions[1].nid == 1

    for i in range(125):
        mb.reserve(mb.start_of_DRAM() + 16 * i, 8)
    mb.reserve(mb.start_of_DRAM() + half - 8, 16)
    while True:
        max_reserved = mb.reserved.max
        for rgn in list(mb.memory.regions):
            mb.set_node(rgn.base, rgn.size, mb.reserved, rgn.nid)
        if max_reserved == mb.reserved.max:
            break
    assert mb.reserved.max == 2 * INIT_MEMBLOCK_REGIONS
    regions = list(mb.reserved.regions)
    for rgn in regions[:-1]:
        assert rgn.nid == 0
    assert regions[-1].nid == 1
    assert_region(regions[-1], B + half, 8)
    # The doubled array was placed below the second node's range, in node 0.
    array = [r for r in regions if r.flags == MEMBLOCK_RSRV_KERN]
    assert len(array) == 1 and array[0].base + array[0].size <= B + half
