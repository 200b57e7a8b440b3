"""Sparse simulated physical memory.

A 1 TiB machine must cost what it touches, not what it has: written pages are
materialised one by one, and ``fill`` (the poison pattern a scrubbing kernel
lays over free memory) is recorded as a run of one byte value, so its cost does
not depend on its length.  Memory that was never written nor filled reads 0.
"""

import struct
from bisect import bisect_left, bisect_right

from sim.sizes import PAGE_SHIFT, PAGE_SIZE


class PhysMem:
    """Byte-addressable RAM ``[0, size)`` made of materialised pages over fill runs."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"physical memory size must be positive, not {size:#x}")
        self.size = size
        self._pages: dict[int, bytearray] = {}
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
            if self._run_value[i]:
                out[a - start:b - start] = bytes([self._run_value[i]]) * (b - a)
            i += 1
        return out

    def _page(self, pfn: int) -> bytearray:
        page = self._pages.get(pfn)
        if page is None:
            base = pfn << PAGE_SHIFT
            page = self._synthesize(base, base + PAGE_SIZE)
            self._pages[pfn] = page
        return page

    def read(self, phys: int, n: int) -> bytes:
        self._check(phys, n)
        out = bytearray()
        pos, end = phys, phys + n
        while pos < end:
            pfn = pos >> PAGE_SHIFT
            chunk_end = min(end, (pfn + 1) << PAGE_SHIFT)
            page = self._pages.get(pfn)
            if page is None:
                # Coalesce the run of unmaterialised pages into one synthesis.
                while chunk_end < end and (chunk_end >> PAGE_SHIFT) not in self._pages:
                    chunk_end = min(end, chunk_end + PAGE_SIZE)
                out += self._synthesize(pos, chunk_end)
            else:
                off = pos & (PAGE_SIZE - 1)
                out += page[off:off + chunk_end - pos]
            pos = chunk_end
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
        self._check(phys, n)
        if not 0 <= value <= 0xFF:
            raise ValueError(f"fill value {value:#x} is not a byte")
        if n == 0:
            return
        end = phys + n
        self._set_run(phys, end, value)
        first, last = phys >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT
        if last - first + 1 <= len(self._pages):
            touched = [p for p in range(first, last + 1) if p in self._pages]
        else:
            touched = [p for p in self._pages if first <= p <= last]
        for pfn in touched:
            base = pfn << PAGE_SHIFT
            if phys <= base and base + PAGE_SIZE <= end:
                del self._pages[pfn]          # the run now says it all
            else:
                a, b = max(phys, base), min(end, base + PAGE_SIZE)
                self._pages[pfn][a - base:b - base] = bytes([value]) * (b - a)

    def _set_run(self, start: int, end: int, value: int) -> None:
        i = bisect_right(self._run_end, start)
        j = bisect_left(self._run_start, end)
        starts, ends, values = [], [], []
        if i < j and self._run_start[i] < start:
            starts.append(self._run_start[i])
            ends.append(start)
            values.append(self._run_value[i])
        if value:
            starts.append(start)
            ends.append(end)
            values.append(value)
        if i < j and self._run_end[j - 1] > end:
            starts.append(end)
            ends.append(self._run_end[j - 1])
            values.append(self._run_value[j - 1])
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
