"""arch/x86/kernel: the x86_64 hooks generic code calls (setup_arch, bzImage64 kexec loader, purgatory).

setup_arch and its steps (e820, setup_data, the real-mode trampoline, NUMA from the SRAT),
x86's early parameters (mem=, iommu=), swiotlb's detection and report, and /proc/iomem; the
bzImage64 loader is kexec_bzimage64.py beside this file.
"""

import errno
import os
from typing import TYPE_CHECKING, ClassVar

from sim.arch import Arch, KexecFileOps
from sim.arch.x86.boot.bzimage import apply_builtin_cmdline, bzImage64_probe
from sim.arch.x86.bootparam import (
    E820_TYPE_RAM,
    E820_TYPE_RESERVED,
    KHO_DATA_SIZE,
    SETUP_DATA_HDR_SIZE,
    SETUP_KEXEC_KHO,
    BootParams,
    E820Entry,
    KhoData,
    read_boot_command_line,
    walk_setup_data,
)
from sim.arch.x86.kernel.kexec_bzimage64 import bzImage64_load, read_entry64_regs
from sim.arch.x86.lib.csum_partial_64 import csum_partial
from sim.init.main import early
from sim.kernel.dma.swiotlb import MAX_DMA32_PFN
from sim.kernel.kexec_file import Kexec, Kimage
from sim.kernel.panic import KernelPanic
from sim.kernel.printk import LOGLEVEL_DEBUG
from sim.lib import cmdline as kcmdline
from sim.lib.cmdline import EarlyParam, Setup
from sim.mm.early_ioremap import early_memremap, read_phys
from sim.sizes import PAGE_ALIGN, PAGE_SIZE, PFN_DOWN, PHYS_ADDR_MAX, SZ_1M, SZ_64K, U64_MAX, round_down

if TYPE_CHECKING:
    from sim.init.main import Kernel


# arch/x86/kernel/ebda.c: where the BIOS data area says the EBDA and base memory end.
BIOS_EBDA_SEGMENT = 0x40E
BIOS_RAM_SIZE_KB_PTR = 0x413
BIOS_START_MIN = 0x20000
BIOS_START_MAX = 0x9F000
# asm/e820/types.h: the legacy ROM/video hole no RAM is believed in.
BIOS_BEGIN = 0xA0000
BIOS_END = 0x100000

# real_mode_size_needed(): the page-aligned size of the realmode blob linked into the image.  It is
# build-dependent; 0x7000 is what a memblock=debug log of a 6.6.36 x86_64 QEMU boot shows
# ("memblock_phys_alloc_range: 28672 bytes ... reserve_real_mode"), assumed unchanged in 6.16.
REAL_MODE_SIZE = 0x7000

_E820_NAMES = {1: "usable", 2: "reserved", 3: "ACPI data", 4: "ACPI NVS", 5: "unusable",
               7: "persistent (type 7)", 12: "persistent (type 12)", 128: "reserved"}


def e820_type_name(type_: int) -> str:
    return _E820_NAMES.get(type_, f"type {type_}")


LOWMEMSIZE = 0x9F000          # the fake map's low RAM when the boot loader's is unusable


def _append_e820_table(entries: list[E820Entry]) -> list[E820Entry] | None:
    """append_e820_table(): None (Linux's -1) for fewer than two entries or one that wraps."""
    if len(entries) < 2:
        return None
    if any(e.size and e.addr + e.size - 1 > U64_MAX for e in entries):
        return None
    return list(entries)


def e820__update_table(table: list[E820Entry]) -> list[E820Entry] | None:
    """Sanitize an e820 map as Linux does: sorted, no overlaps (the higher type wins where
    entries overlap), empty entries dropped, touching entries of one type merged.  None where
    Linux returns -1 and keeps the table as it was (fewer than two entries, one that wraps)."""
    if len(table) < 2 or any(e.addr + e.size > U64_MAX for e in table):
        return None
    # Change points: at one address, starts sort before ends (cpcompare()).
    points = sorted((addr, is_end, i) for i, e in enumerate(table) if e.size
                    for addr, is_end in ((e.addr, 0), (e.addr + e.size, 1)))
    overlap: dict[int, int] = {}
    out: list[E820Entry] = []
    last_type, last_addr = 0, 0
    for addr, is_end, i in points:
        if is_end:
            del overlap[i]
        else:
            overlap[i] = table[i].type
        current = max(overlap.values(), default=0)
        if current == last_type:
            continue
        if last_type and addr - last_addr:
            out.append(E820Entry(last_addr, addr - last_addr, last_type))
        if current:
            last_addr = addr
        last_type = current
    return out


def _bzImage64_probe(kexec: Kexec, kernel: bytes) -> int:
    return bzImage64_probe(kernel, kexec.host.printk)


class X86(Arch):
    """x86_64: boot_params and setup_data carry the hand-over (SETUP_KEXEC_KHO).

    The boot steps are arch/x86/kernel/setup.c's (and e820.c, ebda.c, realmode/init.c,
    pci-dma.c's); the state they leave (e820_table, the swiotlb decision) is the kernel's.
    """

    def __init__(self, kernel: "Kernel") -> None:
        super().__init__(kernel)
        self._e820_userdef = False

    name = "x86_64"
    uname_machine = "x86_64"
    kexec_file_loaders: ClassVar[tuple[KexecFileOps, ...]] = (
        KexecFileOps(_bzImage64_probe, bzImage64_load),)

    def setup_params(self) -> list[EarlyParam | Setup]:
        """arch/x86: mem= trims the e820 map, iommu= decides swiotlb; apic, noapic and earlyprintk
        are taken and not modelled."""
        return [EarlyParam("mem", early(self.parse_memopt)), EarlyParam("iommu", self.iommu_setup),
                *(EarlyParam(name, lambda _p: 0) for name in ("apic", "earlyprintk", "noapic"))]

    def csum_partial(self, data: bytes, wsum: int) -> int:
        return csum_partial(data, wsum)

    def rootfs_initcall(self) -> None:
        self.pci_iommu_init()

    def machine_kexec(self, image: Kimage) -> tuple[int, int]:
        """Purgatory's entry64_regs, now in RAM: rip - 0x200 is the kernel, rsi the boot_params."""
        regs = read_entry64_regs(self.k.physmem, image.start)
        return regs["rip"] - 0x200, regs["rsi"]

    def iomem(self) -> str:
        return self.e820_iomem()

    # -- setup_arch and its steps --

    def setup_arch(self) -> None:
        """x86 setup_arch(), reduced to what memblock and KHO observe, in the kernel's order."""
        bp = BootParams.read(self.k.physmem, self.k.boot_params_phys)   # copy_bootdata()
        bootloader = read_boot_command_line(self.k.physmem, bp)
        # Printed before CONFIG_CMDLINE is merged in, so only the boot loader's part shows.
        self.k.printk.pr_info(f"Command line: {bootloader}")
        self.k.boot_command_line = apply_builtin_cmdline(self.k.info.builtin_cmdline, bootloader)
        self.k.saved_command_line = self.k.boot_command_line
        self.early_reserve_memory(bp)
        self.e820__memory_setup(bp)
        self.parse_setup_data(bp)
        self._e820_userdef = False
        self.k.parse_early_param()
        self.e820__finish_early_params()
        self.e820__memblock_setup()
        self.reserve_real_mode()
        self.initmem_init()
        self.k.sparse_init()

    def early_reserve_memory(self, bp: BootParams) -> None:
        mb = self.k.memblock
        mb.reserve_kern(self.k.load_addr, self.k.info.init_size)
        # The first 64 KiB: page 0 must stay reserved (L1TF) and some BIOSes corrupt low memory.
        mb.reserve(0, SZ_64K)
        self.early_reserve_initrd(bp)
        self.memblock_x86_reserve_range_setup_data(bp)
        self.reserve_bios_regions()
        # trim_snb_memory() only acts on Sandy Bridge graphics, which q35 does not have.

    def reserve_bios_regions(self) -> None:
        """arch/x86/kernel/ebda.c: from the EBDA (or the BDA's base-memory size) up to 1 MiB."""
        ebda_start = self.k.physmem.read_u16(BIOS_EBDA_SEGMENT) << 4
        bios_start = self.k.physmem.read_u16(BIOS_RAM_SIZE_KB_PTR) << 10
        if not BIOS_START_MIN <= bios_start <= BIOS_START_MAX:
            bios_start = BIOS_START_MAX
        if BIOS_START_MIN < ebda_start < bios_start:
            bios_start = ebda_start
        bios_start = round_down(bios_start, PAGE_SIZE)
        self.k.memblock.reserve(bios_start, SZ_1M - bios_start)

    def early_reserve_initrd(self, bp: BootParams) -> None:
        image, size = bp.ramdisk_phys, bp.ramdisk_len
        if not bp.type_of_loader or not image or not size:
            return                      # no initrd provided by the boot loader
        self.k.memblock.reserve_kern(image, PAGE_ALIGN(image + size) - image)

    def memblock_x86_reserve_range_setup_data(self, bp: BootParams) -> None:
        for sd in walk_setup_data(self.k.physmem, bp.setup_data):
            self.k.memblock.reserve_kern(sd.phys, SETUP_DATA_HDR_SIZE + sd.len)

    def e820__memory_setup(self, bp: BootParams) -> None:
        """e820__memory_setup_default(): the boot loader's map, sanitized; a fake one if unusable."""
        who, table = "BIOS-e820", _append_e820_table(bp.e820_table)
        if table is None:
            if bp.alt_mem_k < bp.ext_mem_k:
                who, mem_size = "BIOS-88", bp.ext_mem_k
            else:
                who, mem_size = "BIOS-e801", bp.alt_mem_k
            table = [E820Entry(0, LOWMEMSIZE, E820_TYPE_RAM), E820Entry(SZ_1M, mem_size << 10, E820_TYPE_RAM)]
        table = e820__update_table(table) or table
        self.k.e820_table_kexec = list(table)
        self.k.e820_table = list(table)
        self.k.printk.pr_info("BIOS-provided physical RAM map:")
        self.e820__print_table(who)
        self._check_e820_ram()

    def e820__print_table(self, who: str) -> None:
        for e in self.k.e820_table:
            self.k.printk.pr_info(f"{who}: [mem {e.addr:#018x}-{e.addr + e.size - 1:#018x}] "
                                f"{e820_type_name(e.type)}")

    def parse_setup_data(self, bp: BootParams) -> None:
        for sd in walk_setup_data(self.k.physmem, bp.setup_data):
            if sd.type == SETUP_KEXEC_KHO:
                self.add_kho(sd.phys, sd.len + SETUP_DATA_HDR_SIZE)

    def add_kho(self, phys: int, data_len: int) -> None:
        # data_len is a u32 (setup_data.len + 16) and size = data_len - 16 a u64, so a len
        # below 16 wraps into a size early_memremap refuses.  A short but non-zero len still
        # maps the whole page, so all 32 bytes of struct kho_data are read.
        addr = phys + SETUP_DATA_HDR_SIZE
        size = ((data_len & 0xFFFFFFFF) - SETUP_DATA_HDR_SIZE) & U64_MAX
        if early_memremap(self.k.physmem, self.k.printk, addr, size) is None:
            self.k.printk.pr_warn(f"setup: failed to memremap kho data (0x{addr:x}, 0x{size:x})")
            return
        kho = KhoData.unpack(read_phys(self.k.physmem, addr, KHO_DATA_SIZE))
        self.k.kho.kho_populate(kho.fdt_addr, kho.fdt_size, kho.scratch_addr, kho.scratch_size)
        self.k.scrub_scratch()

    def iommu_setup(self, p: str | None) -> int:
        """early_param("iommu") (arch/x86/kernel/pci-dma.c): each comma-separated option is matched
        by prefix; `off` and `soft` decide swiotlb, the rest tune IOMMUs the machine does not have."""
        if p is None:
            return -errno.EINVAL
        while p:
            if p.startswith("off"):
                self.k.no_iommu = True
            for ignored in ("forcesac", "allowdac", "nodac"):
                if p.startswith(ignored):
                    self.k.printk.pr_warn(f"{ignored} option ignored.")
            if p.startswith("usedac"):
                return 1                 # what makes Linux call the option malformed
            if p.startswith("soft"):
                self.k.x86_swiotlb_enable = True
            p = p.partition(",")[2]
        return 0

    def parse_memopt(self, p: str | None) -> None:
        limit = kcmdline.parse_memopt(p, self.k.printk.log)
        self._e820_userdef = True
        if not limit:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self.e820__range_remove(limit, U64_MAX - limit, E820_TYPE_RAM)

    def e820__range_remove(self, start: int, size: int, filter_type: int) -> None:
        """Drop [start, start+size) of filter_type from the e820 table; logged at KERN_DEBUG."""
        size = min(size, U64_MAX - start)
        end = start + size
        self.k.printk.log(f"e820: remove [mem {start:#010x}-{end - 1:#010x}] {e820_type_name(filter_type)}",
                        LOGLEVEL_DEBUG)
        table = []
        for e in self.k.e820_table:
            e_end = e.addr + e.size
            if e.type != filter_type or e_end <= start or e.addr >= end:
                table.append(e)
                continue
            if e.addr < start:
                table.append(E820Entry(e.addr, start - e.addr, e.type))
            if e_end > end:
                table.append(E820Entry(end, e_end - end, e.type))
        self.k.e820_table = table

    def e820__finish_early_params(self) -> None:
        if self._e820_userdef:
            self.k.printk.pr_info("user-defined physical RAM map:")
            self.e820__print_table("user")
        self.trim_bios_range()

    def trim_bios_range(self) -> None:
        """Page 0 is BIOS data, never RAM for the kernel; nor is the legacy [640K, 1M) hole."""
        self.k.printk.log(f"e820: update [mem {0:#010x}-{PAGE_SIZE - 1:#010x}] "
                        f"{e820_type_name(E820_TYPE_RAM)} ==> {e820_type_name(E820_TYPE_RESERVED)}",
                        LOGLEVEL_DEBUG)
        table = []
        for e in self.k.e820_table:
            if e.type == E820_TYPE_RAM and e.addr < PAGE_SIZE:
                table.append(E820Entry(e.addr, PAGE_SIZE - e.addr, E820_TYPE_RESERVED))
                if e.addr + e.size > PAGE_SIZE:
                    table.append(E820Entry(PAGE_SIZE, e.addr + e.size - PAGE_SIZE, e.type))
            else:
                table.append(e)
        self.k.e820_table = table
        self.e820__range_remove(BIOS_BEGIN, BIOS_END - BIOS_BEGIN, E820_TYPE_RAM)

    def e820__memblock_setup(self) -> None:
        mb = self.k.memblock
        mb.allow_resize()
        for e in self._e820_ram():
            mb.add(e.addr, e.size)
        # KHO: memory below 1 MiB may serve early allocations even in scratch-only mode.
        mb.mark_kho_scratch(0, SZ_1M)
        mb.trim_memory(PAGE_SIZE)
        if mb.memblock_debug:
            self.k.printk.pr_info(mb.dump_all())

    def _check_e820_ram(self) -> None:
        """The simulator stops a kernel told of RAM the machine does not have: Linux would use
        it, and on hardware that reads nothing back and crashes wherever it first allocates."""
        present = [(e.addr, e.addr + e.size) for e in self.k.machine.board.e820 if e.type == E820_TYPE_RAM]
        if not any(e.size for e in self._e820_ram()):
            raise KernelPanic("e820: no RAM in the memory map [khofs: not checked by Linux]")
        for e in self._e820_ram():
            end = min(e.addr + e.size, PHYS_ADDR_MAX)        # memblock_cap_size()
            if e.size and not any(s <= e.addr and end <= t for s, t in present):
                raise KernelPanic(f"e820: RAM [mem {e.addr:#018x}-{end - 1:#018x}] is not memory this "
                                  "machine has [khofs: not checked by Linux]")

    def _e820_ram(self) -> list[E820Entry]:
        """RAM entries of the (possibly mem=-trimmed) e820 table, as memblock_add sees them."""
        return [e for e in self.k.e820_table if e.type == E820_TYPE_RAM]

    def reserve_real_mode(self) -> None:
        """arch/x86/realmode/init.c: the AP trampoline below 1 MiB (RSV_KERN), then all of [0, 1 MiB)."""
        mb = self.k.memblock
        if not mb.phys_alloc_range(REAL_MODE_SIZE, PAGE_SIZE, 0, SZ_1M):
            self.k.printk.pr_info("No sub-1M memory is available for the trampoline")
        mb.reserve(0, SZ_1M)
        mb.clear_kho_scratch(0, SZ_1M)

    def initmem_init(self) -> None:
        """x86 NUMA init from the SRAT."""
        self.k.numa_register_memblks([(blk.start, blk.end, blk.nid) for blk in self.k.machine.board.srat])

    def arch_mm_preinit(self) -> None:
        """x86 pci_iommu_alloc(): swiotlb when RAM reaches above 4 GiB unless `iommu=off`, or when
        `iommu=soft` asks for it (q35 has no IOMMU by default)."""
        if not self.k.no_iommu and PFN_DOWN(self.k.memblock.end_of_DRAM()) > MAX_DMA32_PFN:
            self.k.x86_swiotlb_enable = True          # pci_swiotlb_detect()
        self.k.swiotlb.swiotlb_init_remap(self.k.x86_swiotlb_enable, self.k.memblock, self.k.printk,
                                        self.k.machine.nr_cpus)

    def pci_iommu_init(self) -> None:
        """rootfs_initcall (arch/x86/kernel/pci-dma.c): report the bounce buffer."""
        if self.k.x86_swiotlb_enable:
            self.k.printk.pr_info("PCI-DMA: Using software bounce buffering for IO (SWIOTLB)")
            self.k.swiotlb.swiotlb_print_info(self.k.printk)

    def e820_iomem(self) -> str:
        """x86 /proc/iomem: the e820 map, with the kernel image nested in the RAM that holds it."""
        lines = []
        for e in self.k.e820_table:
            name = "System RAM" if e.type == E820_TYPE_RAM else "Reserved"
            lines.append(f"{e.addr:08x}-{e.addr + e.size - 1:08x} : {name}")
            if e.type == E820_TYPE_RAM and e.addr <= self.k.load_addr < e.addr + e.size:
                end = self.k.load_addr + self.k.info.init_size - 1
                lines.append(f"  {self.k.load_addr:08x}-{end:08x} : Kernel code")
        return "".join(line + "\n" for line in lines)
