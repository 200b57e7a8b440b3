"""init/main.c: the simulated kernel (start_kernel, x86_64 setup_arch, initcalls), user-visible state.

A Kernel object knows the machine's hardware (RAM, the SRAT, the RNG) and the
two registers it was started with; everything else — its command line, the
firmware map, the KHO hand-over — it reads from boot_params in RAM, exactly as
Linux does.  The boot order and every reservation are documented in the README
("The machine model") so that each derived number can be checked by hand.
"""

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from sim.arch.x86.boot.bzimage import KernelInfo, apply_builtin_cmdline, linux_banner
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
from sim.early_ioremap import early_memremap, read_phys
from sim.fs.debugfs import Debugfs
from sim.kernel.dma.swiotlb import MAX_DMA32_PFN, Swiotlb
from sim.kernel.kexec_file import Kexec
from sim.kernel.kexec_handover import KexecHandover
from sim.kernel.module import DEVICE_INITCALL, LATE_INITCALL, KernelApi, Module
from sim.kernel.panic import KernelPanic
from sim.kernel.printk import LOGLEVEL_DEBUG, LOGLEVEL_EMERG, LOGLEVEL_NOTICE, SYSLOG_ACTION_CLEAR, Printk
from sim.lib import cmdline as kcmdline
from sim.lib.test_kho import TestKho
from sim.mm.memblock import (
    MEMBLOCK_ALLOC_ACCESSIBLE,
    MEMBLOCK_KHO_SCRATCH,
    MEMBLOCK_NONE,
    NUMA_NO_NODE,
    Memblock,
)
from sim.mm.page_alloc import PAGE_POISON, PageAllocator
from sim.mm.reserve_mem import ReserveMem
from sim.mm.slab import Slab
from sim.sizes import (
    PAGE_ALIGN,
    PAGE_SHIFT,
    PAGE_SIZE,
    PFN_DOWN,
    PFN_UP,
    PHYS_ADDR_MAX,
    SMP_CACHE_BYTES,
    SZ_1M,
    SZ_2M,
    SZ_16M,
    SZ_64K,
    SZ_128M,
    U64_MAX,
    round_down,
)

if TYPE_CHECKING:
    from sim.machine import Machine

# x86_64 SPARSEMEM_VMEMMAP: one struct page (64 bytes) per page, sections of 128 MiB,
# each section's memmap (2 MiB) placed above MAX_DMA_ADDRESS on the section's node.
SECTION_SIZE = SZ_128M
STRUCT_PAGE_SIZE = 64
MAX_DMA_ADDRESS = SZ_16M
PMD_SIZE = SZ_2M
# section_map_size(): the memmap of one section, PMD-aligned under SPARSEMEM_VMEMMAP.
SECTION_MAP_SIZE = SECTION_SIZE // PAGE_SIZE * STRUCT_PAGE_SIZE

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


# Parameters a distribution x86_64 kernel takes (early_param / __setup) that the simulator accepts
# without modelling what they do, so that they are neither reported as unknown nor given to init:
# by exact name (`name` or `name=...`), and by __setup prefix.
# The architecture adds its own (sim.arch: x86's apic, noapic, earlyprintk).
_ACCEPTED_NAMES = tuple(kcmdline.EarlyParam(name, lambda _p: 0) for name in (
    "acpi", "crashkernel", "debug", "earlycon", "ignore_loglevel", "loglevel",
    "maxcpus", "mitigations", "nokaslr", "nr_cpus", "nosmp", "quiet", "ro", "rootwait", "rw"))
_ACCEPTED_PREFIXES = tuple(kcmdline.Setup(prefix, lambda _p: 1) for prefix in (
    "console=", "hugepages=", "init=", "panic=", "pci=", "rdinit=", "root=", "rootflags=", "rootfstype=",
    "transparent_hugepage="))


def early(fn: Callable[[str | None], None]) -> Callable[[str | None], int]:
    """An early_param handler from a function that raises OSError(errno) where C returns -errno."""
    def handler(p: str | None) -> int:
        try:
            fn(p)
        except OSError as e:
            return -(e.errno or errno.EINVAL)
        return 0
    return handler


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


class Kernel:
    """One boot of the simulated kernel; a kexec constructs a new one."""

    def __init__(self, machine: "Machine", info: KernelInfo, load_addr: int, boot_params: int) -> None:
        self.machine = machine
        self.physmem = machine.physmem
        self.info = info
        self.kver = tuple(int(x) for x in info.version.split("."))
        self.load_addr = load_addr
        self.boot_params_phys = boot_params
        self.printk = Printk()
        self.memblock = Memblock(self.physmem, numa=True, smp_cache_bytes=SMP_CACHE_BYTES)
        self.memblock.printk = self.printk.pr_info
        self.debugfs = Debugfs()
        # The machine's KHO sanitizer (or None): an instrument the kernel reports to, never reads.
        self.kho_sanitizer = machine.kho_sanitizer
        self.page_alloc = PageAllocator(self.physmem, scrub=machine.scrub, kho_sanitizer=self.kho_sanitizer)
        self.slab = Slab(self.page_alloc, self.physmem)
        self.kho = KexecHandover(self)
        self.reserve_mem = ReserveMem(self)
        self.test_kho = TestKho(KernelApi(self, "test_kho", _by_kernel=True)) if machine.test_kho else None
        # The machine's user modules, built afresh into this kernel (their globals die with it).
        self.modules = [Module(self, source) for source in machine.modules]
        self.kexec = Kexec(self, get_random_bytes=machine.rng.randbytes)
        # The architecture's hooks (sim.arch): generic code below calls nothing else arch-specific.
        self.arch = machine.board.arch(self)
        self.swiotlb = Swiotlb()
        self.x86_swiotlb_enable = False
        self.no_iommu = False
        self.boot_command_line = ""
        self.saved_command_line = ""
        self.e820_table: list[E820Entry] = []
        self.e820_table_kexec: list[E820Entry] = []
        self.online_nodes: list[int] = []
        # Why this kernel stopped, once it has: a kernel that panicked serves nothing more.
        self.panic_message: str | None = None

    # ------------------------------------------------------------------ boot

    def start_kernel(self) -> None:
        """Boot; a panic on the way leaves a stopped kernel (panic_message) rather than an exception."""
        try:
            self._start_kernel()
        except KernelPanic as e:
            self.panic(str(e))

    def panic(self, message: str) -> None:
        """panic(): the last lines on the console, and the kernel stops for good."""
        self.panic_message = message
        self.printk.log(f"Kernel panic - not syncing: {message}", LOGLEVEL_EMERG)
        self.printk.log(f"---[ end Kernel panic - not syncing: {message} ]---", LOGLEVEL_EMERG)

    def _start_kernel(self) -> None:
        self.arch.smp_setup_processor_id()
        self.printk.log(linux_banner(self.info.version), LOGLEVEL_NOTICE)
        if self.test_kho is not None and self.kver < (6, 17):
            # A user asking for test_kho on 6.16 wants the self-test; it only uses 6.16's API.
            self.printk.log("[khofs: CONFIG_TEST_KEXEC_HANDOVER: lib/test_kho.c first appeared in "
                            "6.17 and is backported into this 6.16 kernel]", LOGLEVEL_NOTICE)
        self.arch.setup_arch()
        self.printk.log(f"Kernel command line: {self.saved_command_line}", LOGLEVEL_NOTICE)
        params = [self.test_kho.max_mem] if self.test_kho else []
        init = kcmdline.InitArgs()
        kcmdline.parse_setup_params(self.boot_command_line, self._setup_table(), params, self.printk.log,
                                    init)
        kcmdline.print_unknown_bootoptions(init, self.printk.log)
        self.printk.advance(20_000_000)
        self.mm_core_init()
        self.printk.advance(100_000_000)
        self.do_initcalls()
        self.printk.advance(880_000_000)

    def setup_arch(self) -> None:
        """x86 setup_arch(), reduced to what memblock and KHO observe, in the kernel's order."""
        bp = BootParams.read(self.physmem, self.boot_params_phys)   # copy_bootdata()
        bootloader = read_boot_command_line(self.physmem, bp)
        # Printed before CONFIG_CMDLINE is merged in, so only the boot loader's part shows.
        self.printk.pr_info(f"Command line: {bootloader}")
        self.boot_command_line = apply_builtin_cmdline(self.info.builtin_cmdline, bootloader)
        self.saved_command_line = self.boot_command_line
        self.early_reserve_memory(bp)
        self.e820__memory_setup(bp)
        self.parse_setup_data(bp)
        self._e820_userdef = False
        self.parse_early_param()
        self.e820__finish_early_params()
        self.e820__memblock_setup()
        self.reserve_real_mode()
        self.initmem_init()
        self.sparse_init()

    def early_reserve_memory(self, bp: BootParams) -> None:
        mb = self.memblock
        mb.reserve_kern(self.load_addr, self.info.init_size)
        # The first 64 KiB: page 0 must stay reserved (L1TF) and some BIOSes corrupt low memory.
        mb.reserve(0, SZ_64K)
        self.early_reserve_initrd(bp)
        self.memblock_x86_reserve_range_setup_data(bp)
        self.reserve_bios_regions()
        # trim_snb_memory() only acts on Sandy Bridge graphics, which q35 does not have.

    def reserve_bios_regions(self) -> None:
        """arch/x86/kernel/ebda.c: from the EBDA (or the BDA's base-memory size) up to 1 MiB."""
        ebda_start = self.physmem.read_u16(BIOS_EBDA_SEGMENT) << 4
        bios_start = self.physmem.read_u16(BIOS_RAM_SIZE_KB_PTR) << 10
        if not BIOS_START_MIN <= bios_start <= BIOS_START_MAX:
            bios_start = BIOS_START_MAX
        if BIOS_START_MIN < ebda_start < bios_start:
            bios_start = ebda_start
        bios_start = round_down(bios_start, PAGE_SIZE)
        self.memblock.reserve(bios_start, SZ_1M - bios_start)

    def early_reserve_initrd(self, bp: BootParams) -> None:
        image, size = bp.ramdisk_phys, bp.ramdisk_len
        if not bp.type_of_loader or not image or not size:
            return                      # no initrd provided by the boot loader
        self.memblock.reserve_kern(image, PAGE_ALIGN(image + size) - image)

    def memblock_x86_reserve_range_setup_data(self, bp: BootParams) -> None:
        for sd in walk_setup_data(self.physmem, bp.setup_data):
            self.memblock.reserve_kern(sd.phys, SETUP_DATA_HDR_SIZE + sd.len)

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
        self.e820_table_kexec = list(table)
        self.e820_table = list(table)
        self.printk.pr_info("BIOS-provided physical RAM map:")
        self.e820__print_table(who)
        self._check_e820_ram()

    def e820__print_table(self, who: str) -> None:
        for e in self.e820_table:
            self.printk.pr_info(f"{who}: [mem {e.addr:#018x}-{e.addr + e.size - 1:#018x}] "
                                f"{e820_type_name(e.type)}")

    def parse_setup_data(self, bp: BootParams) -> None:
        for sd in walk_setup_data(self.physmem, bp.setup_data):
            if sd.type == SETUP_KEXEC_KHO:
                self.add_kho(sd.phys, sd.len + SETUP_DATA_HDR_SIZE)

    def add_kho(self, phys: int, data_len: int) -> None:
        # data_len is a u32 (setup_data.len + 16) and size = data_len - 16 a u64, so a len
        # below 16 wraps into a size early_memremap refuses.  A short but non-zero len still
        # maps the whole page, so all 32 bytes of struct kho_data are read.
        addr = phys + SETUP_DATA_HDR_SIZE
        size = ((data_len & 0xFFFFFFFF) - SETUP_DATA_HDR_SIZE) & U64_MAX
        if early_memremap(self.physmem, self.printk, addr, size) is None:
            self.printk.pr_warn(f"setup: failed to memremap kho data (0x{addr:x}, 0x{size:x})")
            return
        kho = KhoData.unpack(read_phys(self.physmem, addr, KHO_DATA_SIZE))
        self.kho.kho_populate(kho.fdt_addr, kho.fdt_size, kho.scratch_addr, kho.scratch_size)
        self.scrub_scratch()

    def scrub_scratch(self) -> None:
        """Simulator: scratch not reserved yet is reusable from now on, so a busy machine overwrites it.

        Each architecture calls this once the boot's own data (kernel, initrd, boot parameters or
        DTB) is reserved; only a machine built with scrub and a KHO boot poisons anything."""
        if not (self.kho.kho_in_scratch_phys and self.machine.scrub):
            return
        mb = self.memblock
        for region in list(mb.memory.regions):
            if not region.flags & MEMBLOCK_KHO_SCRATCH:
                continue
            cur, end = region.base, region.base + region.size
            for r in mb.reserved.regions:
                rs, re_ = r.base, r.base + r.size
                if re_ <= cur or rs >= end:
                    continue
                if rs > cur:
                    self.physmem.fill(cur, rs - cur, PAGE_POISON)
                cur = max(cur, re_)
            if cur < end:
                self.physmem.fill(cur, end - cur, PAGE_POISON)

    def parse_early_param(self) -> None:
        """init/main.c: the early_param handlers over the boot command line, once, from setup_arch."""
        kcmdline.parse_early_param(self.boot_command_line, self._setup_table(), self.printk.log)

    def _setup_table(self) -> list[kcmdline.EarlyParam | kcmdline.Setup]:
        """The .init.setup entries this kernel is built with, in link order."""
        return [
            *self.arch.setup_params(),
            kcmdline.EarlyParam("kho", early(self.kho_parse_enable)),
            kcmdline.EarlyParam("kho_scratch", early(self.kho_parse_scratch_size)),
            kcmdline.EarlyParam("memblock", early(self.early_memblock)),
            kcmdline.EarlyParam("swiotlb", self.setup_io_tlb_npages),
            kcmdline.Setup("reserve_mem=", self.reserve_mem.reserve_mem),
            *_ACCEPTED_NAMES, *_ACCEPTED_PREFIXES,
        ]

    def kho_parse_enable(self, p: str | None) -> None:
        self.kho.kho_enable = kcmdline.kho_parse_enable(p)

    def kho_parse_scratch_size(self, p: str | None) -> None:
        result = kcmdline.kho_parse_scratch_size(p, self.info.version, self.printk.log)
        if isinstance(result, kcmdline.KhoScratchScale):
            self.kho.scratch_scale = result.scale
        else:
            self.kho.scratch_size_lowmem = result.lowmem
            self.kho.scratch_size_global = result.global_
            self.kho.scratch_size_pernode = result.pernode
            self.kho.scratch_scale = 0

    def setup_io_tlb_npages(self, p: str | None) -> int:
        if p is None:
            # Linux dereferences the NULL value and oopses this early in boot.
            self.printk.pr_warn("swiotlb: no value [khofs: Linux 6.16 dereferences NULL in "
                                "setup_io_tlb_npages and crashes; ignored]")
            return 0
        self.swiotlb.setup_io_tlb_npages(p, self.printk)
        return 0

    def iommu_setup(self, p: str | None) -> int:
        """early_param("iommu") (arch/x86/kernel/pci-dma.c): each comma-separated option is matched
        by prefix; `off` and `soft` decide swiotlb, the rest tune IOMMUs the machine does not have."""
        if p is None:
            return -errno.EINVAL
        while p:
            if p.startswith("off"):
                self.no_iommu = True
            for ignored in ("forcesac", "allowdac", "nodac"):
                if p.startswith(ignored):
                    self.printk.pr_warn(f"{ignored} option ignored.")
            if p.startswith("usedac"):
                return 1                 # what makes Linux call the option malformed
            if p.startswith("soft"):
                self.x86_swiotlb_enable = True
            p = p.partition(",")[2]
        return 0

    def early_memblock(self, p: str | None) -> None:
        if kcmdline.early_memblock(p):
            self.memblock.memblock_debug = True

    def parse_memopt(self, p: str | None) -> None:
        limit = kcmdline.parse_memopt(p, self.printk.log)
        self._e820_userdef = True
        if not limit:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self.e820__range_remove(limit, U64_MAX - limit, E820_TYPE_RAM)

    def e820__range_remove(self, start: int, size: int, filter_type: int) -> None:
        """Drop [start, start+size) of filter_type from the e820 table; logged at KERN_DEBUG."""
        size = min(size, U64_MAX - start)
        end = start + size
        self.printk.log(f"e820: remove [mem {start:#010x}-{end - 1:#010x}] {e820_type_name(filter_type)}",
                        LOGLEVEL_DEBUG)
        table = []
        for e in self.e820_table:
            e_end = e.addr + e.size
            if e.type != filter_type or e_end <= start or e.addr >= end:
                table.append(e)
                continue
            if e.addr < start:
                table.append(E820Entry(e.addr, start - e.addr, e.type))
            if e_end > end:
                table.append(E820Entry(end, e_end - end, e.type))
        self.e820_table = table

    def e820__finish_early_params(self) -> None:
        if self._e820_userdef:
            self.printk.pr_info("user-defined physical RAM map:")
            self.e820__print_table("user")
        self.trim_bios_range()

    def trim_bios_range(self) -> None:
        """Page 0 is BIOS data, never RAM for the kernel; nor is the legacy [640K, 1M) hole."""
        self.printk.log(f"e820: update [mem {0:#010x}-{PAGE_SIZE - 1:#010x}] "
                        f"{e820_type_name(E820_TYPE_RAM)} ==> {e820_type_name(E820_TYPE_RESERVED)}",
                        LOGLEVEL_DEBUG)
        table = []
        for e in self.e820_table:
            if e.type == E820_TYPE_RAM and e.addr < PAGE_SIZE:
                table.append(E820Entry(e.addr, PAGE_SIZE - e.addr, E820_TYPE_RESERVED))
                if e.addr + e.size > PAGE_SIZE:
                    table.append(E820Entry(PAGE_SIZE, e.addr + e.size - PAGE_SIZE, e.type))
            else:
                table.append(e)
        self.e820_table = table
        self.e820__range_remove(BIOS_BEGIN, BIOS_END - BIOS_BEGIN, E820_TYPE_RAM)

    def e820__memblock_setup(self) -> None:
        mb = self.memblock
        mb.allow_resize()
        for e in self._e820_ram():
            mb.add(e.addr, e.size)
        # KHO: memory below 1 MiB may serve early allocations even in scratch-only mode.
        mb.mark_kho_scratch(0, SZ_1M)
        mb.trim_memory(PAGE_SIZE)
        if mb.memblock_debug:
            self.printk.pr_info(mb.dump_all())

    def _check_e820_ram(self) -> None:
        """The simulator stops a kernel told of RAM the machine does not have: Linux would use
        it, and on hardware that reads nothing back and crashes wherever it first allocates."""
        present = [(e.addr, e.addr + e.size) for e in self.machine.board.e820 if e.type == E820_TYPE_RAM]
        if not any(e.size for e in self._e820_ram()):
            raise KernelPanic("e820: no RAM in the memory map [khofs: not checked by Linux]")
        for e in self._e820_ram():
            end = min(e.addr + e.size, PHYS_ADDR_MAX)        # memblock_cap_size()
            if e.size and not any(s <= e.addr and end <= t for s, t in present):
                raise KernelPanic(f"e820: RAM [mem {e.addr:#018x}-{end - 1:#018x}] is not memory this "
                                  "machine has [khofs: not checked by Linux]")

    def _e820_ram(self) -> list[E820Entry]:
        """RAM entries of the (possibly mem=-trimmed) e820 table, as memblock_add sees them."""
        return [e for e in self.e820_table if e.type == E820_TYPE_RAM]

    def reserve_real_mode(self) -> None:
        """arch/x86/realmode/init.c: the AP trampoline below 1 MiB (RSV_KERN), then all of [0, 1 MiB)."""
        mb = self.memblock
        if not mb.phys_alloc_range(REAL_MODE_SIZE, PAGE_SIZE, 0, SZ_1M):
            self.printk.pr_info("No sub-1M memory is available for the trampoline")
        mb.reserve(0, SZ_1M)
        mb.clear_kho_scratch(0, SZ_1M)

    def initmem_init(self) -> None:
        """x86 NUMA init from the SRAT."""
        self.numa_register_memblks([(blk.start, blk.end, blk.nid) for blk in self.machine.board.srat])

    def numa_register_memblks(self, blks: list[tuple[int, int, int]]) -> None:
        """mm/numa_memblks.c: node ids onto memory, the nodes that got some online, then the ids onto
        early reservations.  blks are (start, end, nid) as firmware described them."""
        mb = self.memblock
        nodes = set()
        for start, end, nid in blks:
            mb.set_node(start, end - start, mb.memory, nid)
        for region in mb.memory.regions:
            if mb.numa_valid_node(region.nid):
                nodes.add(region.nid)
        self.online_nodes = sorted(nodes)
        for start, end, nid in blks:
            mb.set_node(start, end - start, mb.reserved, nid)

    def sparse_init(self) -> None:
        """mm/sparse.c: one sparse_init_nid per run of present sections on one node, in section order.

        A section's node is that of the first memory range reaching it (memory_present keeps the
        first); the work is per memory range and per node, never per section.
        """
        runs: list[list[int]] = []          # [nid, last section, map_count]
        for start_pfn, end_pfn, nid in self.memblock.for_each_mem_pfn_range(NUMA_NO_NODE):
            first = (start_pfn << PAGE_SHIFT) // SECTION_SIZE
            last = ((end_pfn << PAGE_SHIFT) - 1) // SECTION_SIZE
            if runs and runs[-1][1] >= first:
                first = runs[-1][1] + 1
            if first > last:
                continue
            if runs and runs[-1][0] == nid:
                runs[-1][1] = last
                runs[-1][2] += last - first + 1
            else:
                runs.append([nid, last, last - first + 1])
        for nid, _last, map_count in runs:
            self.sparse_init_nid(nid, map_count)

    def sparse_init_nid(self, nid: int, map_count: int) -> None:
        """sparse_buffer_init's one allocation for the node's whole memmap (2 MiB a section);
        without it each section's vmemmap takes its 2 MiB alone, and the first that fails ends
        the node as Linux reports it.  (x86's fallback to 4 KiB vmemmap pages, which only
        matters when no 2 MiB block is left, is not modelled.)"""
        if self.memmap_alloc(map_count * SECTION_MAP_SIZE, SECTION_MAP_SIZE, MAX_DMA_ADDRESS, nid):
            return
        for _ in range(map_count):
            if not self.vmemmap_alloc_block(PMD_SIZE, nid):
                self.printk.pr_err(f"sparse_init_nid: node[{nid}] memory map backing failed. "
                                   "Some memory will not be available.")
                return

    def memmap_alloc(self, size: int, align: int, min_addr: int, nid: int) -> int:
        """mm/mm_init.c memmap_alloc(..., exact_nid=true), the caller memblock=debug names."""
        return self.memblock.alloc_exact_nid_raw(size, align, min_addr, MEMBLOCK_ALLOC_ACCESSIBLE, nid)

    def vmemmap_alloc_block(self, size: int, nid: int) -> int:
        """mm/sparse-vmemmap.c before slab: a naturally aligned block on (or near) the node."""
        return self.memblock.alloc_try_nid_raw(size, size, MAX_DMA_ADDRESS, MEMBLOCK_ALLOC_ACCESSIBLE, nid)

    def mm_core_init(self) -> None:
        self.arch.arch_mm_preinit()
        self.kho.kho_memory_init()
        self.memblock_free_all()

    def arch_mm_preinit(self) -> None:
        """x86 pci_iommu_alloc(): swiotlb when RAM reaches above 4 GiB unless `iommu=off`, or when
        `iommu=soft` asks for it (q35 has no IOMMU by default)."""
        if not self.no_iommu and PFN_DOWN(self.memblock.end_of_DRAM()) > MAX_DMA32_PFN:
            self.x86_swiotlb_enable = True          # pci_swiotlb_detect()
        self.swiotlb.swiotlb_init_remap(self.x86_swiotlb_enable, self.memblock, self.printk,
                                        self.machine.nr_cpus)

    def memblock_free_all(self) -> None:
        """Hand every free range to the page allocator; scratch-only mode ends here."""
        mb = self.memblock
        mb.clear_kho_scratch_only()
        mb.clear_hotplug(0, PHYS_ADDR_MAX)       # free_low_memory_core_early(); its merge is visible
        self.memmap_init_reserved_pages()
        free = mb.for_each_free_mem_range(NUMA_NO_NODE, MEMBLOCK_NONE)
        self.page_alloc.free_pages_memory_many((PFN_UP(start), PFN_DOWN(end)) for start, end, _nid in free)

    def memmap_init_reserved_pages(self) -> None:
        """mm/memblock.c: each memory region's node id onto the reservations inside it (they then merge)."""
        mb = self.memblock
        for region in list(mb.memory.regions):
            mb.set_node(region.base, region.size, mb.reserved, region.nid)

    def do_initcalls(self) -> None:
        """rootfs_initcall, device_initcall then late_initcall, in link order (kernel/, mm/, lib/,
        then user modules)."""
        self.arch.rootfs_initcall()
        self.memblock_init_debugfs()
        if self.test_kho is not None:
            self.test_kho.kho_test_init()
        for module in self.modules:
            module.do_initcalls(DEVICE_INITCALL)
        self.kho.kho_init()
        self.reserve_mem.reserve_mem_init()
        for module in self.modules:
            module.do_initcalls(LATE_INITCALL)

    def pci_iommu_init(self) -> None:
        """rootfs_initcall (arch/x86/kernel/pci-dma.c): report the bounce buffer."""
        if self.x86_swiotlb_enable:
            self.printk.pr_info("PCI-DMA: Using software bounce buffering for IO (SWIOTLB)")
            self.swiotlb.swiotlb_print_info(self.printk)

    def memblock_init_debugfs(self) -> None:
        """memory and reserved only: reserve_mem_param was added after 6.18 (it is in the 6.19+ tree)."""
        dfs = self.debugfs
        root = dfs.debugfs_create_dir("memblock", None)
        mb = self.memblock
        dfs.debugfs_create_seq("memory", 0o444, root, lambda: mb.debugfs_show(mb.memory))
        dfs.debugfs_create_seq("reserved", 0o444, root, lambda: mb.debugfs_show(mb.reserved))

    # ------------------------------------------------------------------ what user space sees

    def dmesg(self) -> str:
        return self.printk.dmesg()

    def devkmsg(self) -> str:
        """/dev/kmsg's records from the last clear (what `dmesg` reads)."""
        return self.printk.devkmsg()

    def syslog(self, action: int) -> None:
        """syslog(2) for the one action user space needs here (`dmesg -c`/`-C`); others EINVAL."""
        if action != SYSLOG_ACTION_CLEAR:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self.printk.syslog_clear()

    def uptime(self) -> str:
        """/proc/uptime: seconds since boot on the simulated clock (one idle CPU: idle = uptime)."""
        centis = self.printk.clock_ns // 10_000_000
        return f"{centis // 100}.{centis % 100:02d} {centis // 100}.{centis % 100:02d}\n"

    @property
    def cmdline(self) -> str:
        """/proc/cmdline without its newline."""
        return self.saved_command_line

    def pfn_to_online_page(self, pfn: int) -> bool:
        return self.memblock.is_memory(pfn << PAGE_SHIFT)

    def kexec_walk_memblock(self) -> list[tuple[int, int]]:
        """Where kexec_file may place segments when KHO does not decide: memory minus reserved."""
        return [(s, e) for s, e, _ in self.memblock.for_each_free_mem_range(NUMA_NO_NODE, MEMBLOCK_NONE)]

    @property
    def totalram_pages(self) -> int:
        return self.page_alloc.totalram_pages

    def iomem(self) -> str:
        """/proc/iomem as the architecture prints it."""
        return self.arch.iomem()

    def e820_iomem(self) -> str:
        """x86 /proc/iomem: the e820 map, with the kernel image nested in the RAM that holds it."""
        lines = []
        for e in self.e820_table:
            name = "System RAM" if e.type == E820_TYPE_RAM else "Reserved"
            lines.append(f"{e.addr:08x}-{e.addr + e.size - 1:08x} : {name}")
            if e.type == E820_TYPE_RAM and e.addr <= self.load_addr < e.addr + e.size:
                end = self.load_addr + self.info.init_size - 1
                lines.append(f"  {self.load_addr:08x}-{end:08x} : Kernel code")
        return "".join(line + "\n" for line in lines)

    def platform_files(self) -> dict[str, tuple[int, bytes]]:
        """Platform files (path -> (permission bits, content)): /proc/sys/kernel/arch, the DT on arm64."""
        return self.arch.platform_files()

    def platform_links(self) -> dict[str, str]:
        return self.arch.platform_links()

    @property
    def kexec_loaded(self) -> bool:
        return self.kexec.kexec_loaded

    @property
    def kexec_crash_loaded(self) -> bool:
        return self.kexec.kexec_crash_loaded

    def kexec_file_load(self, kernel: bytes, initrd: bytes | None, cmdline: str, flags: int = 0) -> None:
        """kexec_file_load(2): load the image (bytes of a bzImage) for `machine.kexec()`.

        initrd None is initrd_fd -1 and needs KEXEC_FILE_NO_INITRAMFS in flags; cmdline is the new
        kernel's whole command line (kexec's --reuse-cmdline passes self.cmdline); flags are the
        KEXEC_FILE_* bits (sim.kexec_handover).  Errors raise OSError with the syscall's errno."""
        self.printk.advance(1_000_000)
        self.kexec.kexec_file_load(kernel, initrd, cmdline, flags)

    def machine_kexec(self) -> tuple[int, int]:
        return self.kexec.machine_kexec()
