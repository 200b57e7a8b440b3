"""sim.physmem: sparse RAM whose cost follows what is touched, not its size."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.physmem import PhysMem
from sim.sizes import PAGE_SIZE

TiB = 1 << 40


def test_unwritten_memory_reads_zero_and_costs_nothing() -> None:
    mem = PhysMem(TiB)
    assert mem.read(TiB - 16, 16) == bytes(16)
    assert mem.read(123 << 30, 3 * 4096 + 7) == bytes(3 * 4096 + 7)
    assert mem.materialized_pages == 0


def test_write_materialises_only_the_pages_it_touches() -> None:
    mem = PhysMem(TiB)
    mem.write(0x1000 - 3, b"abcdef")                 # straddles two pages
    assert mem.materialized_pages == 2
    assert mem.read(0x1000 - 5, 10) == b"\0\0abcdef\0\0"


def test_fill_is_a_run_not_pages() -> None:
    mem = PhysMem(TiB)
    mem.fill(0, TiB, 0xAA)
    assert mem.materialized_pages == 0
    assert mem.read(TiB // 2 - 2, 4) == b"\xaa" * 4
    mem.write(4096 * 10 + 1, b"x")                   # a write on top of a fill keeps the fill around it
    assert mem.read(4096 * 10, 3) == b"\xaax\xaa"
    assert mem.materialized_pages == 1


def test_fill_over_written_pages_and_partial_pages() -> None:
    mem = PhysMem(1 << 30)
    mem.write(0x2000, b"y" * 0x3000)                  # pages 2, 3, 4
    mem.fill(0x2800, 0x1000, 0x55)                    # half of page 2, half of page 3
    assert mem.read(0x27FF, 3) == b"yUU"
    assert mem.read(0x37FE, 3) == b"UUy"
    mem.fill(0x2000, 0x3000, 0x11)                    # covers all three: they stop costing memory
    assert mem.materialized_pages == 0
    assert mem.read(0x1FFF, 0x3002) == b"\0" + b"\x11" * 0x3000 + b"\0"


def test_overlapping_fills_keep_the_latest_value_and_zero_fill_forgets() -> None:
    mem = PhysMem(1 << 20)
    mem.fill(100, 100, 1)
    mem.fill(150, 100, 2)
    mem.fill(120, 10, 0)
    assert mem.read(95, 160) == (b"\0" * 5 + b"\x01" * 20 + b"\0" * 10 + b"\x01" * 20
                                 + b"\x02" * 100 + b"\0" * 5)


@pytest.mark.parametrize(("phys", "n"), [(-1, 1), (0, (1 << 20) + 1), ((1 << 20) - 1, 2)])
def test_out_of_range_access_is_a_clear_error(phys: int, n: int) -> None:
    mem = PhysMem(1 << 20)
    with pytest.raises(ValueError, match="outside RAM"):
        mem.read(phys, n)
    with pytest.raises(ValueError, match="outside RAM"):
        mem.write(phys, b"\0" * max(n, 0))
    with pytest.raises(ValueError, match="outside RAM"):
        mem.fill(phys, n, 0)


def test_fill_value_must_be_a_byte() -> None:
    with pytest.raises(ValueError):
        PhysMem(4096).fill(0, 1, 256)


def test_u64_helpers_are_little_endian() -> None:
    mem = PhysMem(4096)
    mem.write_u64(8, 0x0102030405060708)
    assert mem.read(8, 8) == bytes.fromhex("0807060504030201")
    assert mem.read_u64(8) == 0x0102030405060708
    assert mem.read_u32(8) == 0x05060708


_span = 16 * PAGE_SIZE
_op = st.one_of(
    st.tuples(st.just("write"), st.integers(0, _span - 1), st.binary(min_size=1, max_size=3 * PAGE_SIZE)),
    st.tuples(st.just("fill"), st.integers(0, _span - 1), st.integers(0, 3 * PAGE_SIZE),
              st.sampled_from([0, 0xAA, 0x55])),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_op, max_size=25), st.integers(0, _span - 1), st.integers(0, _span))
def test_random_writes_and_fills_read_back_like_a_bytearray(ops: list[tuple], start: int, n: int) -> None:
    """Fills join neighbouring runs of one value and reads lay runs then pages: expect exactly the
    bytes a flat bytearray given the same writes and fills holds, in any window."""
    mem, flat = PhysMem(_span), bytearray(_span)
    for kind, phys, arg, *value in ops:
        if kind == "write":
            arg = arg[:_span - phys]
            mem.write(phys, arg)
            flat[phys:phys + len(arg)] = arg
        else:
            arg = min(arg, _span - phys)
            mem.fill(phys, arg, value[0])
            flat[phys:phys + arg] = bytes([value[0]]) * arg
    n = min(n, _span - start)
    assert mem.read(start, n) == bytes(flat[start:start + n])
    assert mem.read(0, _span) == bytes(flat)


def test_scrubbing_the_gaps_between_many_blocks_keeps_one_run_and_no_pages() -> None:
    """Poison everything, then poison again every gap between 10,000 kept blocks, as a scrubbing
    kernel does after a hand-over: expect no page materialised and the kept blocks untouched."""
    mem = PhysMem(1 << 40)
    mem.fill(0, 1 << 40, 0xAA)
    for i in range(10_000):
        mem.fill(i << 24, PAGE_SIZE, i % 200 + 1)
    for i in range(10_000):
        mem.fill((i << 24) + PAGE_SIZE, (1 << 24) - PAGE_SIZE, 0xAA)
    assert mem.materialized_pages == 0
    assert mem.read((1234 << 24) - 8, 16) == b"\xaa" * 8 + bytes([1234 % 200 + 1]) * 8


_pages = 32
_pfn_fill = st.tuples(st.integers(0, _pages - 1), st.integers(0, _pages), st.sampled_from([0, 0xAA, 0x55]))


@settings(max_examples=200, deadline=None)
@given(st.lists(_pfn_fill, max_size=12), st.lists(st.integers(0, _pages * PAGE_SIZE - 1), max_size=6),
       st.lists(st.integers(0, _pages), max_size=40), st.sampled_from([0, 0xAA, 0x55]))
def test_fill_pfn_ranges_matches_one_fill_per_range(
        fills: list[tuple[int, int, int]], writes: list[int], cuts: list[int], value: int) -> None:
    """The bulk skip over ranges already holding value must give the bytes, runs and materialised
    pages of one fill() per range, over any earlier fills and writes (pages inside runs too)."""
    size = _pages * PAGE_SIZE
    fast, slow, flat = PhysMem(size), PhysMem(size), bytearray(size)
    for pfn, npages, v in fills:
        n = min(npages, _pages - pfn) * PAGE_SIZE
        for mem in (fast, slow):
            mem.fill(pfn * PAGE_SIZE, n, v)
        flat[pfn * PAGE_SIZE:pfn * PAGE_SIZE + n] = bytes([v]) * n
    for phys in writes:
        for mem in (fast, slow):
            mem.write(phys, b"w")
        flat[phys] = ord("w")
    edges = sorted(set(cuts))
    starts, ends = edges[0::2], edges[1::2]
    starts = starts[:len(ends)]
    fast.fill_pfn_ranges(starts, ends, value)
    for s, e in zip(starts, ends, strict=True):
        slow.fill(s * PAGE_SIZE, (e - s) * PAGE_SIZE, value)
        flat[s * PAGE_SIZE:e * PAGE_SIZE] = bytes([value]) * ((e - s) * PAGE_SIZE)
    assert fast.read(0, size) == bytes(flat)
    assert (fast._run_start, fast._run_end, fast._run_value) == (
        slow._run_start, slow._run_end, slow._run_value)
    assert fast._pfns == slow._pfns and fast.materialized_pages == slow.materialized_pages
