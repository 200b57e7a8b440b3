"""kernel/dma/swiotlb.c at boot, as x86's pci_iommu_alloc() (arch/x86/kernel/pci-dma.c) sets it up.

The default bounce buffer matters to KHO because it is allocated in mm_core_init()
before kho_memory_init(): its 64 MiB below 4 GiB and its slot array are RSV_KERN
memory, so they enter the default scratch sizes (200% of RSV_KERN memory).
Sizes are the kernel's (Linux 6.16): IO_TLB_SHIFT 11, IO_TLB_SEGSIZE 128,
IO_TLB_DEFAULT_SIZE 64 MiB, 24-byte struct io_tlb_slot, 16-byte struct io_tlb_area.
"""

from dataclasses import dataclass

from sim.kernel.panic import KernelPanic
from sim.kernel.printk import Printk
from sim.lib.kstrtox import simple_strtoull
from sim.mm.memblock import Memblock
from sim.sizes import PAGE_ALIGN, PAGE_SHIFT, PAGE_SIZE, SMP_CACHE_BYTES, SZ_1M, U64_MAX, round_up

PR_FMT = "software IO TLB: "
IO_TLB_SHIFT = 11
IO_TLB_SEGSIZE = 128
IO_TLB_DEFAULT_SIZE = 64 << 20
IO_TLB_MIN_SLABS = SZ_1M >> IO_TLB_SHIFT
IO_TLB_SLOT_SIZE = 24        # struct io_tlb_slot { phys_addr_t; size_t; unsigned short; unsigned short; }
IO_TLB_AREA_SIZE = 16        # struct io_tlb_area { unsigned long; unsigned int; spinlock_t; }
MAX_DMA32_PFN = 1 << (32 - PAGE_SHIFT)


def _roundup_pow_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


@dataclass
class Swiotlb:
    """io_tlb_default_mem and the boot-time knobs (`swiotlb=`) that size it."""

    default_nslabs: int = IO_TLB_DEFAULT_SIZE >> IO_TLB_SHIFT
    default_nareas: int = 0
    force_bounce: bool = False
    force_disable: bool = False
    start: int = 0
    nslabs: int = 0

    def swiotlb_adjust_nareas(self, nareas: int, printk: Printk) -> None:
        nareas = _roundup_pow_of_two(nareas) if nareas else 1
        self.default_nareas = nareas
        printk.pr_info(f"{PR_FMT}area num {nareas}.")

    def setup_io_tlb_npages(self, p: str, printk: Printk) -> None:
        """early_param("swiotlb"): [slabs][,areas][,force|noforce]; never reports an error."""
        if p[:1].isdigit():
            nslabs, p = simple_strtoull(p, 0)
            self.default_nslabs = round_up(nslabs, IO_TLB_SEGSIZE) & U64_MAX
        if p[:1] == ",":
            p = p[1:]
        if p[:1].isdigit():
            nareas, p = simple_strtoull(p, 0)
            self.swiotlb_adjust_nareas(nareas & 0xFFFFFFFF, printk)
        if p[:1] == ",":
            p = p[1:]
        if p == "force":
            self.force_bounce = True
        elif p == "noforce":
            self.force_disable = True

    def swiotlb_init_remap(self, addressing_limit: bool, mb: Memblock, printk: Printk, nr_cpus: int) -> None:
        """What swiotlb_init() runs (no remap): the bounce buffer from low memory, then its slots.

        Named for the function that makes the memblock calls, as memblock=debug names it."""
        if not addressing_limit and not self.force_bounce:
            return
        if self.force_disable:
            return
        if not self.default_nareas:
            self.swiotlb_adjust_nareas(nr_cpus, printk)
        nslabs = self.default_nslabs
        nareas = self._limit_nareas(self.default_nareas, nslabs)
        while True:
            nbytes = PAGE_ALIGN((nslabs << IO_TLB_SHIFT) & U64_MAX) & U64_MAX
            tlb = mb.alloc_low(nbytes, PAGE_SIZE)
            if tlb:
                break
            printk.pr_warn(f"{PR_FMT}swiotlb_memblock_alloc: Failed to allocate {nbytes} bytes tlb structure")
            if nslabs <= IO_TLB_MIN_SLABS:
                return
            nslabs = round_up(nslabs >> 1, IO_TLB_SEGSIZE)
            nareas = self._limit_nareas(nareas, nslabs)
        if self.default_nslabs != nslabs:
            printk.pr_info(f"{PR_FMT}SWIOTLB bounce buffer size adjusted {self.default_nslabs} -> "
                           f"{nslabs} slabs")
            self.default_nslabs = nslabs
        slots = PAGE_ALIGN(IO_TLB_SLOT_SIZE * nslabs)
        if not mb.alloc(slots, PAGE_SIZE):
            raise KernelPanic(f"swiotlb_init_remap: Failed to allocate {slots} bytes align=0x{PAGE_SIZE:x}")
        areas = IO_TLB_AREA_SIZE * nareas
        if not mb.alloc(areas, SMP_CACHE_BYTES):
            raise KernelPanic(f"swiotlb_init_remap: Failed to allocate {areas} bytes "
                              f"align=0x{SMP_CACHE_BYTES:x}")
        self.start, self.nslabs = tlb, nslabs

    @staticmethod
    def _limit_nareas(nareas: int, nslots: int) -> int:
        return nslots // IO_TLB_SEGSIZE if nslots < nareas * IO_TLB_SEGSIZE else nareas

    def swiotlb_print_info(self, printk: Printk) -> None:
        if not self.nslabs:
            printk.pr_warn(f"{PR_FMT}No low mem")
            return
        end = self.start + (self.nslabs << IO_TLB_SHIFT)
        printk.pr_info(f"{PR_FMT}mapped [mem 0x{self.start:016x}-0x{end:016x}] "
                       f"({(self.nslabs << IO_TLB_SHIFT) >> 20}MB)")
