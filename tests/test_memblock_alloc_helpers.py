"""alloc_helpers_api.c: memblock_alloc_from(size, 32, min) over [B, E), zeroed (spec §4.4)."""

from memblock_common import (
    SMP_CACHE_BYTES,
    B,
    E,
    assert_mem_content,
    assert_region,
    both_directions,
    setup_memblock,
)

from sim.mm.memblock import Memblock


def run_alloc_from(mb: Memblock, size: int, min_addr: int) -> int:
    addr = mb.alloc_from(size, SMP_CACHE_BYTES, min_addr)
    if addr:
        assert_mem_content(mb, addr, size, raw=False)
    return addr


@both_directions
def test_alloc_from_simple(direction: str) -> None:
    mb = setup_memblock(direction)
    assert run_alloc_from(mb, 16, E - 32) == E - 32
    assert_region(mb.reserved.regions[0], E - 32, 16)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == 16


@both_directions
def test_alloc_from_misaligned(direction: str) -> None:
    mb = setup_memblock(direction)
    assert run_alloc_from(mb, 32, E - 63) == E - 32
    assert_region(mb.reserved.regions[0], E - 32, 32)
    assert mb.reserved.cnt == 1


@both_directions
def test_alloc_from_high_addr(direction: str) -> None:
    """min_addr leaves no room: the allocation retries without it."""
    mb = setup_memblock(direction)
    if direction == "top_down":
        assert run_alloc_from(mb, 32, E - 16) == E - 32
        assert_region(mb.reserved.regions[0], E - 32, 32)
    else:
        assert run_alloc_from(mb, 32, E - 8) == B
        assert_region(mb.reserved.regions[0], B, 32)
    assert mb.reserved.cnt == 1
    assert mb.reserved.total_size == 32


@both_directions
def test_alloc_from_no_space_above(direction: str) -> None:
    mb = setup_memblock(direction)
    if direction == "top_down":
        mb.reserve_kern(E - 64, 2)
        assert run_alloc_from(mb, 64, E - 64) == E - 128
        assert_region(mb.reserved.regions[0], E - 128, 66)
        assert mb.reserved.cnt == 1
        assert mb.reserved.total_size == 66
    else:
        mb.reserve(B + 96, 32640)
        assert run_alloc_from(mb, 64, B + 128) == B
        assert_region(mb.reserved.regions[0], B, 64)
        assert_region(mb.reserved.regions[1], B + 96, 32640)
        assert mb.reserved.cnt == 2
        assert mb.reserved.total_size == 32704


@both_directions
def test_alloc_from_min_addr_cap(direction: str) -> None:
    """A min_addr below memory is harmless: the allocation starts at the first free byte."""
    mb = setup_memblock(direction)
    if direction == "top_down":
        mb.reserve_kern(B + 64, 32 * 1024 - 64)
        assert run_alloc_from(mb, 64, B - 96) == B
        assert_region(mb.reserved.regions[0], B, 32 * 1024)
    else:
        assert run_alloc_from(mb, 64, B - 96) == B
        assert_region(mb.reserved.regions[0], B, 64)
    assert mb.reserved.cnt == 1
