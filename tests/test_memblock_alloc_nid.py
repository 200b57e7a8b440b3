"""alloc_nid_api.c range tests: [min, max) allocations with NUMA_NO_NODE (spec §4.6).

They run for memblock_alloc_try_nid (zeroed), memblock_alloc_try_nid_raw, and, as the
exact_nid suite re-runs them, memblock_alloc_exact_nid_raw: all three give the same layout.
"""

import pytest
from memblock_common import (
    SMP_CACHE_BYTES,
    B,
    E,
    K,
    assert_mem_content,
    assert_region,
    both_directions,
    setup_memblock,
)

from sim.mm.memblock import NUMA_NO_NODE, Memblock

APIS = ("try_nid", "try_nid_raw", "exact_nid_raw")


def run_alloc_nid(mb: Memblock, api: str, size: int, min_addr: int, max_addr: int,
                  nid: int = NUMA_NO_NODE) -> int:
    """run_memblock_alloc_nid(): dispatch on the API and check the chunk's bytes."""
    fn = {"try_nid": mb.alloc_try_nid, "try_nid_raw": mb.alloc_try_nid_raw,
          "exact_nid_raw": mb.alloc_exact_nid_raw}[api]
    addr = fn(size, SMP_CACHE_BYTES, min_addr, max_addr, nid)
    if addr:
        assert_mem_content(mb, addr, size, raw=api != "try_nid")
    return addr


pytestmark = pytest.mark.parametrize("api", APIS)


@both_directions
def test_alloc_nid_simple(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    addr = run_alloc_nid(mb, api, 128, B + 64, B + 576)
    expected = {"top_down": B + 448, "bottom_up": B + 64}[direction]
    assert addr == expected
    assert_region(mb.reserved.regions[0], expected, 128)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == 128


@both_directions
def test_alloc_nid_misaligned(api: str, direction: str) -> None:
    """Top-down: a misaligned max (end_misaligned); bottom-up: a misaligned min (start_misaligned)."""
    mb = setup_memblock(direction)
    if direction == "top_down":
        addr = run_alloc_nid(mb, api, 128, B + 64, B + 578)
        assert addr == B + 448
    else:
        addr = run_alloc_nid(mb, api, 128, B + 2, B + 514)
        assert addr == B + 32
    assert_region(mb.reserved.regions[0], addr, 128)
    assert mb.reserved.cnt == 1


@both_directions
def test_alloc_nid_exact_address(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    assert run_alloc_nid(mb, api, K, B + 32, B + 1056) == B + 32
    assert_region(mb.reserved.regions[0], B + 32, K)
    assert mb.reserved.cnt == 1


@both_directions
def test_alloc_nid_narrow_range(api: str, direction: str) -> None:
    """The range is too narrow: min_addr is dropped, max_addr is kept."""
    mb = setup_memblock(direction)
    addr = run_alloc_nid(mb, api, 256, B + 512, B + 544)
    expected = {"top_down": B + 288, "bottom_up": B}[direction]
    assert addr == expected
    assert_region(mb.reserved.regions[0], expected, 256)
    assert mb.reserved.cnt == 1


@both_directions
def test_alloc_nid_low_max(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    assert run_alloc_nid(mb, api, K, B, B + 32) == 0
    assert mb.reserved.cnt == 0


@both_directions
def test_alloc_nid_min_reserved(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    mb.reserve_kern(E - 192, 128)
    assert run_alloc_nid(mb, api, 64, E - 64, E) == E - 64
    assert_region(mb.reserved.regions[0], E - 192, 192)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == 192


@both_directions
def test_alloc_nid_max_reserved(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    mb.reserve_kern(E - 64, 64)
    assert run_alloc_nid(mb, api, 128, E - 192, E - 64) == E - 192
    assert_region(mb.reserved.regions[0], E - 192, 192)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == 192


@both_directions
def test_alloc_nid_reserved_with_space(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    mb.reserve_kern(E - 64, 32)    # r1
    mb.reserve_kern(E - 288, 128)  # r2
    addr = run_alloc_nid(mb, api, 64, E - 160, E - 64)
    if direction == "top_down":
        assert addr == E - 128
        assert_region(mb.reserved.regions[0], E - 288, 128)
        assert_region(mb.reserved.regions[1], E - 128, 96)
    else:
        assert addr == E - 160
        assert_region(mb.reserved.regions[0], E - 288, 192)
        assert_region(mb.reserved.regions[1], E - 64, 32)
    assert mb.reserved.cnt == 2
    assert mb.reserved.total_size == 224


@both_directions
def test_alloc_nid_reserved_full_merge(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    mb.reserve_kern(E - 64, 32)
    mb.reserve_kern(E - 256, 128)
    assert run_alloc_nid(mb, api, 64, E - 128, E - 64) == E - 128
    assert_region(mb.reserved.regions[0], E - 256, 224)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == 224


@both_directions
def test_alloc_nid_reserved_no_space(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    if direction == "top_down":
        mb.reserve_kern(E - 64, 32)
        mb.reserve_kern(E - 224, 128)
        assert run_alloc_nid(mb, api, 256, E - 96, E - 64) == E - 480
        assert_region(mb.reserved.regions[0], E - 480, 384)
        assert_region(mb.reserved.regions[1], E - 64, 32)
        assert mb.reserved.cnt == 2
    else:
        mb.reserve(E - 64, 32)
        mb.reserve(E - 224, 128)
        assert run_alloc_nid(mb, api, 256, E - 96, E - 64) == B
        assert_region(mb.reserved.regions[0], B, 256)
        assert_region(mb.reserved.regions[1], E - 224, 128)
        assert_region(mb.reserved.regions[2], E - 64, 32)
        assert mb.reserved.cnt == 3
    assert mb.reserved.total_size == 416


@both_directions
def test_alloc_nid_reserved_all(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    mb.reserve(E - 32, 32)
    mb.reserve(B, 32704)
    assert run_alloc_nid(mb, api, 256, E - 64, E - 32) == 0
    assert mb.reserved.cnt == 2
    assert mb.reserved.total_size == 32736


@both_directions
def test_alloc_nid_cap_max(api: str, direction: str) -> None:
    """max_addr beyond the end of memory is clamped to it."""
    mb = setup_memblock(direction)
    if direction == "top_down":
        assert run_alloc_nid(mb, api, 256, E - K, E + 256) == E - 256
    else:
        assert run_alloc_nid(mb, api, 256, B + K, E + 256) == B + K
    assert mb.reserved.regions[0].size == 256
    assert mb.reserved.cnt == 1


@both_directions
def test_alloc_nid_cap_min(api: str, direction: str) -> None:
    """min_addr below the start of memory is clamped to it."""
    mb = setup_memblock(direction)
    if direction == "top_down":
        assert run_alloc_nid(mb, api, K, B - 256, E) == E - K
    else:
        assert run_alloc_nid(mb, api, K, B, E - 256) == B
    assert mb.reserved.regions[0].size == K
    assert mb.reserved.cnt == 1
