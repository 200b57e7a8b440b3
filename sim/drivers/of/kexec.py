"""drivers/of/kexec.c (Linux 6.16): the device tree the next kernel boots with, KHO's /chosen entries in it.

``of_kexec_alloc_and_setup_fdt`` copies the running kernel's tree (with room to grow),
drops the reservations of its own blob and of the initrd it booted with, rewrites
``/chosen`` — initrd, ``linux,elfcorehdr`` and ``linux,usable-memory-range`` removed (no
crash image here), ``kho_add_chosen``'s ``linux,kho-fdt`` and ``linux,kho-scratch``,
``bootargs``, ``kaslr-seed``, ``rng-seed``, ``linux,booted-from-kexec`` — all with
libfdt's editing calls (sim.lib.fdt_rw), so the result is byte for byte the kernel's.
Configuration: CONFIG_HAVE_IMA_KEXEC=y (an inherited IMA buffer is dropped),
CONFIG_IMA_KEXEC=n, CONFIG_KEXEC_HANDOVER=y, the RNG initialised.
"""

import errno
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from sim.kernel.printk import Printk
from sim.lib import fdt as libfdt
from sim.lib import fdt_rw
from sim.sizes import PAGE_SIZE, round_up

if TYPE_CHECKING:
    from sim.kernel.kexec_file import Kimage

RNG_SEED_SIZE = 128
FDT_EXTRA_SPACE = 0x1000


def fdt_find_and_del_mem_rsv(fdt: bytearray, start: int, size: int, printk: Printk) -> int:
    for i in range(max(fdt_rw.fdt_num_mem_rsv(fdt), 0)):
        ret, rsv_start, rsv_size = fdt_rw.fdt_get_mem_rsv(fdt, i)
        if ret:
            printk.pr_err("Malformed device tree.")
            return -errno.EINVAL
        if rsv_start == start and rsv_size == size:
            if fdt_rw.fdt_del_mem_rsv(fdt, i):
                printk.pr_err("Error deleting device tree reservation.")
                return -errno.EINVAL
            return 0
    return -errno.ENOENT


def _root_cells(fdt: bytearray) -> tuple[int, int]:
    """of_n_addr_cells/of_n_size_cells of the root (defaults 2 and 1 on arm64)."""
    addr = fdt_rw.fdt_address_cells(fdt, 0)
    size = fdt_rw.fdt_size_cells(fdt, 0)
    return (addr if addr > 0 else 2), (size if size >= 0 else 1)


def remove_ima_buffer(fdt: bytearray, chosen_node: int, printk: Printk) -> None:
    prop, length = libfdt.fdt_getprop(fdt, chosen_node, "linux,ima-kexec-buffer")
    if prop is None:
        return
    addr_cells, size_cells = _root_cells(fdt)
    fdt_rw.fdt_delprop(fdt, chosen_node, "linux,ima-kexec-buffer")
    if length < 4 * (addr_cells + size_cells):
        return
    addr = libfdt_read(prop, addr_cells)
    size = libfdt_read(prop[4 * addr_cells:], size_cells)
    if not fdt_find_and_del_mem_rsv(fdt, addr, size, printk):
        printk.pr_debug("Removed old IMA buffer reservation.")


def libfdt_read(cells: bytes, n: int) -> int:
    return int.from_bytes(cells[:4 * n], "big") & ((1 << 64) - 1)


def kho_add_chosen(image: "Kimage", fdt: bytearray, chosen_node: int, printk: Printk) -> int:
    """Replace any inherited KHO properties with this image's FDT page and scratch array."""
    for name in ("linux,kho-fdt", "linux,kho-scratch"):
        ret = fdt_rw.fdt_delprop(fdt, chosen_node, name)
        if ret and ret != -libfdt.FDT_ERR_NOTFOUND:
            return ret
    if not image.kho_fdt or image.kho_scratch is None:
        return 0
    printk.pr_debug("Adding kho metadata to DT")
    ret = fdt_rw.fdt_appendprop_addrrange(fdt, 0, chosen_node, "linux,kho-fdt", image.kho_fdt, PAGE_SIZE)
    if ret:
        return ret
    return fdt_rw.fdt_appendprop_addrrange(fdt, 0, chosen_node, "linux,kho-scratch",
                                           image.kho_scratch.mem, image.kho_scratch.bufsz)


def of_kexec_alloc_and_setup_fdt(initial_boot_params: bytes, initial_boot_params_pa: int,
                                 image: "Kimage", initrd_load_addr: int, initrd_len: int,
                                 cmdline: str | None, extra_fdt_size: int,
                                 get_random_bytes: Callable[[int], bytes],
                                 printk: Printk) -> bytearray | None:
    """The next kernel's tree (not yet packed), or None where the kernel returns NULL."""
    totalsize = libfdt.fdt_totalsize(initial_boot_params)
    cmdline_bytes = None if cmdline is None else cmdline.encode("utf-8", "surrogateescape")
    fdt_size = totalsize + (len(cmdline_bytes) if cmdline_bytes is not None else 0) + FDT_EXTRA_SPACE \
        + extra_fdt_size
    ret, fdt = fdt_rw.fdt_open_into(initial_boot_params, fdt_size)
    if ret < 0:
        printk.pr_err(f"Error {ret} setting up the new device tree.")
        return None
    if fdt_find_and_del_mem_rsv(fdt, initial_boot_params_pa, totalsize, printk) == -errno.EINVAL:
        printk.pr_err("Error removing memory reservation.")
        return None
    chosen_node = libfdt.fdt_path_offset(fdt, "/chosen")
    if chosen_node == -libfdt.FDT_ERR_NOTFOUND:
        chosen_node = fdt_rw.fdt_add_subnode(fdt, libfdt.fdt_path_offset(fdt, "/"), "chosen")
    if chosen_node < 0:
        return None
    ret = _setup_chosen(fdt, chosen_node, image, initrd_load_addr, initrd_len, cmdline_bytes,
                        get_random_bytes, printk)
    return None if ret else fdt


def _setup_chosen(fdt: bytearray, chosen_node: int, image: "Kimage", initrd_load_addr: int,
                  initrd_len: int, cmdline: bytes | None, get_random_bytes: Callable[[int], bytes],
                  printk: Printk) -> int:
    for name in ("linux,elfcorehdr", "linux,usable-memory-range"):
        ret = fdt_rw.fdt_delprop(fdt, chosen_node, name)
        if ret and ret != -libfdt.FDT_ERR_NOTFOUND:
            return ret
    prop, length = libfdt.fdt_getprop(fdt, chosen_node, "linux,initrd-start")
    if prop is not None:
        tmp_start = libfdt_read(prop, length // 4)
        prop, length = libfdt.fdt_getprop(fdt, chosen_node, "linux,initrd-end")
        if prop is None:
            return -errno.EINVAL
        tmp_size = (libfdt_read(prop, length // 4) - tmp_start) & ((1 << 64) - 1)
        ret = fdt_find_and_del_mem_rsv(fdt, tmp_start, tmp_size, printk)
        if ret == -errno.ENOENT:
            ret = fdt_find_and_del_mem_rsv(fdt, tmp_start, round_up(tmp_size, PAGE_SIZE), printk)
        if ret == -errno.EINVAL:
            return ret
    if initrd_load_addr:
        ret = (fdt_rw.fdt_setprop_u64(fdt, chosen_node, "linux,initrd-start", initrd_load_addr)
               or fdt_rw.fdt_setprop_u64(fdt, chosen_node, "linux,initrd-end", initrd_load_addr + initrd_len)
               or fdt_rw.fdt_add_mem_rsv(fdt, initrd_load_addr, initrd_len))
        if ret:
            return ret
    else:
        for name in ("linux,initrd-start", "linux,initrd-end"):
            ret = fdt_rw.fdt_delprop(fdt, chosen_node, name)
            if ret and ret != -libfdt.FDT_ERR_NOTFOUND:
                return ret
    # A crash image never gets here: arm64's image_load refuses it (-EOPNOTSUPP).
    ret = kho_add_chosen(image, fdt, chosen_node, printk)
    if ret:
        return ret
    if cmdline is not None:
        ret = fdt_rw.fdt_setprop(fdt, chosen_node, "bootargs", cmdline.split(b"\0", 1)[0] + b"\0")
    else:
        ret = fdt_rw.fdt_delprop(fdt, chosen_node, "bootargs")
        ret = 0 if ret == -libfdt.FDT_ERR_NOTFOUND else ret
    if ret:
        return ret
    ret = fdt_rw.fdt_delprop(fdt, chosen_node, "kaslr-seed")
    if ret and ret != -libfdt.FDT_ERR_NOTFOUND:
        return ret
    ret = (fdt_rw.fdt_setprop(fdt, chosen_node, "kaslr-seed", struct.pack(">Q", int.from_bytes(
        get_random_bytes(8), "little")))
           or fdt_rw.fdt_setprop(fdt, chosen_node, "rng-seed", get_random_bytes(RNG_SEED_SIZE))
           or fdt_rw.fdt_setprop(fdt, chosen_node, "linux,booted-from-kexec", b""))
    if ret:
        return ret
    remove_ima_buffer(fdt, chosen_node, printk)
    return 0
