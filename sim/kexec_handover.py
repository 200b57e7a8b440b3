"""The API for KHO users: include/linux/kexec_handover.h (Linux 6.16) in Python.

SYNOPSIS
    # my_kho_user.py, loaded with Machine(modules=["my_kho_user.py"]) or `khofs run --module`
    from sim.kexec_handover import KEXEC_KHO_FINALIZE, FdtSw, KernelApi, module_init, ...

    @module_init
    def my_init(kernel: KernelApi) -> int:
        err, fdt_phys = kernel.kho_retrieve_subtree("my-user")
        ...                          # restore on the way in, register a notifier for the way out

DESCRIPTION
    A KHO user is a module: a Python file whose ``@module_init`` (device_initcall) or
    ``@late_initcall`` function every kernel of the machine calls at boot, cold or after a
    kexec, with a ``KernelApi``.  Each kernel runs the file afresh, so the module's globals
    die with its kernel: what should outlive a kexec must be preserved through KHO (state
    crosses only through RAM, as on hardware).

    The outgoing kernel: allocate folios (``kernel.folio_alloc``), fill them
    (``kernel.phys_write``), build a sub-FDT describing them with ``FdtSw`` (KHO stores its
    own integers in the CPU's byte order: ``FdtSw.property_native_u64``, not libfdt's
    big-endian ``property_u64``), and ``kernel.register_kho_notifier(nb)``.  At
    ``echo 1 > kho/out/finalize`` the notifier gets ``(KEXEC_KHO_FINALIZE, ser)`` and calls
    ``kernel.kho_preserve_folio`` / ``kho_preserve_phys`` and
    ``kernel.kho_add_subtree(ser, name, fdt_phys)``; it returns ``NOTIFY_DONE`` or
    ``notifier_from_errno(err)``.  ``(KEXEC_KHO_ABORT, None)`` comes on abort.

    The incoming kernel: ``kernel.kho_retrieve_subtree(name)`` gives ``(0, fdt_phys)`` or
    ``(-ENOENT, 0)``; ``kernel.map_fdt(fdt_phys)`` the tree's bytes for the ``fdt_*``
    readers; ``kernel.kho_restore_folio(phys)`` each preserved folio (None if it was not
    preserved).

    Calls return what the kernel's do: 0 or a negative errno, None for a NULL pointer.
    Log lines (``kernel.pr_info``...) appear in dmesg; ``kernel.debugfs_create_*`` files
    appear under /sys/kernel/debug in the mount.  A Python exception in module code is an
    oops: a ``khofs: module NAME: ...`` line and the traceback in the log, never a crash.

VERSIONS
    ``Machine(kernel_version="6.18")`` adds ``kho_preserve_pages``, ``kho_preserve_vmalloc``
    and ``kho_restore_vmalloc``; on 6.16 they raise AttributeError, as an unresolved symbol
    fails a module's link.  ``kernel.kernel_version`` tells a module which it runs on.

KEXEC
    ``make_bzimage(kernel_version, cmdline=...)`` builds an image of the simulated kernel
    (``make_kernel_image("arm64", kernel_version, cmdline)`` one for ``Machine(arch="arm64")``);
    ``machine.kernel.kexec_file_load(image, initrd, cmdline, flags)`` loads it with the
    KEXEC_FILE_* flags below (KEXEC_FILE_NO_INITRAMFS when initrd is None) and
    ``machine.kexec()`` reboots into it, returning the new kernel.  Finalize first
    (``kernel.debugfs.write("kho/out/finalize", b"1\\n")``) for the hand-over; the pytest
    plugin's ``kho_kexec(machine)`` does all three.

Everything else in ``sim`` is internal and may change.
"""

import struct

from sim.arch import make_kernel_image
from sim.arch.x86.boot.bzimage import make_bzimage
from sim.kernel.kexec_file import (
    KEXEC_FILE_DEBUG,
    KEXEC_FILE_NO_INITRAMFS,
    KEXEC_FILE_ON_CRASH,
    KEXEC_FILE_UNLOAD,
)
from sim.kernel.kexec_handover import (
    KEXEC_KHO_ABORT,
    KEXEC_KHO_FINALIZE,
    NOTIFY_BAD,
    NOTIFY_DONE,
    NOTIFY_OK,
    NOTIFY_STOP_MASK,
    KhoSerialization,
    Notifier,
    notifier_from_errno,
    notifier_to_errno,
)
from sim.kernel.module import KernelApi, late_initcall, module_init
from sim.lib.fdt import (
    FdtSw,
    fdt_for_each_subnode,
    fdt_get_name,
    fdt_getprop,
    fdt_node_check_compatible,
    fdt_path_offset,
    fdt_subnode_offset,
)
from sim.machine import Machine
from sim.mm.page_alloc import Folio
from sim.sizes import PAGE_SHIFT, PAGE_SIZE, get_order


def fdt_getprop_native_u64(fdt: bytes, nodeoffset: int, name: str) -> int | None:
    """A u64 property KHO-style (CPU byte order, exactly 8 bytes), or None if absent or mis-sized."""
    value, length = fdt_getprop(fdt, nodeoffset, name)
    if value is None or length != 8:
        return None
    return struct.unpack("<Q", value)[0]


__all__ = [
    # modules and the kernel they run in
    "Machine",
    "KernelApi",
    "module_init",
    "late_initcall",
    # kexec_handover.h
    "KEXEC_KHO_FINALIZE",
    "KEXEC_KHO_ABORT",
    "KhoSerialization",
    "Notifier",
    # notifier.h
    "NOTIFY_DONE",
    "NOTIFY_OK",
    "NOTIFY_BAD",
    "NOTIFY_STOP_MASK",
    "notifier_from_errno",
    "notifier_to_errno",
    # memory
    "Folio",
    "PAGE_SIZE",
    "PAGE_SHIFT",
    "get_order",
    # libfdt
    "FdtSw",
    "fdt_getprop",
    "fdt_getprop_native_u64",
    "fdt_path_offset",
    "fdt_subnode_offset",
    "fdt_node_check_compatible",
    "fdt_for_each_subnode",
    "fdt_get_name",
    # kexec: an image to load, and uapi/linux/kexec.h
    "make_bzimage",
    "make_kernel_image",
    "KEXEC_FILE_UNLOAD",
    "KEXEC_FILE_ON_CRASH",
    "KEXEC_FILE_NO_INITRAMFS",
    "KEXEC_FILE_DEBUG",
]
