"""The KHO sanitizer: a khofs instrument that knows what was truly preserved, outside the kernel.

Linux 6.16 cannot tell a KHO user that it revived or restored memory nobody preserved, that
a preserved folio went back to the page allocator before the kexec, that a preservation
lies in scratch, or that the serialized chunk list lost (or invented) a block.  The
sanitizer can, because it watches the calls, not RAM: like a hardware tracer or KASAN's
shadow memory it lives on the Machine, records each kho_preserve_*/unpreserve/abort of the
running kernel and each page allocation and free, and at the kexec hands that record over
to itself, never to the kernel.  The new kernel still learns every bit of its state from
RAM; the sanitizer only adds `khofs: KHO sanitizer:` log lines (KERN_ERR) and never changes
what the kernel does, so a run with it on behaves exactly as one with it off.

Off by default (`Machine(kho_sanitizer=True)`, `--kho-sanitizer`).
"""

from dataclasses import dataclass, field

from sim.kernel.kexec_handover import KhoMemMapError, kho_mem_chunks_checked
from sim.kernel.printk import Printk
from sim.mm.page_alloc import PfnRanges
from sim.physmem import PhysMem
from sim.sizes import PAGE_SHIFT

PREFIX = "khofs: KHO sanitizer: "


def _mem(start: int, end: int) -> str:
    """A [start, end) range as the kernel's %pr-style `[mem a-b]`."""
    return f"[mem {start:#018x}-{end - 1:#018x}]"


def _merge(blocks: list[tuple[int, int]]) -> PfnRanges:
    """(pfn, order) blocks as merged pfn ranges (added in address order: each add is an append)."""
    out = PfnRanges()
    for pfn, order in sorted(blocks):
        out.add(pfn, pfn + (1 << order))
    return out


def _pfn_mem(s: int, e: int) -> str:
    return _mem(s << PAGE_SHIFT, e << PAGE_SHIFT)


@dataclass
class _Truth:
    """What one kernel preserved, as pfns of naturally aligned blocks by order, and what it did after."""

    orders: dict[int, set[int]] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)               # reported in the next kernel
    _ranges: PfnRanges | None = None                                # merged, built when first asked

    @property
    def blocks(self) -> set[tuple[int, int]]:
        return {(pfn, order) for order, pfns in self.orders.items() for pfn in pfns}

    @property
    def ranges(self) -> PfnRanges:
        if self._ranges is None:
            self._ranges = _merge(list(self.blocks))
        return self._ranges

    def add(self, pfn: int, order: int) -> None:
        self.orders.setdefault(order, set()).add(pfn)
        self._ranges = None

    def discard(self, pfn: int, order: int) -> None:
        self.orders.get(order, set()).discard(pfn)
        self._ranges = None

    def hits(self, pfn: int, order: int) -> list[tuple[int, int]]:
        """The preserved pfn ranges inside the block (pfn, order): set lookups, no scan of the truth.

        A preserved block of order >= `order` overlapping it must contain it (natural alignment);
        smaller ones are enumerated (at most 2**order lookups per order: page blocks are <= 10)."""
        end = pfn + (1 << order)
        found = []
        for o, pfns in self.orders.items():
            if o >= order:
                head = pfn >> o << o
                if head in pfns:
                    found.append((pfn, end))
            else:
                found += [(sub, sub + (1 << o)) for sub in range(pfn, end, 1 << o) if sub in pfns]
        return list(_merge([(s, (e - s).bit_length() - 1) for s, e in found]))

    def first_gap(self, start_pfn: int, end_pfn: int) -> int | None:
        """The first pfn of [start_pfn, end_pfn) not preserved, or None."""
        cur = start_pfn
        for s, e in self.ranges.overlapping(start_pfn, end_pfn):
            if s > cur:
                return cur
            cur = e
        return cur if cur < end_pfn else None


class KhoSanitizer:
    """One machine's sanitizer: the running kernel's truth and the truth it was handed."""

    def __init__(self) -> None:
        self.current = _Truth()
        self.handed: _Truth | None = None
        self.log: list[str] = []               # every line reported, all generations: khofs/kho_sanitizer
        self.generation = 0

    # -- the running kernel's calls --

    def preserved(self, pfn: int, order: int) -> None:
        self.current.add(pfn, order)

    def unpreserved(self, pfn: int, order: int) -> None:
        self.current.discard(pfn, order)

    def aborted(self) -> None:
        """kho_abort frees the whole tracker: nothing stays preserved."""
        self.current = _Truth(findings=self.current.findings)

    def page_freed(self, pfn: int, order: int) -> None:
        self._page_event(pfn, order, "freed to the page allocator")

    def page_allocated(self, pfn: int, order: int) -> None:
        self._page_event(pfn, order, "reallocated by the page allocator")

    def _page_event(self, pfn: int, order: int, what: str) -> None:
        for hit in self.current.hits(pfn, order) if self.current.orders else ():
            self.current.findings.append(
                f"preserved memory {_pfn_mem(*hit)} {what} before the kexec: its next owner's bytes "
                "reach the new kernel")

    # -- the kexec --

    def kexec(self, scratch: list[tuple[int, int]]) -> None:
        """machine_kexec: freeze the outgoing kernel's truth (and check it against its scratch)."""
        truth = self.current
        for s, e in scratch:
            for hit in truth.ranges.overlapping(s >> PAGE_SHIFT, (e + (1 << PAGE_SHIFT) - 1) >> PAGE_SHIFT):
                truth.findings.append(f"preserved memory {_pfn_mem(*hit)} overlaps scratch {_mem(s, e)}: "
                                      "the new kernel allocates from it before it reads the preserved map")
        self.handed, self.current = truth, _Truth()
        self.generation += 1

    # -- reports in the new kernel --

    def report(self, printk: Printk, text: str) -> None:
        printk.pr_err(PREFIX + text)
        self.log.append(f"gen {self.generation}: {PREFIX}{text}")

    def kho_boot(self, printk: Printk, physmem: PhysMem, first: int | None, preserve_bits: int) -> None:
        """kho_memory_init of a KHO boot: the old kernel's findings, then the chunk list vs the truth."""
        if self.handed is None:
            return
        for text in self.handed.findings:
            self.report(printk, text)
        listed: set[tuple[int, int]] = set()
        try:
            chunks = kho_mem_chunks_checked(physmem.read, first or 0, preserve_bits, physmem.size)
            for chunk, contents in chunks:
                for (phys_start, _), bits in zip(chunk.bitmaps, contents, strict=True):
                    base = phys_start >> PAGE_SHIFT
                    while bits:
                        low = bits & -bits
                        bits ^= low
                        listed.add((base + ((low.bit_length() - 1) << chunk.order), chunk.order))
        except KhoMemMapError as e:
            self.report(printk, f"the preserved memory map cannot be walked: {e}")
        for (s, e), order in _by_order(self.handed.blocks - listed):
            self.report(printk, f"preserved memory {_pfn_mem(s, e)} (order {order}) is missing from the "
                        "preserved memory map: the new kernel will not keep it")
        for (s, e), order in _by_order(listed - self.handed.blocks):
            self.report(printk, f"the preserved memory map lists {_pfn_mem(s, e)} (order {order}), "
                        "which was never preserved")

    def claim(self, printk: Printk, what: str, phys: int, size: int, map_problem: str | None) -> bool:
        """A revival or restore in the new kernel: against the truth, then the map's own verdict."""
        where = f"{what} {_mem(phys, phys + size)}"
        end_pfn = (phys + size + (1 << PAGE_SHIFT) - 1) >> PAGE_SHIFT
        handed = self.handed or _Truth()
        gap = handed.first_gap(phys >> PAGE_SHIFT, end_pfn)
        if gap is not None:
            self.report(printk, f"{where} was never preserved (from {gap << PAGE_SHIFT:#x} on); "
                        "its contents are lost")
            return False
        if map_problem is not None:
            self.report(printk, f"{where} {map_problem}; its contents are lost")
            return False
        return True


def _by_order(blocks: set[tuple[int, int]]) -> list[tuple[tuple[int, int], int]]:
    """Merged pfn ranges per order, ascending by address."""
    orders: dict[int, set[tuple[int, int]]] = {}
    for pfn, order in blocks:
        orders.setdefault(order, set()).add((pfn, order))
    return sorted((r, order) for order, group in orders.items() for r in _merge(group))
