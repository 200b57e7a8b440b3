"""alloc_low_api.c: memblock_alloc_low() under ARCH_LOW_ADDRESS_LIMIT L = B + 16K (spec §4.5)."""

from memblock_common import (
    LOW_LIMIT,
    PHYS_MEM_SIZE,
    SMP_CACHE_BYTES,
    B,
    E,
    assert_mem_content,
    assert_region,
    both_directions,
    setup_memblock,
)

L = LOW_LIMIT


@both_directions
def test_alloc_low_simple(direction: str) -> None:
    mb = setup_memblock(direction)
    addr = mb.alloc_low(64, SMP_CACHE_BYTES)
    expected = {"top_down": L - 64, "bottom_up": B}[direction]
    assert addr == expected
    assert addr + 64 <= L
    assert_mem_content(mb, addr, 64, raw=False)
    assert_region(mb.reserved.regions[0], expected, 64)
    assert mb.reserved.cnt == 1


@both_directions
def test_alloc_low_exact_limit(direction: str) -> None:
    """The limit is an exclusive end: a chunk ending exactly at it is fine."""
    mb = setup_memblock(direction)
    mb.remove(B, L - 64 - B)
    addr = mb.alloc_low(64, SMP_CACHE_BYTES)
    assert addr == L - 64
    assert_mem_content(mb, addr, 64, raw=False)
    assert_region(mb.reserved.regions[0], L - 64, 64)
    assert mb.reserved.cnt == 1


@both_directions
def test_alloc_low_alignment_crosses_limit(direction: str) -> None:
    mb = setup_memblock(direction)
    mb.remove(B, L - 1 - B)
    assert mb.alloc_low(1, SMP_CACHE_BYTES) == 0
    assert mb.reserved.cnt == 0
    assert_mem_content(mb, L - 1, E - (L - 1), raw=True)


@both_directions
def test_alloc_low_reserved(direction: str) -> None:
    """Low memory all taken: alloc_low fails, while an unrestricted alloc still succeeds above L."""
    mb = setup_memblock(direction)
    mb.reserve(B, L - B)
    assert mb.alloc_low(64, SMP_CACHE_BYTES) == 0
    assert mb.reserved.cnt == 1
    assert_region(mb.reserved.regions[0], B, L - B)
    addr = mb.alloc(64, SMP_CACHE_BYTES)
    assert addr == {"top_down": E - 64, "bottom_up": L}[direction]
    assert addr >= L
    assert_mem_content(mb, addr, 64, raw=False)
    # Nothing outside the chunk was touched by the zeroing.
    assert_mem_content(mb, B, addr - B, raw=True)
    assert_mem_content(mb, addr + 64, B + PHYS_MEM_SIZE - addr - 64, raw=True)
