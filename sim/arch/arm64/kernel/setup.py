"""arch/arm64/kernel/setup.c and arch/arm64/mm/init.c (Linux 6.16), as far as memblock and KHO see them.

setup_arch: the DTB at x0 is scanned (drivers/of/fdt.c: bootargs or CONFIG_CMDLINE, the
/memory nodes into memblock, KHO's /chosen hand-over into ``kho_populate``), early
parameters are parsed, ``arm64_memblock_init`` reserves the initrd, the kernel
(``_stext`` to ``_end``), the DTB and its /memreserve/ entries, and ``bootmem_init``
sets NUMA node ids from the /memory nodes' ``numa-node-id``, builds the vmemmap and
derives ``arm64_dma_phys_limit`` (ARCH_LOW_ADDRESS_LIMIT + 1, where KHO's lowmem scratch
must end).  Not modelled (no memblock allocation KHO can observe differs by them):
paging_init's page tables, unflatten_device_tree's copy, NODE_DATA, CMA, KASLR (the
kernel runs where it was loaded; the ``kaslr-seed`` is consumed and wiped as 6.16 does).
"""

import struct
from typing import ClassVar

from sim.arch import Arch, KexecFileOps
from sim.arch.arm64.boot.image import STEXT_OFFSET
from sim.arch.arm64.kernel.kexec_image import image_load, image_probe
from sim.drivers.of.fdt import OF_SYSFS_BASE, EarlyFdt, of_read_number, of_sysfs_properties
from sim.init.main import Kernel
from sim.kernel.kexec_file import Kimage
from sim.kernel.panic import KernelPanic
from sim.kernel.printk import LOGLEVEL_CRIT, LOGLEVEL_NOTICE
from sim.lib.cmdline import EarlyParam, Setup, memparse
from sim.lib.fdt import fdt_for_each_subnode, fdt_getprop, fdt_path_offset
from sim.mm.memblock import MEMBLOCK_NOMAP
from sim.sizes import PAGE_ALIGN, PAGE_SIZE, PFN_DOWN, PHYS_ADDR_MAX, U64_MAX, round_down

# Cortex-A57 r1p0 (MIDR_EL1) (QEMU's -cpu cortex-a57), booted on MPIDR 0.
MIDR_EL1 = 0x411FD070
PHYS_MASK_SHIFT = 48
ARM64_MEMSTART_ALIGN = 1 << 30           # PUD_SIZE with 4K pages
LINEAR_REGION_SIZE = 1 << 47             # PAGE_END - PAGE_OFFSET, 48-bit VA
U32_MAX = 0xFFFFFFFF
# Where fixmap_remap_fdt maps the blob (FIX_FDT, 48-bit VA, 4K pages), for the %px in its error.
FDT_FIXMAP_VA = 0xFFFFFFFEFE600000
# The simulated link layout (sim.arch.arm64.boot.image): __init_begin and _sdata within image_size.
CODE_FRACTION, DATA_FRACTION = 2, 4


class Arm64(Arch):
    """arm64: the device tree at x0 carries memory, command line, initrd and the KHO hand-over."""

    name = "arm64"
    uname_machine = "aarch64"
    kexec_file_loaders: ClassVar[tuple[KexecFileOps, ...]] = (KexecFileOps(image_probe, image_load),)

    def __init__(self, kernel: Kernel) -> None:
        super().__init__(kernel)
        # __fdt_pointer: the boot register (x0) the boot loader or machine_kexec set.
        self.dt = EarlyFdt(kernel, kernel.boot_params_phys)
        self.memory_limit = PHYS_ADDR_MAX
        self.memstart_addr = 0
        self.arm64_dma_phys_limit = 0
        # The tree as unflatten_device_tree() saw it: what /sys/firmware shows.
        self.boot_fdt = b""

    # -- the kernel image as linked (sim.arch.arm64.boot.image) --

    @property
    def _text(self) -> int:
        return self.k.load_addr

    @property
    def _stext(self) -> int:
        return self.k.load_addr + STEXT_OFFSET

    @property
    def _end(self) -> int:
        return self.k.load_addr + self.k.info.init_size

    @property
    def arch_low_address_limit(self) -> int:
        return (self.arm64_dma_phys_limit - 1) & U64_MAX

    # -- boot --

    def smp_setup_processor_id(self) -> None:
        self.k.printk.pr_info(f"Booting Linux on physical CPU 0x{0:010x} [0x{MIDR_EL1:08x}]")

    def setup_arch(self) -> None:
        k = self.k
        self.kaslr_init(self.kaslr_early_init())
        self.setup_machine_fdt()
        k.saved_command_line = k.boot_command_line
        k.parse_early_param()
        k.printk.pr_info("efi: UEFI not found.")
        self.arm64_memblock_init()
        self.paging_init()
        self.boot_fdt = self.dt.blob()          # unflatten_device_tree()
        self.bootmem_init()

    def paging_init(self) -> None:
        """arch/arm64/mm/mmu.c: after map_mem() the memblock arrays may grow (memblock_allow_resize);
        without it a hand-over of more than 128 preserved ranges would not fit memblock.reserved."""
        self.k.memblock.allow_resize()

    def kaslr_early_init(self) -> str:
        if not self.dt.early_init_dt_verify():
            return "seed"
        """arch/arm64/kernel/pi/kaslr_early.c, before the MMU is on: unless the command line (bootargs,
        else CONFIG_CMDLINE) says nokaslr, the seed is read and zeroed in the DTB.  Returns what
        kaslr_init() reports: "enabled", "cmdline" or "seed"."""
        fdt = self.dt.blob()
        chosen = fdt_path_offset(fdt, "/chosen")
        bootargs = fdt_getprop(fdt, chosen, "bootargs")[0] if chosen >= 0 else None
        line = bootargs.split(b"\0", 1)[0].decode("utf-8", "replace") if bootargs else ""
        if "nokaslr" in (line or self.k.info.builtin_cmdline).split():
            return "cmdline"
        seed = fdt_getprop(fdt, chosen, "kaslr-seed")[0] if chosen >= 0 else None
        if seed is None or len(seed) != 8 or not any(seed):
            return "seed"
        self.dt.setprop_inplace(chosen, "kaslr-seed", bytes(8))
        return "enabled"

    def kaslr_init(self, state: str) -> None:
        """arch/arm64/kernel/kaslr.c.  The kernel's virtual placement is all KASLR moves here; its
        physical address stays where the boot loader put it, which is all the simulator models."""
        self.k.printk.pr_info({"enabled": "KASLR enabled", "cmdline": "KASLR disabled on command line",
                               "seed": "KASLR disabled due to lack of seed"}[state])

    def setup_machine_fdt(self) -> None:
        k, dt = self.k, self.dt
        size = dt.fixmap_remap_fdt()
        if size is not None:
            k.memblock.reserve(dt.initial_boot_params_pa, size)
        if size is None or not dt.early_init_dt_verify():
            k.printk.log("", LOGLEVEL_CRIT)
            k.printk.log(f"Error: invalid device tree blob: PA=0x{dt.initial_boot_params_pa:016x}, "
                         f"VA={0 if size is None else FDT_FIXMAP_VA:016x}, size={size or 0} bytes",
                         LOGLEVEL_CRIT)
            k.printk.log("The dtb must be 8-byte aligned and must not exceed 2 MB in size.", LOGLEVEL_CRIT)
            k.printk.log("", LOGLEVEL_CRIT)
            k.printk.log("Please check your bootloader.", LOGLEVEL_CRIT)
            raise KernelPanic("[khofs: Linux 6.16 spins here for ever (while (true) cpu_relax()); "
                              "the machine is stopped]")
        k.boot_command_line = self.dt.early_init_dt_scan(k.info.builtin_cmdline, k.memblock.add)
        name = self.dt.of_flat_dt_get_machine_name()
        if name is not None:
            k.printk.pr_info(f"Machine model: {name}")

    def setup_params(self) -> list[EarlyParam | Setup]:
        return [EarlyParam("mem", self.early_mem)]

    def early_mem(self, p: str | None) -> int:
        """early_param("mem") (arch/arm64/mm/init.c): a limit applied in arm64_memblock_init."""
        if p is None:
            return 1
        limit, _ = memparse(p)
        self.memory_limit = limit & ~(PAGE_SIZE - 1)
        self.k.printk.log(f"Memory limited to {self.memory_limit >> 20}MB", LOGLEVEL_NOTICE)
        return 0

    def arm64_memblock_init(self) -> None:
        k, mb, dt = self.k, self.k.memblock, self.dt
        mb.remove(1 << PHYS_MASK_SHIFT, U64_MAX)
        self.memstart_addr = round_down(mb.start_of_DRAM(), ARM64_MEMSTART_ALIGN)
        mb.remove(max(self.memstart_addr + LINEAR_REGION_SIZE, self._end), U64_MAX)
        if self.memory_limit != PHYS_ADDR_MAX:
            mb.mem_limit_remove_map(self.memory_limit)
            mb.add(self._text, self._end - self._text)
        if dt.phys_initrd_size:
            base = dt.phys_initrd_start & ~(PAGE_SIZE - 1)
            size = PAGE_ALIGN(dt.phys_initrd_start + dt.phys_initrd_size) - base
            if base < mb.start_of_DRAM() or base + size > mb.start_of_DRAM() + LINEAR_REGION_SIZE:
                k.printk.pr_warn("initrd not fully accessible via the linear mapping -- please check "
                                 "your bootloader ...")
                dt.phys_initrd_size = 0
            else:
                mb.add(base, size)
                mb.clear_nomap(base, size)
                mb.reserve(base, size)
        mb.reserve(self._stext, self._end - self._stext)
        dt.early_init_fdt_scan_reserved_mem()
        k.scrub_scratch()

    def bootmem_init(self) -> None:
        k = self.k
        self.arch_numa_init()
        k.sparse_init()
        self.zone_sizes_init()
        if k.memblock.memblock_debug:
            k.printk.pr_info(k.memblock.dump_all())

    def arch_numa_init(self) -> None:
        """of_numa_init: each /memory node's ranges belong to its numa-node-id (node 0 without one)."""
        fdt = self.dt.blob()
        blks = []
        for node in fdt_for_each_subnode(fdt, 0):
            kind, _ = fdt_getprop(fdt, node, "device_type")
            reg, length = fdt_getprop(fdt, node, "reg")
            if kind is None or kind.split(b"\0", 1)[0] != b"memory" or reg is None:
                continue
            nid_prop, nlen = fdt_getprop(fdt, node, "numa-node-id")
            nid = struct.unpack(">I", nid_prop)[0] if nid_prop is not None and nlen == 4 else 0
            na, ns = self.dt.dt_root_addr_cells, self.dt.dt_root_size_cells
            step = 4 * (na + ns)
            for i in range(0, length - step + 1, step):
                base, size = of_read_number(reg[i:], na), of_read_number(reg[i + 4 * na:], ns)
                blks.append((base, base + size, nid))
        self.k.numa_register_memblks(blks)

    def max_zone_phys(self, zone_limit: int) -> int:
        mb = self.k.memblock
        if mb.start_of_DRAM() < U32_MAX:
            zone_limit = min(zone_limit, U32_MAX)
        return min(zone_limit, mb.end_of_DRAM() - 1) + 1

    def zone_sizes_init(self) -> None:
        """CONFIG_ZONE_DMA and DMA32: with RAM below 4 GiB the DMA zone ends at 4 GiB or RAM's end."""
        self.arm64_dma_phys_limit = self.max_zone_phys(U32_MAX)

    def arch_mm_preinit(self) -> None:
        """swiotlb when RAM reaches past the DMA zone, verbose as arm64 asks for (SWIOTLB_VERBOSE)."""
        k = self.k
        max_pfn = PFN_DOWN(k.memblock.end_of_DRAM())
        enable = max_pfn > PFN_DOWN(self.arm64_dma_phys_limit)
        k.swiotlb.swiotlb_init_remap(enable, k.memblock, k.printk, k.machine.nr_cpus)
        if enable or k.swiotlb.force_bounce:
            k.swiotlb.swiotlb_print_info(k.printk)

    # -- kexec --

    def machine_kexec(self, image: Kimage) -> tuple[int, int]:
        """cpu_soft_restart into the kernel at image.start with x0 = the new DTB."""
        return image.start, image.arch.dtb_mem

    # -- what user space reads --

    def iomem(self) -> str:
        """request_standard_resources: one "System RAM" per memblock region (NOMAP ones "reserved"),
        the kernel's code and data inside, and (reserve_memblock_reserved_regions) every reserved
        range around them."""
        mb = self.k.memblock
        code = (self._stext, self._text + self.k.info.init_size // CODE_FRACTION - 1, "Kernel code")
        data_start = self._end - self.k.info.init_size // DATA_FRACTION
        data = (data_start, self._end - 1, "Kernel data")
        reserved = list(mb.for_each_reserved_mem_range())
        lines = []
        for region in mb.memory.regions:
            start, end = region.base, region.base + region.size - 1
            if region.flags & MEMBLOCK_NOMAP:
                lines.append(f"{start:08x}-{end:08x} : reserved")
                continue
            lines.append(f"{start:08x}-{end:08x} : System RAM")
            kids = [c for c in (code, data) if start <= c[0] and c[1] <= end]
            for rs, re_ in reserved:
                if re_ - 1 >= start and rs <= end:
                    kids += [(s_, e_, "reserved") for s_, e_ in
                             _split_around(max(rs, start), min(re_ - 1, end), [code, data])]
            lines += [f"  {ks:08x}-{ke:08x} : {name}" for ks, ke, name in sorted(kids)]
        return "".join(line + "\n" for line in lines)

    def platform_files(self) -> dict[str, tuple[int, bytes]]:
        """/sys/firmware/fdt (the raw tree, 0400) and /sys/firmware/devicetree/base (of_core_init)."""
        files = super().platform_files()
        files["/sys/firmware/fdt"] = (0o400, self.boot_fdt)
        for path, value in of_sysfs_properties(self.boot_fdt).items():
            files[OF_SYSFS_BASE + path] = (0o444, value)
        return files

    def platform_links(self) -> dict[str, str]:
        """proc_symlink("device-tree", NULL, "/sys/firmware/devicetree/base")."""
        return {"/proc/device-tree": OF_SYSFS_BASE}


def _split_around(start: int, end: int, taken: list[tuple[int, int, str]]) -> list[tuple[int, int]]:
    """reserve_region_with_split: the parts of [start, end] no existing child resource covers."""
    pieces, cur = [], start
    for ts, te, _ in sorted(taken):
        if te < cur or ts > end:
            continue
        if ts > cur:
            pieces.append((cur, ts - 1))
        cur = max(cur, te + 1)
    if cur <= end:
        pieces.append((cur, end))
    return pieces
