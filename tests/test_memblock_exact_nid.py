"""alloc_exact_nid_api.c NUMA tests: memblock_alloc_exact_nid_raw never leaves its node (spec §4.8).

Offsets are from B; see test_memblock_numa.py for the node layout. Bytes stay 0x01 (raw).
"""

import pytest
from memblock_common import (
    SMP_CACHE_BYTES,
    B,
    K,
    assert_mem_content,
    assert_region,
    both_directions,
    setup_numa_memblock,
)

from sim.mm.memblock import MEMBLOCK_NONE, MEMBLOCK_RSRV_KERN, NUMA_NO_NODE, Memblock

pytestmark = pytest.mark.parametrize("movable_node", [False, True], ids=["hotplug", "movable_node"])


def run(mb: Memblock, size: int, min_off: int | None, max_off: int | None, nid: int) -> int:
    min_addr = mb.start_of_DRAM() if min_off is None else B + min_off
    max_addr = mb.end_of_DRAM() if max_off is None else B + max_off
    addr = mb.alloc_exact_nid_raw(size, SMP_CACHE_BYTES, min_addr, max_addr, nid)
    if addr:
        assert_mem_content(mb, addr, size, raw=True)
    return addr


def by_dir(direction: str, top_down: int, bottom_up: int) -> int:
    return top_down if direction == "top_down" else bottom_up


@both_directions
def test_exact_nid_simple(movable_node: bool, direction: str) -> None:
    mb = setup_numa_memblock(direction, movable_node=movable_node)
    addr = run(mb, K, None, None, 3)
    assert addr == B + by_dir(direction, 17 * K, 14 * K)
    rgn = mb.reserved.regions[0]
    assert_region(rgn, addr, K)
    assert rgn.nid == 3
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == K


@both_directions
def test_exact_nid_part_reserved(movable_node: bool, direction: str) -> None:
    mb = setup_numa_memblock(direction, movable_node=movable_node)
    if direction == "top_down":
        mb.reserve(B + 18 * K, K)
        addr = run(mb, 256, None, None, 4)
        assert addr == B + 20 * K - 256
        assert_region(mb.reserved.regions[1], addr, 256)
        assert mb.reserved.cnt == 2
    else:
        mb._reserve(B + 18 * K, K, 4, MEMBLOCK_RSRV_KERN)
        addr = run(mb, 256, None, None, 4)
        assert addr == B + 19 * K
        assert_region(mb.reserved.regions[0], B + 18 * K, K + 256)
        assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == K + 256


@both_directions
def test_exact_nid_split_range_low(movable_node: bool, direction: str) -> None:
    mb = setup_numa_memblock(direction, movable_node=movable_node)
    addr = run(mb, 512, 14 * K - 256, 14 * K + 256, 2)
    assert addr == B + by_dir(direction, 14 * K - 512, 10 * K)
    assert_region(mb.reserved.regions[0], addr, 512)
    assert mb.reserved.cnt == 1


@both_directions
def test_exact_nid_no_overlap_split(movable_node: bool, direction: str) -> None:
    mb = setup_numa_memblock(direction, movable_node=movable_node)
    addr = run(mb, 512, 22 * K - 256, 22 * K + 256, 2)
    assert addr == B + by_dir(direction, 14 * K - 512, 10 * K)
    assert_region(mb.reserved.regions[0], addr, 512)
    assert mb.reserved.cnt == 1


@both_directions
def test_exact_nid_no_overlap_low(movable_node: bool, direction: str) -> None:
    """Node 0 lies below [min, max): min is dropped and the chunk stays in node 0."""
    mb = setup_numa_memblock(direction, movable_node=movable_node)
    addr = run(mb, 64, 10 * K, 22 * K, 0)
    assert addr == B + by_dir(direction, 8 * K - 64, 0)
    assert_region(mb.reserved.regions[0], addr, 64)
    assert mb.reserved.regions[0].nid == 0
    assert mb.reserved.cnt == 1


@pytest.mark.parametrize(("nid", "size", "min_off", "max_off", "setup"), [
    pytest.param(1, 4 * K, None, None, None, id="small_node"),
    pytest.param(2, 4 * K, None, None, (10 * K, 4 * K), id="node_reserved"),
    pytest.param(4, K, None, None, (18 * K + K // 2, K), id="part_reserved_fail"),
    pytest.param(3, 512, 14 * K - 256, 14 * K + 256, None, id="split_range_high"),
    pytest.param(7, 64, 10 * K, 22 * K, None, id="no_overlap_high"),
    pytest.param(3, 16 * K, None, None, None, id="large_region"),
])
@both_directions
def test_exact_nid_fails(movable_node: bool, direction: str, nid: int, size: int, min_off: int | None,
                         max_off: int | None, setup: tuple[int, int] | None) -> None:
    """No fallback to other nodes: these all fail where try_nid would succeed elsewhere."""
    mb = setup_numa_memblock(direction, movable_node=movable_node)
    if setup is not None:
        mb.reserve(B + setup[0], setup[1])
    before = [(r.base, r.size) for r in mb.reserved.regions]
    assert run(mb, size, min_off, max_off, nid) == 0
    assert [(r.base, r.size) for r in mb.reserved.regions] == before


@both_directions
def test_exact_nid_reserved_full_merge(movable_node: bool, direction: str) -> None:
    """With plain r1/r2 the allocation (nid 6, RSRV_KERN) sits between them unmerged."""
    mb = setup_numa_memblock(direction, movable_node=movable_node)
    mb.reserve(B + 30 * K, 128)
    mb.reserve(B + 22 * K - 128, 128)
    addr = run(mb, 8 * K, 22 * K, 30 * K, 6)
    assert addr == B + 22 * K
    r = mb.reserved.regions
    assert_region(r[0], B + 22 * K - 128, 128)
    assert_region(r[1], B + 22 * K, 8 * K)
    assert (r[1].flags, r[1].nid) == (MEMBLOCK_RSRV_KERN, 6)
    assert (r[0].flags, r[0].nid) == (MEMBLOCK_NONE, NUMA_NO_NODE)
    assert_region(r[2], B + 30 * K, 128)
    assert mb.reserved.cnt == 3
    assert mb.reserved.total_size == 8 * K + 256


@both_directions
def test_exact_nid_split_all_reserved(movable_node: bool, direction: str) -> None:
    mb = setup_numa_memblock(direction, movable_node=movable_node)
    mb.reserve(B, 30 * K - 128)
    mb.reserve(B + 30 * K + 128, 2 * K - 128)
    assert run(mb, 256, 30 * K - 128, 30 * K + 128, NUMA_NO_NODE) == 0
    assert mb.reserved.cnt == 2
