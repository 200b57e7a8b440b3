"""alloc_api.c: memblock_alloc (zeroed) and memblock_alloc_raw (untouched) over [B, E) (spec §4.3)."""

import pytest
from memblock_common import (
    MEM_SIZE,
    SMP_CACHE_BYTES,
    B,
    E,
    assert_mem_content,
    assert_region,
    both_directions,
    new_memblock,
    setup_memblock,
)

from sim.mm.memblock import MEMBLOCK_NONE, MEMBLOCK_RSRV_KERN, NUMA_NO_NODE, Memblock

APIS = ("alloc", "alloc_raw")


def run_alloc(mb: Memblock, api: str, size: int, align: int = SMP_CACHE_BYTES) -> int:
    """run_memblock_alloc(): the zeroing or the raw API, and check the whole chunk's bytes."""
    addr = mb.alloc(size, align) if api == "alloc" else mb.alloc_raw(size, align)
    if addr:
        assert_mem_content(mb, addr, size, raw=api == "alloc_raw")
    return addr


pytestmark = pytest.mark.parametrize("api", APIS)


@both_directions
def test_alloc_simple(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    addr = run_alloc(mb, api, 2)
    expected = {"top_down": E - 32, "bottom_up": B}[direction]
    assert addr == expected
    rgn = mb.reserved.regions[0]
    assert_region(rgn, expected, 2)
    assert rgn.flags == MEMBLOCK_RSRV_KERN
    assert rgn.nid == NUMA_NO_NODE
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == 2


@both_directions
def test_alloc_disjoint(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    if direction == "top_down":
        mb.reserve(E - 2, 2)
        addr = run_alloc(mb, api, 16, 64)
        assert addr == E - 64
        assert_region(mb.reserved.regions[0], E - 64, 16)
        assert_region(mb.reserved.regions[1], E - 2, 2)
    else:
        mb.reserve(B + 2, 2)
        addr = run_alloc(mb, api, 16, 64)
        assert addr == B + 64
        assert_region(mb.reserved.regions[0], B + 2, 2)
        assert_region(mb.reserved.regions[1], B + 64, 16)
    assert mb.reserved.cnt == 2
    assert mb.reserved.total_size == 18


@both_directions
def test_alloc_before(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    if direction == "top_down":
        mb.reserve_kern(E - 544, 32)
        assert run_alloc(mb, api, 512) == E - 512
        assert_region(mb.reserved.regions[0], E - 544, 544)
        assert mb.reserved.total_size == 544
    else:
        mb.reserve_kern(B + 512, 128)
        assert run_alloc(mb, api, 512) == B
        assert_region(mb.reserved.regions[0], B, 640)
        assert mb.reserved.total_size == 640
    assert mb.reserved.cnt == 1


@both_directions
def test_alloc_after(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    if direction == "top_down":
        mb.reserve_kern(E - 32, 8)
        assert run_alloc(mb, api, 512) == E - 544
        assert_region(mb.reserved.regions[0], E - 544, 520)
        assert mb.reserved.total_size == 520
    else:
        mb.reserve_kern(B + 32, 64)
        assert run_alloc(mb, api, 512) == B + 96
        assert_region(mb.reserved.regions[0], B + 32, 576)
        assert mb.reserved.total_size == 576
    assert mb.reserved.cnt == 1


@both_directions
def test_alloc_second_fit(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    if direction == "top_down":
        mb.reserve_kern(E - 512, 512)
        mb.reserve_kern(E - 1024, 256)
        assert run_alloc(mb, api, 1024) == E - 2048
        assert_region(mb.reserved.regions[0], E - 2048, 1280)
        assert_region(mb.reserved.regions[1], E - 512, 512)
    else:
        mb.reserve_kern(B, 512)
        mb.reserve_kern(B + 1024, 256)
        assert run_alloc(mb, api, 1024) == B + 1280
        assert_region(mb.reserved.regions[0], B, 512)
        assert_region(mb.reserved.regions[1], B + 1024, 1280)
    assert mb.reserved.cnt == 2
    assert mb.reserved.total_size == 1792


@both_directions
def test_alloc_in_between(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    mb.reserve_kern(B + 32, 16320)
    mb.reserve_kern(B + 16416, 16320)
    assert run_alloc(mb, api, 64) == B + 16352
    assert_region(mb.reserved.regions[0], B + 32, 32704)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == 32704


@both_directions
def test_alloc_small_gaps(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    for k in range(26):
        mb.reserve(B + 256 + 1280 * k, 1024)
    assert mb.reserved.regions[25].base + 1024 > E
    assert run_alloc(mb, api, 1024) == 0
    assert mb.reserved.cnt == 26
    assert mb.reserved.total_size == 26 * 1024


@both_directions
def test_alloc_all_reserved(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    mb.reserve(B, MEM_SIZE)
    assert run_alloc(mb, api, 256) == 0
    assert mb.reserved.cnt == 1
    assert_region(mb.reserved.regions[0], B, MEM_SIZE)


@both_directions
def test_alloc_no_space(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    mb.reserve(B, MEM_SIZE - 256)
    assert run_alloc(mb, api, 1024) == 0
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == MEM_SIZE - 256


@both_directions
def test_alloc_limited_space(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    mb.reserve_kern(B, MEM_SIZE - 256)
    assert run_alloc(mb, api, 256) == E - 256
    assert_region(mb.reserved.regions[0], B, MEM_SIZE)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == MEM_SIZE


@both_directions
def test_alloc_no_memory(api: str, direction: str) -> None:
    mb = new_memblock()
    mb.set_bottom_up(direction == "bottom_up")
    assert run_alloc(mb, api, 1024) == 0
    assert_region(mb.reserved.regions[0], 0, 0)
    assert mb.reserved.total_size == 0


@both_directions
def test_alloc_too_large(api: str, direction: str) -> None:
    mb = setup_memblock(direction)
    assert run_alloc(mb, api, MEM_SIZE + 2) == 0
    assert_region(mb.reserved.regions[0], 0, 0)
    assert mb.reserved.total_size == 0


def test_alloc_plain_reserve_does_not_merge(api: str) -> None:
    """A plain reservation (flags NONE) and an allocation (RSRV_KERN) that touch stay apart."""
    mb = setup_memblock("top_down")
    mb.reserve(E - 32, 32)
    assert run_alloc(mb, api, 32) == E - 64
    assert mb.reserved.cnt == 2
    assert mb.reserved.regions[0].flags == MEMBLOCK_RSRV_KERN
    assert mb.reserved.regions[1].flags == MEMBLOCK_NONE
