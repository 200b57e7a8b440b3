"""sim.mm.page_alloc: free memory as ranges; CMA (scratch) pageblocks only for movable requests."""

import random
from array import array

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.mm.page_alloc import PAGE_POISON, Folio, PageAllocator, PagePrivate, PfnRanges
from sim.physmem import PhysMem


def allocator(scrub: bool = False) -> PageAllocator:
    return PageAllocator(PhysMem(1 << 30), scrub=scrub)


def test_blocks_are_naturally_aligned_and_taken_from_the_top() -> None:
    pa = allocator()
    pa.free_pages_memory(1, 1000)
    assert pa.alloc_pages(0) == Folio(999, 0)
    assert pa.alloc_pages(3) == Folio(984, 3)          # 992..999 is not free any more
    assert pa.nr_free_pages() == 999 - 1 - 8


def test_exhaustion_returns_none_and_free_restores() -> None:
    pa = allocator()
    pa.free_pages_memory(16, 24)
    f = pa.alloc_pages(3)
    assert f == Folio(16, 3)
    assert pa.alloc_pages(0) is None
    pa.free_folio(f)
    assert pa.alloc_pages(2) == Folio(20, 2)


def test_unmovable_requests_never_get_cma_pageblocks() -> None:
    pa = allocator()
    pa.free_pages_memory(0, 4096)
    pa.set_pageblock_migratetype_cma(2048, 4096)        # the top half is scratch
    f = pa.alloc_pages(9)
    assert f == Folio(1536, 9) and not pa.is_migrate_cma(f.pfn)
    assert pa.alloc_pages(9, movable=True) == Folio(3584, 9)


def test_cma_marking_rounds_to_whole_pageblocks() -> None:
    pa = allocator()
    pa.set_pageblock_migratetype_cma(700, 701)
    assert pa.is_migrate_cma(512) and pa.is_migrate_cma(1023)
    assert not pa.is_migrate_cma(511) and not pa.is_migrate_cma(1024)


def test_orders_above_max_page_order_are_refused() -> None:
    pa = allocator()
    pa.free_pages_memory(0, 1 << 12)
    assert pa.alloc_pages(11) is None and pa.alloc_pages(-1) is None


def test_a_scrubbing_machine_poisons_memory_as_it_is_freed() -> None:
    pa = allocator(scrub=True)
    pa._physmem.write(0x5000, b"secret")
    pa.free_pages_memory(5, 6)
    assert pa._physmem.read(0x5000, 6) == bytes([PAGE_POISON]) * 6
    assert pa.totalram_pages == 1


def test_page_private_is_the_last_write_of_each_pfn() -> None:
    """Bulk writes (a deserialized bitmap), single writes (a restore clearing it) and bulk writes
    of another value over them, in any order: expect what a struct page array would hold."""
    rng = random.Random(3)
    private, model = PagePrivate(), {}
    for _ in range(300):
        pfns = [rng.randrange(64) for _ in range(rng.randrange(1, 6))]
        value = rng.randrange(4)
        if rng.random() < 0.5:
            private.set_many(pfns, value)
            model.update(dict.fromkeys(pfns, value))
        else:
            private.set(pfns[0], value)
            model[pfns[0]] = value
        probe = rng.randrange(64)
        assert private.get(probe) == model.get(probe, 0)
    assert [private.get(p) for p in range(64)] == [model.get(p, 0) for p in range(64)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), max_size=12),
       st.integers(0, 90), st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6)), max_size=12))
def test_add_sorted_joins_and_appends_as_add_many(before: list[tuple[int, int]], pos: int,
                                                  steps: list[tuple[int, int]]) -> None:
    """memblock_free_all's bulk path: ranges in address order, some touching, some empty, some
    touching or below what is already free; the result is add_many's, one range at a time."""
    fast, slow = PfnRanges(), PfnRanges()
    for s, n in before:
        fast.add(s, s + n + 1)
        slow.add(s, s + n + 1)
    starts, ends = array("Q"), array("Q")
    for gap, n in steps:
        pos += gap
        starts.append(pos)
        ends.append(pos + n)
        pos += n
    fast.add_sorted(array("Q", starts), array("Q", ends))
    slow.add_many(zip(starts, ends, strict=True))
    assert (fast.start, fast.end) == (slow.start, slow.end)
