"""Sparse simulated physical memory.

A 1 TiB machine must cost what it touches, not what it has: written pages are
materialised one by one, and ``fill`` (the poison pattern a scrubbing kernel
lays over free memory) is recorded as a run of one byte value, so its cost does
not depend on its length.  Memory that was never written nor filled reads 0.
"""

import struct
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Sequence

from sim.sizes import PAGE_SHIFT, PAGE_SIZE


class PhysMem:
    """Byte-addressable RAM ``[0, size)`` made of materialised pages over fill runs."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"physical memory size must be positive, not {size:#x}")
        self.size = size
        self._pages: dict[int, bytearray] = {}
        self._pfns: list[int] = []            # the keys of _pages, sorted: ranges find theirs by bisect
        # Non-overlapping runs [start, end) of one byte value, sorted; absent = 0x00.
        self._run_start: list[int] = []
        self._run_end: list[int] = []
        self._run_value: list[int] = []

    @property
    def materialized_pages(self) -> int:
        """Pages that cost host memory: the measure of sparseness."""
        return len(self._pages)

    def _check(self, phys: int, n: int) -> None:
        if phys < 0 or n < 0 or phys + n > self.size:
            raise ValueError(
                f"physical access [{phys:#x}, {phys + n:#x}) outside RAM [0x0, {self.size:#x})")

    def _synthesize(self, start: int, end: int) -> bytearray:
        """Bytes of [start, end) as the fill runs say, ignoring materialised pages."""
        out = bytearray(end - start)
        i = bisect_right(self._run_end, start)
        while i < len(self._run_start) and self._run_start[i] < end:
            a = max(self._run_start[i], start)
            b = min(self._run_end[i], end)
            out[a - start:b - start] = bytes((self._run_value[i],)) * (b - a)
            i += 1
        return out

    def _materialized_in(self, first: int, last: int) -> list[int]:
        """Materialised pfns in [first, last], found by bisect rather than by visiting pages."""
        return self._pfns[bisect_left(self._pfns, first):bisect_right(self._pfns, last)]

    def _page(self, pfn: int) -> bytearray:
        page = self._pages.get(pfn)
        if page is None:
            base = pfn << PAGE_SHIFT
            page = self._synthesize(base, base + PAGE_SIZE)
            self._pages[pfn] = page
            insort(self._pfns, pfn)
        return page

    def read(self, phys: int, n: int) -> bytes:
        """One buffer laid from the fill runs, then the materialised pages inside it copied over."""
        self._check(phys, n)
        if not n:
            return b""
        end = phys + n
        first = phys >> PAGE_SHIFT
        page = self._pages.get(first)
        if page is not None and end <= (first + 1) << PAGE_SHIFT:
            off = phys & (PAGE_SIZE - 1)
            return bytes(page[off:off + n])
        out = self._synthesize(phys, end)
        for pfn in self._materialized_in(first, (end - 1) >> PAGE_SHIFT):
            base = pfn << PAGE_SHIFT
            a, b = max(phys, base), min(end, base + PAGE_SIZE)
            out[a - phys:b - phys] = self._pages[pfn][a - base:b - base]
        return bytes(out)

    def write(self, phys: int, data: bytes) -> None:
        self._check(phys, len(data))
        pos, end, src = phys, phys + len(data), 0
        while pos < end:
            pfn = pos >> PAGE_SHIFT
            chunk_end = min(end, (pfn + 1) << PAGE_SHIFT)
            off = pos & (PAGE_SIZE - 1)
            self._page(pfn)[off:off + chunk_end - pos] = data[src:src + chunk_end - pos]
            src += chunk_end - pos
            pos = chunk_end

    def fill(self, phys: int, n: int, value: int) -> None:
        """Set [phys, phys+n) to one byte value without materialising anything new."""
        self._check(phys, n)                  # a range error is reported before a value error
        self.fill_many(((phys, n),), value)

    def fill_many(self, ranges: Iterable[tuple[int, int]], value: int) -> None:
        """fill() of each (phys, n) in turn: a kernel poisoning a million free ranges pays the
        checks and look-ups of one call, not a million."""
        if not 0 <= value <= 0xFF:
            raise ValueError(f"fill value {value:#x} is not a byte")
        pfns, pages, size = self._pfns, self._pages, self.size
        run_start, run_end, run_value = self._run_start, self._run_end, self._run_value
        for phys, n in ranges:
            if phys < 0 or n < 0 or phys + n > size:
                self._check(phys, n)
            if n == 0:
                continue
            end = phys + n
            i = bisect_left(run_end, phys)     # the first run ending at or after phys
            if not (i < len(run_start) and run_start[i] <= phys and end <= run_end[i]
                    and run_value[i] == value):
                self._set_run(phys, end, value, i)      # else already so: a scrub of poisoned memory
            lo = bisect_left(pfns, phys >> PAGE_SHIFT)
            if lo == len(pfns) or pfns[lo] > (end - 1) >> PAGE_SHIFT:
                continue                      # nothing materialised in it: the usual case
            for pfn in self._materialized_in(phys >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT):
                base = pfn << PAGE_SHIFT
                if phys <= base and base + PAGE_SIZE <= end:
                    del pages[pfn]            # the run now says it all
                    del pfns[bisect_left(pfns, pfn)]
                else:
                    a, b = max(phys, base), min(end, base + PAGE_SIZE)
                    pages[pfn][a - base:b - base] = bytes((value,)) * (b - a)

    def fill_pfn_ranges(self, start_pfns: Sequence[int], end_pfns: Sequence[int], value: int) -> None:
        """fill_many() of the page ranges [start_pfns[k], end_pfns[k]), given in address order and
        disjoint (memblock_free_all's million free ranges): every range lying inside a run already
        holding value, with no materialised page up to that run's end, is skipped in bulk by
        bisect, so re-poisoning poisoned memory costs per run, not per range."""
        if not 0 <= value <= 0xFF:
            raise ValueError(f"fill value {value:#x} is not a byte")
        pfns, run_start, run_end, run_value = self._pfns, self._run_start, self._run_end, self._run_value
        k, total = 0, len(start_pfns)
        while k < total:
            s = start_pfns[k]
            i = bisect_left(run_end, s << PAGE_SHIFT)
            if i < len(run_start) and run_start[i] <= s << PAGE_SHIFT and run_value[i] == value:
                limit = run_end[i] >> PAGE_SHIFT      # whole pages of this run from s on
                m = bisect_left(pfns, s)
                if m < len(pfns):
                    limit = min(limit, pfns[m])       # up to the next materialised page
                skip = bisect_right(end_pfns, limit, k)
                if skip > k:
                    k = skip
                    continue
            self.fill_many(((s << PAGE_SHIFT, (end_pfns[k] - s) << PAGE_SHIFT),), value)
            k += 1

    def _set_run(self, start: int, end: int, value: int, i: int) -> None:
        """Make [start, end) one run of value, joined with neighbouring runs of the same value,
        so that poisoning every free range between a million preserved folios stays one run;
        i is the first run ending at or after start."""
        j = bisect_right(self._run_start, end)    # the first run starting after end
        starts, ends, values = [], [], []
        if i < j and self._run_start[i] < start:
            if self._run_value[i] == value:
                start = self._run_start[i]
            else:
                starts.append(self._run_start[i])
                ends.append(start)
                values.append(self._run_value[i])
        tail = None
        if i < j and self._run_end[j - 1] > end:
            if self._run_value[j - 1] == value:
                end = self._run_end[j - 1]
            else:
                tail = (end, self._run_end[j - 1], self._run_value[j - 1])
        if value:
            starts.append(start)
            ends.append(end)
            values.append(value)
        if tail is not None:
            starts.append(tail[0])
            ends.append(tail[1])
            values.append(tail[2])
        self._run_start[i:j] = starts
        self._run_end[i:j] = ends
        self._run_value[i:j] = values

    def read_u64(self, phys: int) -> int:
        return struct.unpack("<Q", self.read(phys, 8))[0]

    def write_u64(self, phys: int, value: int) -> None:
        self.write(phys, struct.pack("<Q", value))

    def read_u16(self, phys: int) -> int:
        return struct.unpack("<H", self.read(phys, 2))[0]

    def read_u32(self, phys: int) -> int:
        return struct.unpack("<I", self.read(phys, 4))[0]
