"""reserve_mem= (mm/memblock.c): named boot-time reservations, and their KHO hand-over.

An entry is kept at the same physical address across a KHO kexec: the outgoing
kernel describes its table in the "memblock" sub-FDT and preserves the ranges;
the incoming kernel finds each name there while parsing its command line.
"""

import errno
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sim.kernel.kexec_handover import (
    KEXEC_KHO_ABORT,
    KEXEC_KHO_FINALIZE,
    NOTIFY_BAD,
    NOTIFY_DONE,
    KhoSerialization,
    notifier_from_errno,
)
from sim.lib import fdt as libfdt
from sim.lib.cmdline import reserve_mem_parse
from sim.mm.page_alloc import Folio
from sim.sizes import PAGE_SHIFT, PAGE_SIZE

if TYPE_CHECKING:
    from sim.init.main import Kernel

MEMBLOCK_KHO_FDT = "memblock"
MEMBLOCK_KHO_NODE_COMPATIBLE = "memblock-v1"
RESERVE_MEM_KHO_NODE_COMPATIBLE = "reserve-mem-v1"

@dataclass
class ReserveMemTable:
    name: str
    start: int
    size: int


class ReserveMem:
    """The reserve_mem table of one kernel, its debugfs file and its KHO notifier."""

    def __init__(self, kernel: "Kernel") -> None:
        self.k = kernel
        self.reserved_mem_table: list[ReserveMemTable] = []
        self.kho_fdt: Folio | None = None
        self._kho_fdt_in: bytes | None = None

    def reserved_mem_add(self, start: int, size: int, name: str) -> None:
        self.reserved_mem_table.append(ReserveMemTable(name, start, size))

    def reserve_mem_find_by_name(self, name: str) -> tuple[int, int] | None:
        for entry in self.reserved_mem_table:
            if entry.size and entry.name == name:
                return entry.start, entry.size
        return None

    def reserve_mem(self, p: str) -> int:
        """__setup("reserve_mem=") handler.  Errors are silent: any non-zero return means handled."""
        try:
            size, align, name = reserve_mem_parse(
                p, [(e.name, e.size) for e in self.reserved_mem_table])
        except OSError as e:
            return -(e.errno or errno.EINVAL)
        if self.reserve_mem_kho_revive(name, size, align):
            return 1
        # 6.16 leaves a TODO here: after a KHO boot this allocation comes out of scratch.
        start = self.k.memblock.phys_alloc(size, align)
        if not start:
            return -errno.ENOMEM
        self.reserved_mem_add(start, size, name)
        return 1

    # -- outgoing KHO --

    def prepare_kho_fdt(self) -> int:
        folio = self.k.page_alloc.alloc_pages(0)
        if folio is None:
            return -errno.ENOMEM
        sw = libfdt.FdtSw(PAGE_SIZE)
        err = sw.finish_reservemap()
        err |= sw.begin_node("")
        err |= sw.property_string("compatible", MEMBLOCK_KHO_NODE_COMPATIBLE)
        for entry in self.reserved_mem_table:
            err |= sw.begin_node(entry.name)
            err |= sw.property_string("compatible", RESERVE_MEM_KHO_NODE_COMPATIBLE)
            err |= sw.property("start", struct.pack("<Q", entry.start))
            err |= sw.property("size", struct.pack("<Q", entry.size))
            err |= sw.end_node()
        err |= sw.end_node()
        err |= sw.finish()
        self.k.physmem.write(folio.phys, bytes(sw.buf))
        if err:
            self.k.printk.pr_err(f"failed to prepare memblock FDT for KHO: {err}")
            self.k.page_alloc.free_folio(folio)
            return err
        self.kho_fdt = folio
        return 0

    def reserve_mem_kho_finalize(self, ser: KhoSerialization) -> int:
        kho = self.k.kho
        assert self.kho_fdt is not None
        err = 0
        for entry in self.reserved_mem_table:
            if self.k.kver >= (6, 18):
                err |= kho.kho_preserve_pages(entry.start >> PAGE_SHIFT, entry.size >> PAGE_SHIFT)
            else:
                err |= kho.kho_preserve_phys(entry.start, entry.size)
        err |= kho.kho_preserve_folio(self.kho_fdt)
        err |= kho.kho_add_subtree(ser, MEMBLOCK_KHO_FDT, self.kho_fdt.phys)
        return notifier_from_errno(err)

    def reserve_mem_kho_notifier(self, cmd: int, ser: KhoSerialization | None) -> int:
        if cmd == KEXEC_KHO_FINALIZE:
            assert ser is not None
            return self.reserve_mem_kho_finalize(ser)
        if cmd == KEXEC_KHO_ABORT:
            return NOTIFY_DONE
        return NOTIFY_BAD

    def reserve_mem_init(self) -> int:
        """late_initcall: build the memblock sub-FDT once and join the KHO notifier chain."""
        if not self.k.kho.kho_is_enabled() or not self.reserved_mem_table:
            return 0
        err = self.prepare_kho_fdt()
        if err:
            return err
        return self.k.kho.register_kho_notifier(self.reserve_mem_kho_notifier)

    # -- incoming KHO --

    def reserve_mem_kho_retrieve_fdt(self) -> bytes | None:
        if self._kho_fdt_in is not None:
            return self._kho_fdt_in
        err, phys = self.k.kho.kho_retrieve_subtree(MEMBLOCK_KHO_FDT)
        if err:
            if err != -errno.ENOENT:
                self.k.printk.pr_warn(f"failed to retrieve FDT '{MEMBLOCK_KHO_FDT}' from KHO: {err}")
            return None
        fdt = self.k.kho.map_fdt(phys, PAGE_SIZE)
        err = libfdt.fdt_node_check_compatible(fdt, 0, MEMBLOCK_KHO_NODE_COMPATIBLE)
        if err:
            self.k.printk.pr_warn(f"FDT '{MEMBLOCK_KHO_FDT}' is incompatible with "
                                  f"'{MEMBLOCK_KHO_NODE_COMPATIBLE}': {err}")
            return None
        self._kho_fdt_in = fdt
        return fdt

    def reserve_mem_kho_revive(self, name: str, size: int, align: int) -> bool:
        fdt = self.reserve_mem_kho_retrieve_fdt()
        if fdt is None:
            return False
        printk = self.k.printk
        offset = libfdt.fdt_subnode_offset(fdt, 0, name)
        if offset < 0:
            printk.pr_warn(f"FDT '{MEMBLOCK_KHO_FDT}' has no child '{name}': {offset}")
            return False
        err = libfdt.fdt_node_check_compatible(fdt, offset, RESERVE_MEM_KHO_NODE_COMPATIBLE)
        if err:
            printk.pr_warn(f"Node '{name}' is incompatible with '{RESERVE_MEM_KHO_NODE_COMPATIBLE}': {err}")
            return False
        p_start, len_start = libfdt.fdt_getprop(fdt, offset, "start")
        p_size, len_size = libfdt.fdt_getprop(fdt, offset, "size")
        if p_start is None or len_start != 8 or p_size is None or len_size != 8:
            return False
        start = struct.unpack("<Q", p_start)[0]
        old_size = struct.unpack("<Q", p_size)[0]
        if start & (align - 1):
            printk.pr_warn(f"KHO reserve-mem '{name}' has wrong alignment (0x{align:x}, 0x{start:x})")
            return False
        if old_size != size:
            printk.pr_warn(f"KHO reserve-mem '{name}' has wrong size (0x{old_size:x} != 0x{size:x})")
            return False
        self.reserved_mem_add(start, size, name)
        printk.pr_info(f"Revived memory reservation '{name}' from KHO")
        self.k.kho.kho_check_preserved(f"reserve_mem '{name}'", start, size)
        return True
