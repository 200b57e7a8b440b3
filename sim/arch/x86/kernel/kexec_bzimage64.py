"""arch/x86/kernel/kexec-bzimage64.c (Linux 6.16): kexec_file_load's bzImage64 loader.

bzImage64_load, setup_boot_parameters, setup_kho and setup_rng_seed; the simulated purgatory
whose entry64_regs machine_kexec jumps with; and what firmware and a boot loader do on a cold
boot.  Configuration: CONFIG_EFI=y on a BIOS-booted machine (EFI setup_data space is reserved
but not linked), CONFIG_OF_FLATTREE=n, the RNG initialised (so an RNG seed is always handed
over).

Cold boot: `write_cold_boot` plays firmware and boot loader.  It puts the
protected-mode payload at 16 MiB, the zero page at `COLD_BOOT_PARAMS_ADDR`
(0x90000) and the command line at `COLD_BOOT_CMDLINE_ADDR` (0x99000), both below
1 MiB where a boot loader puts them and where x86 Linux reserves memory anyway,
and an initrd, if any, as high as it fits below ``initrd_addr_max``.
"""

import errno
import struct

from sim.arch.x86.boot.bzimage import BZIMAGE64_PR_FMT as _PR_BZ
from sim.arch.x86.boot.bzimage import kern16_size, make_bzimage, setup_header
from sim.arch.x86.bootparam import (
    BOOT_PARAMS_SIZE,
    E820_MAX_ENTRIES_ZEROPAGE,
    E820_TYPE_RAM,
    KHO_DATA_SIZE,
    SETUP_DATA_HDR_SIZE,
    SETUP_HEADER_OFFSET,
    SETUP_KEXEC_KHO,
    SETUP_RNG_SEED,
    BootParams,
    E820Entry,
    KhoData,
    pack_setup_data,
)
from sim.kernel.kexec_file import ALIGN, Kexec, KexecBuf, Kimage
from sim.physmem import PhysMem
from sim.sizes import PAGE_SIZE, SZ_1M, SZ_16M, ULONG_MAX

# arch/x86/kernel/kexec-bzimage64.c
MIN_PURGATORY_ADDR = 0x3000
MIN_BOOTPARAM_ADDR = 0x3000
MIN_KERNEL_LOAD_ADDR = 0x100000
MIN_INITRD_LOAD_ADDR = 0x1000000
MAX_ELFCOREHDR_STR_LEN = 30
RNG_SEED_LENGTH = 32
EFI_SETUP_DATA_SIZE = 96          # sizeof(struct efi_setup_data)
ELFCOREHDR_SIZE = 0x2000          # what crash_load_segments() would ask for (never placed: no crashkernel=)
# The purgatory: x86's purgatory.ro gives a 0x4000-byte buffer plus a page of .bss (its stack).
PURGATORY_BUFSZ = 0x4000
PURGATORY_MEMSZ = 0x5000
PURGATORY_MAGIC = b"khofs purgatory\0"
ENTRY64_REGS_OFFSET = 0x10        # struct kexec_entry64_regs inside the simulated purgatory
_ENTRY64_REGS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                 "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip")
TYPE_OF_LOADER_KEXEC = 0x0D << 4

# write_cold_boot() layout, below 1 MiB.
COLD_BOOT_PARAMS_ADDR = 0x90000
COLD_BOOT_CMDLINE_ADDR = 0x99000
COLD_BOOT_TYPE_OF_LOADER = 0xFF     # "boot loader without an assigned id" (boot.rst)


def bzImage64_load(kexec: Kexec, image: Kimage, kernel: bytes, initrd: bytes | None,
                   cmdline: bytes) -> int:
    printk = kexec.host.printk
    hdr = BootParams.from_bytes(kernel[:BOOT_PARAMS_SIZE].ljust(BOOT_PARAMS_SIZE, b"\0"))
    k16 = kern16_size(kernel)
    if len(kernel) < k16:
        printk.pr_err(_PR_BZ + "bzImage truncated")
        return -errno.ENOEXEC
    cmdline_len = len(cmdline)
    if cmdline_len > hdr.cmdline_size:
        printk.pr_err(_PR_BZ + "Kernel command line too long")
        return -errno.EINVAL
    if cmdline_len + MAX_ELFCOREHDR_STR_LEN > hdr.cmdline_size:
        printk.pr_err(_PR_BZ + "Appending elfcorehdr=<addr> to command line exceeds maximum "
                      "allowed length")
        return -errno.EINVAL
    if image.is_crash:
        # crash_load_segments(): the ELF core header goes bottom-up into crashk_res,
        # which without crashkernel= is the empty [0, 0] -> -EADDRNOTAVAIL.
        ret = kexec.kexec_add_buffer(KexecBuf(image, bytes(ELFCOREHDR_SIZE), ELFCOREHDR_SIZE,
                                             memsz=ELFCOREHDR_SIZE, buf_max=ULONG_MAX))
        if ret:
            return ret

    pbuf = KexecBuf(image, bytes(PURGATORY_BUFSZ), PURGATORY_BUFSZ, memsz=PURGATORY_MEMSZ,
                    buf_align=16, buf_min=MIN_PURGATORY_ADDR, buf_max=ULONG_MAX, top_down=True)
    ret = kexec.kexec_add_buffer(pbuf)
    if ret:
        printk.pr_err(_PR_BZ + "Loading purgatory failed")
        return ret
    purgatory = image.segments[-1]
    image.start = pbuf.mem
    kexec.kexec_dprintk(f"{_PR_BZ}Loaded purgatory at {pbuf.mem:#x}")

    params_cmdline_sz = ALIGN(BOOT_PARAMS_SIZE + cmdline_len + MAX_ELFCOREHDR_STR_LEN, 16)
    efi_map_sz = 0
    bufsz = (params_cmdline_sz + ALIGN(efi_map_sz, 16) + SETUP_DATA_HDR_SIZE + EFI_SETUP_DATA_SIZE
             + SETUP_DATA_HDR_SIZE + RNG_SEED_LENGTH + SETUP_DATA_HDR_SIZE + KHO_DATA_SIZE)
    params = bytearray(bufsz)
    efi_setup_data_offset = params_cmdline_sz + ALIGN(efi_map_sz, 16)
    header = setup_header(kernel)
    params[SETUP_HEADER_OFFSET:SETUP_HEADER_OFFSET + len(header)] = header
    kbuf = KexecBuf(image, bytes(params), bufsz, memsz=bufsz, buf_align=16, buf_min=MIN_BOOTPARAM_ADDR,
                    buf_max=ULONG_MAX, top_down=True)
    ret = kexec.kexec_add_buffer(kbuf)
    if ret:
        return ret
    params_seg = image.segments[-1]
    bootparam_load_addr = kbuf.mem
    kexec.kexec_dprintk(f"{_PR_BZ}Loaded boot_param, command line and misc at {bootparam_load_addr:#x} "
                       f"bufsz={kbuf.bufsz:#x} memsz={kbuf.memsz:#x}")

    kbuf = KexecBuf(image, kernel[k16:], len(kernel) - k16,
                    memsz=ALIGN(hdr.init_size, PAGE_SIZE), buf_align=hdr.kernel_alignment,
                    buf_min=max(hdr.pref_address, MIN_KERNEL_LOAD_ADDR), buf_max=ULONG_MAX,
                    top_down=True)
    ret = kexec.kexec_add_buffer(kbuf)
    if ret:
        return ret
    kernel_load_addr = kbuf.mem
    kexec.kexec_dprintk(f"{_PR_BZ}Loaded 64bit kernel at {kernel_load_addr:#x} "
                       f"bufsz={kbuf.bufsz:#x} memsz={kbuf.memsz:#x}")

    bp = BootParams.from_bytes(bytes(params[:BOOT_PARAMS_SIZE]))
    if initrd is not None:
        kbuf = KexecBuf(image, initrd, len(initrd), memsz=len(initrd), buf_align=PAGE_SIZE,
                        buf_min=MIN_INITRD_LOAD_ADDR, buf_max=ULONG_MAX, top_down=True)
        ret = kexec.kexec_add_buffer(kbuf)
        if ret:
            return ret
        image.initrd_load_addr = kbuf.mem
        kexec.kexec_dprintk(f"{_PR_BZ}Loaded initrd at {kbuf.mem:#x} bufsz={len(initrd):#x} "
                           f"memsz={len(initrd):#x}")
        bp.ramdisk_image = kbuf.mem & 0xFFFFFFFF
        bp.ramdisk_size = len(initrd) & 0xFFFFFFFF
        bp.ext_ramdisk_image = kbuf.mem >> 32
        bp.ext_ramdisk_size = len(initrd) >> 32

    # setup_cmdline(): the line goes right after the zero page; its last byte is forced
    # to NUL (with cmdline_len 0 that is the zero page's last byte, as in the kernel).
    params[BOOT_PARAMS_SIZE:BOOT_PARAMS_SIZE + cmdline_len] = cmdline
    params[BOOT_PARAMS_SIZE + cmdline_len - 1] = 0
    final = bytes(params[BOOT_PARAMS_SIZE:]).split(b"\0", 1)[0]
    kexec.kexec_dprintk(f"{_PR_BZ}Final command line is: "
                       f"{final.decode('utf-8', 'surrogateescape')}")
    cmdline_ptr_phys = bootparam_load_addr + BOOT_PARAMS_SIZE
    bp.cmd_line_ptr = cmdline_ptr_phys & 0xFFFFFFFF
    if cmdline_ptr_phys >> 32:
        bp.ext_cmd_line_ptr = cmdline_ptr_phys >> 32
    bp.type_of_loader = TYPE_OF_LOADER_KEXEC
    bp.loadflags = 0

    regs = dict.fromkeys(_ENTRY64_REGS, 0)
    regs["rsi"] = bootparam_load_addr
    regs["rip"] = kernel_load_addr + 0x200
    regs["rsp"] = pbuf.mem + PURGATORY_MEMSZ      # stack_end, top of the purgatory's .bss
    purgatory.buffer = _purgatory_bytes(regs)

    setup_boot_parameters(kexec, image, bp, params, bootparam_load_addr, efi_setup_data_offset)
    params_seg.buffer = bytes(params)
    image.kernel_load_addr = kernel_load_addr
    image.bootparam_load_addr = bootparam_load_addr
    return 0

def setup_boot_parameters(kexec: Kexec, image: Kimage, bp: BootParams, params: bytearray,
                          params_load_addr: int, setup_data_offset: int) -> None:
    # hardware_subarch, screen_info, ACPI RSDP, EDD: all zero on the simulated PC.
    bp.ext_mem_k = 0
    bp.alt_mem_k = 0
    table = list(kexec.host.e820_table_kexec)[:E820_MAX_ENTRIES_ZEROPAGE]
    bp.e820_table = table
    bp.e820_entries = len(table)
    kexec.kexec_dprintk(_PR_BZ + "E820 memmap:")
    for e in table:
        end = e.addr + e.size - 1
        kexec.kexec_dprintk(f"{_PR_BZ}{e.addr:016x}-{end:016x} ({e.type})")
        if e.type != E820_TYPE_RAM:
            continue
        if e.addr <= 0x100000 and end > 0x100000:
            mem_k = (end >> 10) - (0x100000 >> 10)
            bp.ext_mem_k = min(mem_k, 0xFC00)
            bp.alt_mem_k = min(mem_k, 0xFFFFFFFF)
    # CONFIG_EFI: setup_efi_state() links nothing without EFI runtime services,
    # but its space is skipped all the same.
    setup_data_offset += SETUP_DATA_HDR_SIZE + EFI_SETUP_DATA_SIZE
    setup_kho(kexec, image, bp, params, params_load_addr, setup_data_offset)
    setup_data_offset += SETUP_DATA_HDR_SIZE + KHO_DATA_SIZE
    setup_rng_seed(kexec, bp, params, params_load_addr, setup_data_offset)
    params[:BOOT_PARAMS_SIZE] = bp.to_bytes()

def setup_kho(kexec: Kexec, image: Kimage, bp: BootParams, params: bytearray, params_load_addr: int,
              offset: int) -> None:
    """type and len are always written; the entry is linked only with both FDT and scratch."""
    struct.pack_into("<II", params, offset + 8, SETUP_KEXEC_KHO, KHO_DATA_SIZE)
    if not image.kho_fdt or image.kho_scratch is None:
        return
    kho = KhoData(image.kho_fdt, PAGE_SIZE, image.kho_scratch.mem, image.kho_scratch.bufsz)
    params[offset:offset + SETUP_DATA_HDR_SIZE + KHO_DATA_SIZE] = pack_setup_data(
        bp.setup_data, SETUP_KEXEC_KHO, kho.pack())
    bp.setup_data = params_load_addr + offset

def setup_rng_seed(kexec: Kexec, bp: BootParams, params: bytearray, params_load_addr: int,
                   offset: int) -> None:
    """rng_is_initialized() holds in a booted kernel: 32 fresh bytes head the list."""
    seed = kexec.get_random_bytes(RNG_SEED_LENGTH)
    params[offset:offset + SETUP_DATA_HDR_SIZE + RNG_SEED_LENGTH] = pack_setup_data(
        bp.setup_data, SETUP_RNG_SEED, seed)
    bp.setup_data = params_load_addr + offset


def _purgatory_bytes(regs: dict[str, int]) -> bytes:
    """The simulated purgatory: a magic, then struct kexec_entry64_regs; nothing executes it."""
    buf = bytearray(PURGATORY_BUFSZ)
    buf[:len(PURGATORY_MAGIC)] = PURGATORY_MAGIC
    struct.pack_into(f"<{len(_ENTRY64_REGS)}Q", buf, ENTRY64_REGS_OFFSET,
                     *(regs[r] for r in _ENTRY64_REGS))
    return bytes(buf)


def read_entry64_regs(physmem: PhysMem, purgatory: int) -> dict[str, int]:
    values = struct.unpack_from(f"<{len(_ENTRY64_REGS)}Q",
                                physmem.read(purgatory + ENTRY64_REGS_OFFSET, 8 * len(_ENTRY64_REGS)))
    return dict(zip(_ENTRY64_REGS, values, strict=True))


# -- firmware and boot loader --

def write_cold_boot(physmem: PhysMem, e820: list[E820Entry], cmdline: str, kernel_version: str,
                    init_size: int, kernel_load_addr: int = SZ_16M, initrd: bytes | None = None,
                    builtin_cmdline: str = "") -> tuple[int, int]:
    """Do what firmware and a boot loader do: returns (kernel load address, boot_params phys).

    The kernel then has one boot path for cold boot and kexec alike: read the
    zero page and its own payload header from RAM.
    """
    image = make_bzimage(kernel_version, builtin_cmdline, init_size)
    k16 = kern16_size(image)
    physmem.write(kernel_load_addr, image[k16:])
    raw = bytearray(BOOT_PARAMS_SIZE)
    header = setup_header(image)
    raw[SETUP_HEADER_OFFSET:SETUP_HEADER_OFFSET + len(header)] = header
    bp = BootParams.from_bytes(bytes(raw))
    line = cmdline.encode("utf-8", "surrogateescape")
    if len(line) > bp.cmdline_size:
        raise ValueError(f"command line of {len(line)} bytes exceeds cmdline_size {bp.cmdline_size}")
    physmem.write(COLD_BOOT_CMDLINE_ADDR, line + b"\0")
    bp.cmd_line_ptr = COLD_BOOT_CMDLINE_ADDR
    bp.type_of_loader = COLD_BOOT_TYPE_OF_LOADER
    table = list(e820)[:E820_MAX_ENTRIES_ZEROPAGE]
    bp.e820_table = table
    bp.e820_entries = len(table)
    if initrd:
        addr = _cold_initrd_addr(table, len(initrd), bp.initrd_addr_max,
                                 (kernel_load_addr, kernel_load_addr + init_size))
        physmem.write(addr, initrd)
        bp.ramdisk_image = addr & 0xFFFFFFFF
        bp.ramdisk_size = len(initrd) & 0xFFFFFFFF
        bp.ext_ramdisk_image = addr >> 32
        bp.ext_ramdisk_size = len(initrd) >> 32
    bp.write(physmem, COLD_BOOT_PARAMS_ADDR)
    return kernel_load_addr, COLD_BOOT_PARAMS_ADDR


def _cold_initrd_addr(e820: list[E820Entry], size: int, addr_max: int,
                      kernel: tuple[int, int]) -> int:
    """Highest page-aligned RAM spot above 1 MiB ending at or below initrd_addr_max, clear of the kernel."""
    for e in sorted(e820, key=lambda x: x.addr, reverse=True):
        if e.type != E820_TYPE_RAM:
            continue
        lo = max(e.addr, SZ_1M)
        hi = min(e.addr + e.size, addr_max + 1)
        top = (hi - size) & ~(PAGE_SIZE - 1)
        while top >= lo:
            if top + size <= kernel[0] or top >= kernel[1]:
                return top
            top = (kernel[0] - size) & ~(PAGE_SIZE - 1)
    raise ValueError(f"no room for an initrd of {size:#x} bytes below {addr_max:#x}")
