"""alloc_nid_api.c NUMA tests: try_nid and try_nid_raw over the eight-node layout (spec §4.7).

Offsets are from B. Nodes (start, size): 0 (0, 8K), 1 (8K, 2K), 2 (10K, 4K), 3 (14K, 4K),
4 (18K, 2K), 5 (20K, 2K), 6 (22K, 8K), 7 (30K, 2K). Each runs with the nodes HOTPLUG, and as
`main -m` does, with movable_node on and the nodes NONE: the results must not differ.
"""

import pytest
from memblock_common import (
    NUMA_NODES,
    SMP_CACHE_BYTES,
    B,
    K,
    assert_mem_content,
    assert_region,
    both_directions,
    setup_numa_memblock,
)

from sim.mm.memblock import (
    MEMBLOCK_HOTPLUG,
    MEMBLOCK_NONE,
    MEMBLOCK_RSRV_KERN,
    NUMA_NO_NODE,
    Memblock,
)

APIS = ("try_nid", "try_nid_raw")
pytestmark = [pytest.mark.parametrize("api", APIS),
              pytest.mark.parametrize("movable_node", [False, True], ids=["hotplug", "movable_node"])]


def setup(direction: str, movable_node: bool) -> Memblock:
    mb = setup_numa_memblock(direction, movable_node=movable_node)
    assert mb.memory.cnt == NUMA_NODES
    for nid in range(NUMA_NODES):
        assert mb.memory.regions[nid].nid == nid
        assert mb.memory.regions[nid].flags == (MEMBLOCK_NONE if movable_node else MEMBLOCK_HOTPLUG)
    return mb


def run(mb: Memblock, api: str, size: int, min_off: int | None, max_off: int | None, nid: int) -> int:
    """Allocate over [B+min_off, B+max_off), or the whole of DRAM when the offsets are None."""
    min_addr = mb.start_of_DRAM() if min_off is None else B + min_off
    max_addr = mb.end_of_DRAM() if max_off is None else B + max_off
    fn = mb.alloc_try_nid if api == "try_nid" else mb.alloc_try_nid_raw
    addr = fn(size, SMP_CACHE_BYTES, min_addr, max_addr, nid)
    if addr:
        assert_mem_content(mb, addr, size, raw=api == "try_nid_raw")
    return addr


def by_dir(direction: str, top_down: int, bottom_up: int) -> int:
    return top_down if direction == "top_down" else bottom_up


@both_directions
def test_numa_simple(api: str, movable_node: bool, direction: str) -> None:
    mb = setup(direction, movable_node)
    addr = run(mb, api, K, None, None, 3)
    assert addr == B + by_dir(direction, 17 * K, 14 * K)
    rgn = mb.reserved.regions[0]
    assert_region(rgn, addr, K)
    assert rgn.nid == 3
    assert rgn.flags == MEMBLOCK_RSRV_KERN
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == K


@both_directions
def test_numa_small_node(api: str, movable_node: bool, direction: str) -> None:
    """Node 1 is too small: fall back to any node, reserving with NUMA_NO_NODE."""
    mb = setup(direction, movable_node)
    addr = run(mb, api, 4 * K, None, None, 1)
    assert addr == B + by_dir(direction, 26 * K, 0)
    rgn = mb.reserved.regions[0]
    assert_region(rgn, addr, 4 * K)
    assert rgn.nid == NUMA_NO_NODE
    assert mb.reserved.cnt == 1


@both_directions
def test_numa_node_reserved(api: str, movable_node: bool, direction: str) -> None:
    mb = setup(direction, movable_node)
    mb.reserve(B + 10 * K, 4 * K)
    addr = run(mb, api, 4 * K, None, None, 2)
    assert addr == B + by_dir(direction, 26 * K, 0)
    assert_region(mb.reserved.regions[by_dir(direction, 1, 0)], addr, 4 * K)
    assert mb.reserved.cnt == 2
    assert mb.reserved.total_size == 8 * K


@both_directions
def test_numa_part_reserved(api: str, movable_node: bool, direction: str) -> None:
    mb = setup(direction, movable_node)
    if direction == "top_down":
        mb.reserve(B + 18 * K, K)
        addr = run(mb, api, 256, None, None, 4)
        assert addr == B + 20 * K - 256
        assert_region(mb.reserved.regions[1], addr, 256)
        assert mb.reserved.cnt == 2
    else:
        # The newest test reserves r1 as an allocation would, so the two merge.
        mb._reserve(B + 18 * K, K, 4, MEMBLOCK_RSRV_KERN)
        addr = run(mb, api, 256, None, None, 4)
        assert addr == B + 19 * K
        assert_region(mb.reserved.regions[0], B + 18 * K, K + 256)
        assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == K + 256


@both_directions
def test_numa_part_reserved_plain_does_not_merge(api: str, movable_node: bool, direction: str) -> None:
    """The pre-6.16 version of the test: a plain r1 no longer merges with the allocation."""
    mb = setup(direction, movable_node)
    mb.reserve(B + 18 * K, K)
    addr = run(mb, api, 256, None, None, 4)
    assert addr == B + by_dir(direction, 20 * K - 256, 19 * K)
    assert mb.reserved.cnt == 2


@both_directions
def test_numa_part_reserved_fallback(api: str, movable_node: bool, direction: str) -> None:
    mb = setup(direction, movable_node)
    mb.reserve(B + 18 * K + K // 2, K)
    addr = run(mb, api, K, None, None, 4)
    assert addr == B + by_dir(direction, 31 * K, 0)
    assert_region(mb.reserved.regions[by_dir(direction, 1, 0)], addr, K)
    assert mb.reserved.cnt == 2
    assert mb.reserved.total_size == 2 * K


@both_directions
def test_numa_split_range_low(api: str, movable_node: bool, direction: str) -> None:
    mb = setup(direction, movable_node)
    addr = run(mb, api, 512, 14 * K - 256, 14 * K + 256, 2)
    assert addr == B + by_dir(direction, 14 * K - 512, 10 * K)
    assert_region(mb.reserved.regions[0], addr, 512)
    assert mb.reserved.cnt == 1


@both_directions
def test_numa_split_range_high(api: str, movable_node: bool, direction: str) -> None:
    mb = setup(direction, movable_node)
    addr = run(mb, api, 512, 14 * K - 256, 14 * K + 256, 3)
    assert addr == B + by_dir(direction, 14 * K - 512, 0)
    assert_region(mb.reserved.regions[0], addr, 512)
    assert mb.reserved.cnt == 1


@both_directions
def test_numa_no_overlap_split(api: str, movable_node: bool, direction: str) -> None:
    mb = setup(direction, movable_node)
    addr = run(mb, api, 512, 22 * K - 256, 22 * K + 256, 2)
    assert addr == B + by_dir(direction, 14 * K - 512, 10 * K)
    assert_region(mb.reserved.regions[0], addr, 512)
    assert mb.reserved.cnt == 1


@pytest.mark.parametrize("nid", [0, 7], ids=["no_overlap_low", "no_overlap_high"])
@both_directions
def test_numa_no_overlap(api: str, movable_node: bool, direction: str, nid: int) -> None:
    """The node lies outside [min, max): any node inside the range serves."""
    mb = setup(direction, movable_node)
    addr = run(mb, api, 64, 10 * K, 22 * K, nid)
    assert addr == B + by_dir(direction, 22 * K - 64, 10 * K)
    assert_region(mb.reserved.regions[0], addr, 64)
    assert mb.reserved.cnt == 1


@both_directions
def test_numa_large_region(api: str, movable_node: bool, direction: str) -> None:
    mb = setup(direction, movable_node)
    assert run(mb, api, 16 * K, None, None, 3) == 0
    assert mb.reserved.cnt == 0


@both_directions
def test_numa_reserved_full_merge(api: str, movable_node: bool, direction: str) -> None:
    mb = setup(direction, movable_node)
    mb._reserve(B + 30 * K, 128, 6, MEMBLOCK_RSRV_KERN)
    mb._reserve(B + 22 * K - 128, 128, 6, MEMBLOCK_RSRV_KERN)
    addr = run(mb, api, 8 * K, 22 * K, 30 * K, 6)
    assert addr == B + 22 * K
    assert_region(mb.reserved.regions[0], B + 22 * K - 128, 8 * K + 256)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == 8 * K + 256


@both_directions
def test_numa_split_all_reserved(api: str, movable_node: bool, direction: str) -> None:
    """The only free gap straddles nodes 6 and 7, and free pieces never span two regions."""
    mb = setup(direction, movable_node)
    mb.reserve(B, 30 * K - 128)
    mb.reserve(B + 30 * K + 128, 2 * K - 128)
    assert run(mb, api, 256, 30 * K - 128, 30 * K + 128, NUMA_NO_NODE) == 0
    assert mb.reserved.cnt == 2


@both_directions
def test_alloc_node_on_correct_nid(api: str, movable_node: bool, direction: str) -> None:
    mb = setup(direction, movable_node)
    addr = mb.alloc_node(512, SMP_CACHE_BYTES, 2)
    assert addr
    assert_mem_content(mb, addr, 512, raw=False)
    node = mb.memory.regions[2]
    assert node.nid == 2
    assert node.base <= addr and addr + 512 <= node.base + node.size
    assert mb.reserved.regions[0].nid == 2
