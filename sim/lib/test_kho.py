"""lib/test_kho.c (6.17; 6.18 layout by kernel version): the kernel's own KHO self-test user.

First boot: allocate folios of random orders up to test_kho.max_mem, fill them
with random bytes, checksum them and preserve them; publish a "kho_test"
sub-FDT on finalize.  A boot that receives that sub-FDT restores every folio,
compares the checksum and logs "test_kho: KHO restore succeeded" — the
selftest's pass criterion — and saves nothing new (so generations alternate).
"""

import errno
import struct
from typing import TYPE_CHECKING

from sim.kernel.kexec_handover import (
    KEXEC_KHO_ABORT,
    KEXEC_KHO_FINALIZE,
    NOTIFY_BAD,
    NOTIFY_DONE,
    KhoSerialization,
)
from sim.lib import fdt as libfdt
from sim.lib.cmdline import KernelParam, module_param_long
from sim.mm.page_alloc import Folio
from sim.sizes import MAX_PAGE_ORDER, NR_PAGE_ORDERS, PAGE_ALIGN, PAGE_SIZE, get_order

if TYPE_CHECKING:
    from sim.kernel.module import KernelApi

KHO_TEST_MAGIC = 0x4B484F21          # 'KHO!'
KHO_TEST_FDT = "kho_test"
KHO_TEST_COMPAT = "kho-test-v1"
PAGE_MASK = ~(PAGE_SIZE - 1)


class TestKho:
    """The module's state (struct kho_test_state) plus its init and notifier.

    Written against the KHO user API only (sim.kernel.module.KernelApi), as a module built into
    the kernel: what it needs, any KHO user gets."""

    __test__ = False                # a kernel module, not a pytest class

    def __init__(self, kernel: "KernelApi") -> None:
        self.k = kernel
        self.max_mem: KernelParam = module_param_long("test_kho", "max_mem",
                                                      (PAGE_SIZE << MAX_PAGE_ORDER) * 2)
        self.folios: list[Folio] = []
        self.fdt: Folio | None = None
        self.csum = 0

    def kho_test_generate_data(self) -> int:
        max_mem = self.max_mem.value
        alloc_size, csum = 0, 0
        while alloc_size < max_mem:
            order = self.k.get_random_u32() % NR_PAGE_ORDERS
            if alloc_size + (PAGE_SIZE << order) > max_mem:
                order = get_order(max_mem - alloc_size)
                if order:
                    order -= 1
            size = PAGE_SIZE << order
            folio = self.k.folio_alloc(order)
            if folio is None:
                for f in self.folios:
                    self.k.folio_put(f)
                self.folios.clear()
                return -errno.ENOMEM
            self.folios.append(folio)
            data = self.k.get_random_bytes(size)
            self.k.phys_write(folio.phys, data)
            csum = self.k.csum_partial(data, csum)
            alloc_size += size
        self.csum = csum
        return 0

    def kho_test_prepare_fdt(self) -> int:
        """The kho_test sub-FDT in a folio sized for nr_folios u64s plus a page."""
        nr = len(self.folios)
        fdt_size = nr * 8 + PAGE_SIZE
        folio = self.k.folio_alloc(get_order(fdt_size))
        if folio is None:
            return -errno.ENOMEM
        self.fdt = folio
        infos = [f.phys | f.order for f in self.folios]
        sw = libfdt.FdtSw(fdt_size)
        err = sw.finish_reservemap()
        err |= sw.begin_node("")
        err |= sw.property("compatible", KHO_TEST_COMPAT.encode() + b"\0")
        err |= sw.property("magic", struct.pack("<I", KHO_TEST_MAGIC))
        err |= sw.begin_node("data")
        err |= sw.property("nr_folios", struct.pack("<I", nr))
        if self.k.kernel_version >= (6, 18):
            verr, preservation = self.k.kho_preserve_vmalloc(struct.pack(f"<{nr}Q", *infos))
            err |= verr or sw.property("folios_info", preservation)
        else:
            err |= sw.property("folios_info", struct.pack(f"<{nr}Q", *infos))
        err |= sw.property("csum", struct.pack("<I", self.csum))
        err |= sw.end_node()
        err |= sw.end_node()
        err |= sw.finish()
        self.k.phys_write(folio.phys, sw.buf)
        if not err:
            for f in self.folios:
                err = self.k.kho_preserve_folio(f)
                if err:
                    break
        return err

    def kho_test_notifier(self, cmd: int, ser: KhoSerialization | None) -> int:
        if cmd == KEXEC_KHO_ABORT:
            return NOTIFY_DONE
        if cmd != KEXEC_KHO_FINALIZE or ser is None or self.fdt is None:
            return NOTIFY_BAD
        err = self.k.kho_preserve_folio(self.fdt)
        err |= self.k.kho_add_subtree(ser, KHO_TEST_FDT, self.fdt.phys)
        return NOTIFY_BAD if err else NOTIFY_DONE

    def kho_test_save(self) -> int:
        self.max_mem.value = PAGE_ALIGN(self.max_mem.value)
        err = self.kho_test_generate_data()
        if err:
            return err
        err = self.kho_test_prepare_fdt()
        if err:
            return err
        return self.k.register_kho_notifier(self.kho_test_notifier)

    def kho_test_restore_data(self, fdt: bytes) -> int:
        node = libfdt.fdt_path_offset(fdt, "/data")
        nr_folios, length = libfdt.fdt_getprop(fdt, node, "nr_folios")
        if nr_folios is None or length != 4:
            return -errno.EINVAL
        nr = struct.unpack("<I", nr_folios)[0]
        old_csum, length = libfdt.fdt_getprop(fdt, node, "csum")
        if old_csum is None or length != 4:
            return -errno.EINVAL
        info, length = libfdt.fdt_getprop(fdt, node, "folios_info")
        if self.k.kernel_version >= (6, 18):
            if info is None or length != 16:
                return -errno.EINVAL
            info = self.k.kho_restore_vmalloc(info)
            if info is None or len(info) < nr * 8:
                return -errno.EINVAL
        elif info is None or length != 8 * nr:
            return -errno.EINVAL
        csum = 0
        for (value,) in struct.iter_unpack("<Q", info[:nr * 8]):
            order, phys = value & ~PAGE_MASK, value & PAGE_MASK
            folio = self.k.kho_restore_folio(phys)
            if folio is None or folio.order != order:
                break
            csum = self.k.csum_partial(self.k.phys_read(phys, PAGE_SIZE << order), csum)
            self.k.folio_put(folio)
        if csum != struct.unpack("<I", old_csum)[0]:
            return -errno.EINVAL
        return 0

    def kho_test_restore(self, fdt_phys: int) -> int:
        fdt = self.k.map_fdt(fdt_phys)
        node = libfdt.fdt_path_offset(fdt, "/")
        if node < 0:
            return -errno.EINVAL
        if libfdt.fdt_node_check_compatible(fdt, node, KHO_TEST_COMPAT):
            return -errno.EINVAL
        magic, length = libfdt.fdt_getprop(fdt, node, "magic")
        if magic is None or length != 4 or struct.unpack("<I", magic)[0] != KHO_TEST_MAGIC:
            return -errno.EINVAL
        err = self.kho_test_restore_data(fdt)
        if err:
            if self.k.kernel_version >= (6, 18):
                self.k.pr_err("test_kho: KHO restore failed")
            return err
        self.k.pr_info("test_kho: KHO restore succeeded")
        return 0

    def kho_test_init(self) -> int:
        """module_init (device_initcall): restore if a kho_test tree came in, else save afresh."""
        if self.k.kernel_version >= (6, 18) and not self.k.kho_is_enabled():
            return 0
        err, fdt_phys = self.k.kho_retrieve_subtree(KHO_TEST_FDT)
        if not err:
            return self.kho_test_restore(fdt_phys)
        if err != -errno.ENOENT:
            self.k.pr_warn(f"test_kho: failed to retrieve {KHO_TEST_FDT} FDT: {err}")
            return err
        return self.kho_test_save()
