"""drivers/of/fdt.c (Linux 6.16): the early scan of the flattened device tree the kernel booted with.

`early_init_dt_scan` finds the root's cell sizes, ``/chosen`` (initrd, ``rng-seed``,
``bootargs``, CONFIG_CMDLINE), the ``/memory`` nodes (into memblock) and KHO's two
``/chosen`` properties, which go to the generic ``kho_populate`` as x86's setup_data does.
The blob is the one in RAM (``initial_boot_params`` points there): the kernel edits it in
place (``rng-seed`` becomes NOPs) and kexec later copies it, edits and all.
"""

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from sim.lib import fdt as libfdt
from sim.sizes import PAGE_ALIGN, PAGE_SIZE, U64_MAX

if TYPE_CHECKING:
    from sim.init.main import Kernel

OF_ROOT_NODE_ADDR_CELLS_DEFAULT = 1
OF_ROOT_NODE_SIZE_CELLS_DEFAULT = 1
COMMAND_LINE_SIZE = 2048
MAX_FDT_SIZE = 2 << 20
OF_SYSFS_BASE = "/sys/firmware/devicetree/base"
FDT_NOP_WORD = struct.pack(">I", libfdt.FDT_NOP)


def of_read_number(cells: bytes, size: int) -> int:
    """Big-endian cells into a u64 (extra leading cells shift out, as in C)."""
    r = 0
    for i in range(size):
        r = ((r << 32) | struct.unpack_from(">I", cells, 4 * i)[0]) & U64_MAX
    return r


class EarlyFdt:
    """of/fdt.c's globals for one kernel: initial_boot_params and what the early scan found."""

    def __init__(self, kernel: "Kernel", dt_phys: int) -> None:
        self.k = kernel
        self.initial_boot_params_pa = dt_phys
        self.dt_root_addr_cells = OF_ROOT_NODE_ADDR_CELLS_DEFAULT
        self.dt_root_size_cells = OF_ROOT_NODE_SIZE_CELLS_DEFAULT
        self.chosen_node_offset = -libfdt.FDT_ERR_NOTFOUND
        self.phys_initrd_start = 0
        self.phys_initrd_size = 0

    # -- the blob in RAM --

    @property
    def totalsize(self) -> int:
        return struct.unpack(">I", self.k.physmem.read(self.initial_boot_params_pa + 4, 4))[0]

    def blob(self) -> bytes:
        """initial_boot_params: the whole tree as it now stands in RAM."""
        return self.k.physmem.read(self.initial_boot_params_pa, self.totalsize)

    def _write_at(self, pos: int, data: bytes) -> None:
        self.k.physmem.write(self.initial_boot_params_pa + pos, data)

    def fdt_nop_property(self, node: int, name: str) -> None:
        """Overwrite a property with FDT_NOP tags, in place (libfdt's fdt_nop_property)."""
        pos, length = libfdt._getprop_pos(self.blob(), node, name.encode())
        if pos is not None:
            start = pos - libfdt._PROP_HEADER_SIZE
            self._write_at(start, FDT_NOP_WORD * ((pos + libfdt._tagalign(length) - start) // 4))

    def setprop_inplace(self, node: int, name: str, value: bytes) -> None:
        pos, length = libfdt._getprop_pos(self.blob(), node, name.encode())
        if pos is not None and length == len(value):
            self._write_at(pos, value)

    # -- early_init_dt_scan --

    def fixmap_remap_fdt(self) -> int | None:
        """arch/arm64/mm/mmu.c: the blob's size, or None unless it is 8-byte aligned, in RAM, starts
        with FDT_MAGIC and is at most MAX_FDT_SIZE (2 MiB) long."""
        pa, physmem = self.initial_boot_params_pa, self.k.physmem
        if pa % 8 or pa < 0 or pa + 40 > physmem.size:
            return None
        magic, size = struct.unpack(">II", physmem.read(pa, 8))
        if magic != libfdt.FDT_MAGIC or size > MAX_FDT_SIZE or pa + size > physmem.size:
            return None
        return size

    def early_init_dt_verify(self) -> bool:
        return self.fixmap_remap_fdt() is not None and libfdt.fdt_check_header(self.blob()) == 0

    def early_init_dt_scan(self, builtin_cmdline: str, add_memory: Callable[[int, int], None]) -> str:
        """Verify and scan the tree; the boot command line (``/chosen/bootargs`` or CONFIG_CMDLINE)."""
        fdt = self.blob()
        self.early_init_dt_scan_root(fdt)
        cmdline = self.early_init_dt_scan_chosen(builtin_cmdline)
        self.early_init_dt_scan_memory(self.blob(), add_memory)
        self.early_init_dt_check_kho(self.blob())
        return cmdline

    def early_init_dt_scan_root(self, fdt: bytes) -> None:
        for name, attr in (("#size-cells", "dt_root_size_cells"), ("#address-cells", "dt_root_addr_cells")):
            value, length = libfdt.fdt_getprop(fdt, 0, name)
            if value is not None and length >= 4:
                setattr(self, attr, struct.unpack_from(">I", value)[0])

    def early_init_dt_scan_chosen(self, builtin_cmdline: str) -> str:
        fdt = self.blob()
        node = libfdt.fdt_path_offset(fdt, "/chosen")
        if node < 0:
            node = libfdt.fdt_path_offset(fdt, "/chosen@0")
        cmdline = ""
        if node >= 0:
            self.chosen_node_offset = node
            self.early_init_dt_check_for_initrd(fdt, node)
            seed, length = libfdt.fdt_getprop(fdt, node, "rng-seed")
            if seed is not None and length > 0:
                # add_bootloader_randomness(), then hide the seed from everyone after us.
                self.fdt_nop_property(node, "rng-seed")
            value, length = libfdt.fdt_getprop(self.blob(), node, "bootargs")
            if value is not None and length > 0:
                cmdline = value[:min(length, COMMAND_LINE_SIZE) - 1].split(b"\0", 1)[0].decode(
                    "utf-8", "surrogateescape")
        # arm64's CONFIG_CMDLINE_FROM_BOOTLOADER: the built-in line only when the boot loader gave none.
        if not cmdline:
            cmdline = builtin_cmdline
        self.k.printk.pr_debug(f"OF: fdt: Command line is: {cmdline}")
        return cmdline

    def early_init_dt_check_for_initrd(self, fdt: bytes, node: int) -> None:
        start_prop, slen = libfdt.fdt_getprop(fdt, node, "linux,initrd-start")
        if start_prop is None:
            return
        end_prop, elen = libfdt.fdt_getprop(fdt, node, "linux,initrd-end")
        if end_prop is None:
            return
        start, end = of_read_number(start_prop, slen // 4), of_read_number(end_prop, elen // 4)
        if start > end:
            return
        self.phys_initrd_start, self.phys_initrd_size = start, end - start
        self.k.printk.pr_debug(f"OF: fdt: initrd_start=0x{start:x}  initrd_end=0x{end:x}")

    def _addr_size_pairs(self, reg: bytes) -> list[tuple[int, int]]:
        na, ns = self.dt_root_addr_cells, self.dt_root_size_cells
        step = 4 * (na + ns)
        if not step:
            return []
        return [(of_read_number(reg[i:], na), of_read_number(reg[i + 4 * na:], ns))
                for i in range(0, len(reg) - step + 1, step)]

    def early_init_dt_scan_memory(self, fdt: bytes, add_memory: Callable[[int, int], None]) -> None:
        """Every available ``device_type = "memory"`` child of the root, into memblock."""
        for node in libfdt.fdt_for_each_subnode(fdt, 0):
            kind, _ = libfdt.fdt_getprop(fdt, node, "device_type")
            if kind is None or kind.split(b"\0", 1)[0] != b"memory":
                continue
            status, _ = libfdt.fdt_getprop(fdt, node, "status")
            if status is not None and status.split(b"\0", 1)[0] not in (b"okay", b"ok"):
                continue
            reg, _ = libfdt.fdt_getprop(fdt, node, "linux,usable-memory")
            if reg is None:
                reg, _ = libfdt.fdt_getprop(fdt, node, "reg")
            if reg is None:
                continue
            hotpluggable = libfdt.fdt_getprop(fdt, node, "hotpluggable")[0] is not None
            for base, size in self._addr_size_pairs(reg):
                if not size:
                    continue
                self.k.printk.pr_debug(f"OF: fdt:  - {base:x}, {size:x}")
                self.early_init_dt_add_memory_arch(base, size, add_memory)
                if hotpluggable and self.k.memblock.mark_hotplug(base, size):
                    self.k.printk.pr_warn(f"OF: fdt: failed to mark hotplug range 0x{base:x} - "
                                          f"0x{base + size:x}")

    def early_init_dt_add_memory_arch(self, base: int, size: int,
                                      add_memory: Callable[[int, int], None]) -> None:
        offset = base & (PAGE_SIZE - 1)
        if size < PAGE_SIZE - offset:
            self.k.printk.pr_warn(f"OF: fdt: Ignoring memory block 0x{base:x} - 0x{base + size:x}")
            return
        if offset:
            size -= PAGE_SIZE - offset
            base = PAGE_ALIGN(base)
        add_memory(base, size & ~(PAGE_SIZE - 1))

    def early_init_dt_check_kho(self, fdt: bytes) -> None:
        """KHO's hand-over in /chosen: both properties exactly one <addr size> pair long.

        6.16 reads both sizes with dt_root_addr_cells (fixed in 6.18 by "of/fdt: Fix the
        len check in early_init_dt_check_kho"); the same result while both are 2.
        """
        node = self.chosen_node_offset
        if node < 0:
            return
        want = 4 * (self.dt_root_addr_cells + self.dt_root_size_cells)
        found = []
        for name in ("linux,kho-fdt", "linux,kho-scratch"):
            value, length = libfdt.fdt_getprop(fdt, node, name)
            if value is None or length != want:
                return
            na = self.dt_root_addr_cells
            found.append((of_read_number(value, na), of_read_number(value[4 * na:], na)))
        (fdt_start, fdt_size), (scratch_start, scratch_size) = found
        self.k.kho.kho_populate(fdt_start, fdt_size, scratch_start, scratch_size)

    # -- later, from arm64_memblock_init --

    def early_init_fdt_scan_reserved_mem(self) -> None:
        """The tree's own memory, then every /memreserve/ entry (QEMU's virt tree has no
        /reserved-memory node; the simulator reads none)."""
        mb = self.k.memblock
        mb.reserve(self.initial_boot_params_pa, self.totalsize)   # early_init_fdt_reserve_self()
        fdt = self.blob()
        off = struct.unpack(">I", fdt[16:20])[0]
        while off + 16 <= len(fdt):
            base, size = struct.unpack_from(">QQ", fdt, off)
            if not size:
                break
            mb.reserve(base, size)
            off += 16

    def of_flat_dt_get_machine_name(self) -> str | None:
        fdt = self.blob()
        for name in ("model", "compatible"):
            value, _ = libfdt.fdt_getprop(fdt, 0, name)
            if value is not None:
                return value.split(b"\0", 1)[0].decode("utf-8", "replace")
        return None


def of_sysfs_properties(fdt: bytes) -> dict[str, bytes]:
    """Each node's properties as /sys/firmware/devicetree/base shows them: "/path/name" -> value.

    unflatten_device_tree() gives every node a "name" property (its name without the unit
    address, the root's empty) when the blob has none; NOP'd properties are gone.
    """
    files: dict[str, bytes] = {}

    def walk(node: int, path: str) -> None:
        offset = libfdt.fdt_first_property_offset(fdt, node)
        while offset >= 0:
            name, value, _ = libfdt.fdt_getprop_by_offset(fdt, offset)
            if name is not None and value is not None:
                files[f"{path}/{name}"] = value
            offset = libfdt.fdt_next_property_offset(fdt, offset)
        if f"{path}/name" not in files:
            node_name = libfdt.fdt_get_name(fdt, node) or ""
            files[f"{path}/name"] = node_name.split("@", 1)[0].encode() + b"\0"
        for child in libfdt.fdt_for_each_subnode(fdt, node):
            walk(child, f"{path}/{libfdt.fdt_get_name(fdt, child)}")

    walk(0, "")
    return files
