"""init/main.c: the simulated kernel (start_kernel, mm_core_init, initcalls) and its user-visible state.

A Kernel object knows the machine's hardware (RAM, the NUMA description, the RNG) and
the two registers it was started with; everything else — its command line, the
firmware map, the KHO hand-over — its architecture (sim.arch: setup_arch) reads from
RAM (x86 boot_params, the arm64 device tree), exactly as Linux does.  The boot order
and every reservation are documented in the README ("The machine model") so that each
derived number can be checked by hand.
"""

import errno
import os
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING

from sim.arch.x86.boot.bzimage import KernelInfo, linux_banner
from sim.arch.x86.bootparam import (
    E820Entry,
)
from sim.fs.debugfs import Debugfs
from sim.kernel.dma.swiotlb import Swiotlb
from sim.kernel.kexec_file import Kexec
from sim.kernel.kexec_handover import KexecHandover
from sim.kernel.module import DEVICE_INITCALL, LATE_INITCALL, KernelApi, Module
from sim.kernel.panic import KernelPanic
from sim.kernel.printk import LOGLEVEL_EMERG, LOGLEVEL_NOTICE, SYSLOG_ACTION_CLEAR, Printk
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
    PAGE_SHIFT,
    PAGE_SIZE,
    PHYS_ADDR_MAX,
    SMP_CACHE_BYTES,
    SZ_2M,
    SZ_16M,
    SZ_128M,
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

    def early_memblock(self, p: str | None) -> None:
        if kcmdline.early_memblock(p):
            self.memblock.memblock_debug = True

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

    def memblock_free_all(self) -> None:
        """Hand every free range to the page allocator; scratch-only mode ends here."""
        mb = self.memblock
        mb.clear_kho_scratch_only()
        mb.clear_hotplug(0, PHYS_ADDR_MAX)       # free_low_memory_core_early(); its merge is visible
        self.memmap_init_reserved_pages()
        starts, ends = mb.free_mem_range_arrays(NUMA_NO_NODE, MEMBLOCK_NONE)
        # PFN_UP and PFN_DOWN spelled out: a million calls each cost more than the shifts.
        starts = array("Q", [(s + PAGE_SIZE - 1) >> PAGE_SHIFT for s in starts])
        ends = array("Q", [e >> PAGE_SHIFT for e in ends])
        self.page_alloc.free_pages_memory_many(starts, ends)

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
