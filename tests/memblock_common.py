"""Shared setup for the memblock tests, mirroring tools/testing/memblock/tests/common.c.

Every test builds a fresh Memblock (the explicit reset of reset_memblock_regions()), backed
by a PhysMem whose test window [B, B + PHYS_MEM_SIZE) is filled with 0x01 bytes, as
dummy_physical_memory_init() does, so zeroing and raw allocations can be told apart.
"""

from __future__ import annotations

import pytest

from sim.mm.memblock import MEMBLOCK_HOTPLUG, MEMBLOCK_NONE, Memblock, MemblockRegion
from sim.physmem import PhysMem
from sim.sizes import SZ_1K, SZ_16M

# The kernel harness mallocs its "physical memory"; we pin it page aligned, far above 16 MiB.
B = 0x4000_0000
MEM_SIZE = 32 * SZ_1K
E = B + MEM_SIZE
PHYS_MEM_SIZE = SZ_16M
SMP_CACHE_BYTES = 32
# dummy_physical_memory_low_limit(): the simulator's ARCH_LOW_ADDRESS_LIMIT.
LOW_LIMIT = B + MEM_SIZE // 2
NUMA_NODES = 8
# Basis points of MEM_SIZE per node (node_fractions in alloc_nid_api.c).
NODE_FRACTIONS = (2500, 625, 1250, 1250, 625, 625, 2500, 625)
K = SZ_1K

DIRECTIONS = ("top_down", "bottom_up")
# run_top_down()/run_bottom_up(): one test body, both allocation directions, named in the test id.
both_directions = pytest.mark.parametrize("direction", DIRECTIONS)


def new_memblock(*, numa: bool = True) -> Memblock:
    """reset_memblock_regions() + reset_memblock_attributes() + dummy_physical_memory_init()."""
    physmem = PhysMem(B + PHYS_MEM_SIZE)
    physmem.fill(B, PHYS_MEM_SIZE, 0x01)
    return Memblock(physmem, numa=numa, smp_cache_bytes=SMP_CACHE_BYTES, low_limit=LOW_LIMIT)


def setup_memblock(direction: str = "top_down", *, numa: bool = True) -> Memblock:
    """setup_memblock(): one memory region [B, E), then the direction run_top_down/bottom_up sets."""
    mb = new_memblock(numa=numa)
    mb.add(B, MEM_SIZE)
    mb.set_bottom_up(direction == "bottom_up")
    return mb


def setup_numa_memblock(direction: str = "top_down", *, movable_node: bool = False) -> Memblock:
    """setup_numa_memblock(node_fractions): eight nodes, HOTPLUG unless run as `main -m`."""
    mb = new_memblock(numa=True)
    mb.movable_node = movable_node
    flags = MEMBLOCK_NONE if movable_node else MEMBLOCK_HOTPLUG
    base = B
    for nid, frac in enumerate(NODE_FRACTIONS):
        size = MEM_SIZE * frac // 10000
        mb.add_node(base, size, nid, flags)
        base += size
    mb.set_bottom_up(direction == "bottom_up")
    return mb


def assert_region(r: MemblockRegion, base: int, size: int) -> None:
    assert (r.base, r.size) == (base, size), f"region [{r.base:#x},+{r.size:#x}) != [{base:#x},+{size:#x})"


def assert_mem_content(mb: Memblock, addr: int, size: int, raw: bool) -> None:
    """assert_mem_content(): every byte of the chunk is 0, or (raw) still the 0x01 fill."""
    assert mb.physmem is not None
    expected = bytes([0x01 if raw else 0x00]) * size
    assert mb.physmem.read(addr, size) == expected
