"""mm/page_alloc.c: the page allocator memblock hands memory to at memblock_free_all().

A 1 TiB machine has 268M pages, so free memory is kept as sorted pfn ranges,
never as per-page objects.  Pageblocks marked MIGRATE_CMA (the KHO scratch
areas) only serve movable allocations, which is what lets the next kernel reuse
scratch without meeting unmovable kernel data there.  struct page state that
KHO needs (page->private of preserved pages) is kept sparsely by pfn.
"""

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import compress
from operator import ge, lt, ne
from typing import TYPE_CHECKING

from sim.physmem import PhysMem
from sim.sizes import MAX_PAGE_ORDER, PAGE_SHIFT, PAGE_SIZE, pageblock_order

if TYPE_CHECKING:
    from sim.kho_sanitizer import KhoSanitizer

pageblock_nr_pages = 1 << pageblock_order
# The byte a scrubbing machine lays over memory the kernel may reuse (PAGE_POISON_PATTERN).
PAGE_POISON = 0xAA


@dataclass(frozen=True)
class Folio:
    """A naturally aligned block of 2**order pages."""

    pfn: int
    order: int

    @property
    def phys(self) -> int:
        return self.pfn << PAGE_SHIFT

    @property
    def size(self) -> int:
        return PAGE_SIZE << self.order


class PfnRanges:
    """Sorted, disjoint, merged [start, end) pfn ranges, as two u64 arrays (16 bytes a range:
    after a big hand-over the free memory is a million gaps between preserved folios)."""

    def __init__(self) -> None:
        self.start = array("Q")
        self.end = array("Q")

    def add(self, s: int, e: int) -> None:
        self.add_many(((s, e),))

    def add_many(self, ranges: Iterable[tuple[int, int]]) -> None:
        """add() of each range in turn; memblock_free_all's come in address order, each past
        the last range here, so they are appended."""
        start, end = self.start, self.end
        for s, e in ranges:
            if not end or s > end[-1]:
                start.append(s)
                end.append(e)
            else:
                self._merge(s, e)

    def add_sorted(self, starts: array, ends: array) -> None:
        """add_many() of ranges in address order, none overlapping the next (memblock_free_all's):
        those that touch are joined and the rest appended, with whole-array operations; anything
        else goes one range at a time.  The arrays are the caller's to give up."""
        if not starts or (self.end and starts[0] < self.end[-1]) or \
                not all(map(ge, starts[1:], ends[:-1])):
            self.add_many(zip(starts, ends, strict=True))
            return
        if self.end and starts[0] == self.end[-1]:
            starts[0] = self.start.pop()
            self.end.pop()
        apart = list(map(ne, starts[1:], ends[:-1]))      # False where a range ends as the next starts
        self.start.extend(compress(starts, [True, *apart]))
        self.end.extend(compress(ends, [*apart, True]))

    def _merge(self, s: int, e: int) -> None:
        i = bisect_left(self.end, s)          # first range ending at or after s
        j = bisect_right(self.start, e)       # first range starting after e
        if i < j:
            s = min(s, self.start[i])
            e = max(e, self.end[j - 1])
        self.start[i:j] = array("Q", (s,))
        self.end[i:j] = array("Q", (e,))

    def remove(self, s: int, e: int) -> None:
        i = bisect_right(self.end, s)
        j = bisect_left(self.start, e)
        keep_s, keep_e = [], []
        if i < j and self.start[i] < s:
            keep_s.append(self.start[i])
            keep_e.append(s)
        if i < j and self.end[j - 1] > e:
            keep_s.append(e)
            keep_e.append(self.end[j - 1])
        self.start[i:j] = array("Q", keep_s)
        self.end[i:j] = array("Q", keep_e)

    def overlapping(self, s: int, e: int) -> list[tuple[int, int]]:
        i = bisect_right(self.end, s)
        out = []
        while i < len(self.start) and self.start[i] < e:
            out.append((max(s, self.start[i]), min(e, self.end[i])))
            i += 1
        return out

    def contains(self, s: int, e: int) -> bool:
        i = bisect_right(self.end, s)
        return i < len(self.start) and self.start[i] <= s and e <= self.end[i]

    def total(self) -> int:
        return sum(e - s for s, e in zip(self.start, self.end, strict=True))

    def __iter__(self):
        return iter(zip(self.start, self.end, strict=True))


class PagePrivate:
    """page->private of the pages that have one, by pfn: 8 bytes a page where a million are set.

    Bulk writes (KHO deserializing a bitmap) append to a sorted-on-demand u64 array of pfns per
    run of writes of one value; single writes go to a dict over them.  A read looks at the
    dict, then at the runs newest first, so the last write of a pfn wins as in struct page.
    """

    def __init__(self) -> None:
        self._runs: list[tuple[int, array]] = []      # (value, pfns), oldest first
        self._sorted = True
        self._single: dict[int, int] = {}

    def set_many(self, pfns: Iterable[int], value: int) -> None:
        pfns = array("Q", pfns)
        for pfn in pfns if self._single else ():
            self._single.pop(pfn, None)
        if self._runs and self._runs[-1][0] == value:
            self._runs[-1][1].extend(pfns)
        else:
            self._runs.append((value, pfns))
        self._sorted = False

    def set(self, pfn: int, value: int) -> None:
        self._single[pfn] = value

    def get(self, pfn: int) -> int:
        value = self._single.get(pfn)
        if value is not None:
            return value
        if not self._sorted:
            self._runs = [(v, array("Q", sorted(pfns))) for v, pfns in self._runs]
            self._sorted = True
        for v, pfns in reversed(self._runs):
            i = bisect_left(pfns, pfn)
            if i < len(pfns) and pfns[i] == pfn:
                return v
        return 0


class PageAllocator:
    """Buddy-allocator behaviour at the granularity the simulation needs."""

    def __init__(self, physmem: PhysMem, scrub: bool = False,
                 kho_sanitizer: "KhoSanitizer | None" = None) -> None:
        self._physmem = physmem
        self._scrub = scrub
        self._kho_sanitizer = kho_sanitizer     # a khofs instrument: told, never asked
        self._free = PfnRanges()
        self._cma = PfnRanges()
        # page->private of pages KHO handed over, by pfn.
        self.page_private = PagePrivate()
        self.totalram_pages = 0

    def set_pageblock_migratetype_cma(self, start_pfn: int, end_pfn: int) -> None:
        """set_pageblock_migratetype(MIGRATE_CMA) for every pageblock of [start_pfn, end_pfn)."""
        s = start_pfn & ~(pageblock_nr_pages - 1)
        e = -(-end_pfn // pageblock_nr_pages) * pageblock_nr_pages
        self._cma.add(s, e)

    def is_migrate_cma(self, pfn: int) -> bool:
        return self._cma.contains(pfn, pfn + 1)

    def free_pages_memory(self, start_pfn: int, end_pfn: int) -> None:
        """__free_pages_memory(): memory leaves memblock for good; a scrubbing machine poisons it now."""
        self.free_pages_memory_many(array("Q", (start_pfn,)), array("Q", (end_pfn,)))

    def free_pages_memory_many(self, start_pfns: array, end_pfns: array) -> None:
        """free_pages_memory() of each [start_pfns[i], end_pfns[i]) in turn (memblock_free_all's
        million ranges after a big hand-over), as whole-array operations and one fill call."""
        keep = list(map(lt, start_pfns, end_pfns))
        starts = array("Q", compress(start_pfns, keep))
        ends = array("Q", compress(end_pfns, keep))
        del keep
        if self._scrub:
            self._physmem.fill_pfn_ranges(starts, ends, PAGE_POISON)
        self.totalram_pages += sum(ends) - sum(starts)
        self._free.add_sorted(starts, ends)

    def alloc_pages(self, order: int, movable: bool = False) -> Folio | None:
        """The highest free naturally aligned block; unmovable requests never take CMA pageblocks."""
        if not 0 <= order <= MAX_PAGE_ORDER:
            return None
        n = 1 << order
        free = self._free
        for idx in range(len(free.start) - 1, -1, -1):
            s, e = free.start[idx], free.end[idx]
            pieces = [(s, e)] if movable else self._without_cma(s, e)
            for ps, pe in reversed(pieces):
                pfn = (pe - n) & ~(n - 1)
                if pfn >= ps and pfn + n <= pe:
                    self._free.remove(pfn, pfn + n)
                    if self._kho_sanitizer is not None:
                        self._kho_sanitizer.page_allocated(pfn, order)
                    return Folio(pfn, order)
        return None

    def _without_cma(self, s: int, e: int) -> list[tuple[int, int]]:
        pieces, cur = [], s
        for cs, ce in self._cma.overlapping(s, e):
            if cur < cs:
                pieces.append((cur, cs))
            cur = ce
        if cur < e:
            pieces.append((cur, e))
        return pieces

    def free_folio(self, folio: Folio) -> None:
        if self._kho_sanitizer is not None:
            self._kho_sanitizer.page_freed(folio.pfn, folio.order)
        self._free.add(folio.pfn, folio.pfn + (1 << folio.order))

    def nr_free_pages(self) -> int:
        return self._free.total()
