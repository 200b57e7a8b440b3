"""kexec_file_load(): errnos in syscall order, segment placement, the next kernel's boot params.

The host is a small real kernel stand-in: PhysMem, Printk, an e820 map whose RAM
entries are the "System RAM" resources, and either a KHO-off hook (kho=off) or a
KHO-on hook that does what kexec_handover.c does with given scratch areas.
"""

import errno
import struct
from collections.abc import Callable

import pytest

from sim.arch.x86.boot.bzimage import bzImage64_probe, make_bzimage, read_kernel_info
from sim.arch.x86.bootparam import (
    E820_TYPE_RAM,
    E820_TYPE_RESERVED,
    SETUP_KEXEC_KHO,
    SETUP_RNG_SEED,
    BootParams,
    E820Entry,
    KhoData,
    read_boot_command_line,
    walk_setup_data,
)
from sim.arch.x86.kernel.kexec_bzimage64 import COLD_BOOT_CMDLINE_ADDR, COLD_BOOT_PARAMS_ADDR, write_cold_boot
from sim.arch.x86.kernel.setup import X86
from sim.kernel.kexec_file import (
    KEXEC_FILE_DEBUG,
    KEXEC_FILE_NO_INITRAMFS,
    KEXEC_FILE_ON_CRASH,
    KEXEC_FILE_UNLOAD,
    KEXEC_SEGMENT_MAX,
    Kexec,
    KexecBuf,
    Kimage,
    kexec_add_buffer,
    locate_mem_hole_callback,
)
from sim.kernel.printk import LOGLEVEL_DEBUG, LOGLEVEL_ERR, LOGLEVEL_INFO, Printk
from sim.physmem import PhysMem
from sim.sizes import PAGE_SIZE, SZ_1G, SZ_1M, SZ_2M, SZ_16M, SZ_64K, ULONG_MAX

KHO_FDT_PHYS = 0x2345000


class KhoOff:
    """kho=off: kho_fill_kimage() does nothing, kho_locate_mem_hole() says "search normally"."""

    def kho_fill_kimage(self, image: Kimage) -> int:
        return 0

    def kho_locate_mem_hole(self, kbuf: KexecBuf, func: Callable[[int, int, KexecBuf], int]) -> int:
        return 1


class KhoOn:
    """kho=on with the given scratch areas, as kexec_handover.c's two helpers behave."""

    def __init__(self, scratch: list[tuple[int, int]], fdt: int = KHO_FDT_PHYS) -> None:
        self.scratch = scratch
        self.fdt = fdt

    def kho_fill_kimage(self, image: Kimage) -> int:
        image.kho_fdt = self.fdt
        raw = b"".join(struct.pack("<QQ", a, s) for a, s in self.scratch)
        ret = kexec_add_buffer(KexecBuf(image, raw, len(raw), memsz=len(raw), buf_align=SZ_64K,
                                        buf_max=ULONG_MAX, top_down=True))
        if ret:
            return ret
        image.kho_scratch = image.segments[-1]
        return 0

    def kho_locate_mem_hole(self, kbuf: KexecBuf, func: Callable[[int, int, KexecBuf], int]) -> int:
        if kbuf.image.is_crash:
            return 1
        ret = 0
        for addr, size in self.scratch:
            ret = func(addr, addr + size - 1, kbuf)
            if ret:
                break
        return 0 if ret == 1 else -errno.EADDRNOTAVAIL


class Host:
    def __init__(self, e820: list[E820Entry], kho: KhoOff | KhoOn | None = None) -> None:
        self.physmem = PhysMem(max(e.addr + e.size for e in e820))
        self.printk = Printk()
        self.e820_table_kexec = e820
        self.kho: KhoOff | KhoOn = kho or KhoOff()
        self.totalram_pages = sum(e.size for e in e820 if e.type == E820_TYPE_RAM) // PAGE_SIZE
        self.arch = X86(self)       # its loaders and machine_kexec use only physmem and printk

    def kexec_walk_memblock(self) -> list[tuple[int, int]]:
        return sorted((e.addr, e.addr + e.size) for e in self.e820_table_kexec if e.type == E820_TYPE_RAM)


def q35(mem: int) -> list[E820Entry]:
    return [E820Entry(0, 0x9FC00, E820_TYPE_RAM), E820Entry(0x9FC00, 0x400, E820_TYPE_RESERVED),
            E820Entry(0xF0000, 0x10000, E820_TYPE_RESERVED), E820Entry(SZ_1M, mem - SZ_1M, E820_TYPE_RAM)]


def seed(n: int) -> bytes:
    return bytes(range(0x40, 0x40 + n))


def kexec_for(host: Host) -> Kexec:
    return Kexec(host, get_random_bytes=seed)


@pytest.fixture
def host() -> Host:
    return Host(q35(SZ_1G))


def load_err(k: Kexec, kernel: bytes, initrd: bytes | None, cmdline: str | bytes, flags: int) -> int:
    with pytest.raises(OSError) as exc:
        k.kexec_file_load(kernel, initrd, cmdline, flags)
    return exc.value.errno


def texts(host: Host, level: int | None = None) -> list[str]:
    return [r.text for r in host.printk.records if level is None or r.level == level]


# -- syscall arguments, in the order the kernel checks them --

@pytest.mark.parametrize("flags", [0x10, 0x20, 0x80000000, KEXEC_FILE_UNLOAD | 0x100])
def test_unknown_flags_are_einval_before_anything_else(host: Host, flags: int) -> None:
    k = kexec_for(host)
    assert load_err(k, b"", None, b"no nul", flags) == errno.EINVAL
    assert host.printk.records == []


def test_empty_kernel_file_is_einval(host: Host) -> None:
    assert load_err(kexec_for(host), b"", b"initrd", "", 0) == errno.EINVAL


def test_probe_failure_is_enoexec_before_the_initrd_is_read(host: Host) -> None:
    k = kexec_for(host)
    assert load_err(k, b"\0" * 512, None, b"bad", 0) == errno.ENOEXEC
    assert texts(host) == ["kexec-bzImage64: File is too short to be a bzImage"]
    assert not k.kexec_loaded


def test_missing_initrd_is_ebadf_unless_no_initramfs(host: Host) -> None:
    k = kexec_for(host)
    assert load_err(k, make_bzimage(), None, "", 0) == errno.EBADF
    assert load_err(k, make_bzimage(), b"", "", 0) == errno.EINVAL          # empty initrd file
    k.kexec_file_load(make_bzimage(), b"ignored", "", KEXEC_FILE_NO_INITRAMFS)
    image = k.kexec_image
    assert image is not None and image.nr_segments == 3 and image.initrd_load_addr == 0


def test_command_line_must_end_in_nul(host: Host) -> None:
    k = kexec_for(host)
    assert load_err(k, make_bzimage(), None, b"console=ttyS0", KEXEC_FILE_NO_INITRAMFS) == errno.EINVAL
    k.kexec_file_load(make_bzimage(), None, b"console=ttyS0\0", KEXEC_FILE_NO_INITRAMFS)
    assert k.kexec_image is not None and k.kexec_image.cmdline_buf == b"console=ttyS0\0"


def test_command_line_beyond_kmalloc_is_enomem(host: Host) -> None:
    k = kexec_for(host)
    assert load_err(k, make_bzimage(), None, b"x" * ((4 << 20) + 1), KEXEC_FILE_NO_INITRAMFS) == errno.ENOMEM


def test_command_line_length_limits_of_bzimage64_load(host: Host) -> None:
    k = kexec_for(host)
    # cmdline_size is 2047 and 30 bytes are kept for elfcorehdr=: 2017 bytes with the NUL fit.
    k.kexec_file_load(make_bzimage(), None, "a" * 2016, KEXEC_FILE_NO_INITRAMFS)
    assert texts(host, LOGLEVEL_ERR) == []
    assert load_err(k, make_bzimage(), None, "a" * 2017, KEXEC_FILE_NO_INITRAMFS) == errno.EINVAL
    assert load_err(k, make_bzimage(), None, "a" * 2047, KEXEC_FILE_NO_INITRAMFS) == errno.EINVAL
    assert texts(host, LOGLEVEL_ERR) == [
        "kexec-bzImage64: Appending elfcorehdr=<addr> to command line exceeds maximum allowed length",
        "kexec-bzImage64: Kernel command line too long",
    ]


def test_truncated_bzimage_is_enoexec(host: Host) -> None:
    image = make_bzimage()
    assert load_err(kexec_for(host), image[:2048], None, "", KEXEC_FILE_NO_INITRAMFS) == errno.ENOEXEC
    assert texts(host, LOGLEVEL_ERR) == ["kexec-bzImage64: bzImage truncated"]


def test_crash_load_without_crashkernel_is_eaddrnotavail(host: Host) -> None:
    k = kexec_for(host)
    assert load_err(k, make_bzimage(), None, "", KEXEC_FILE_ON_CRASH | KEXEC_FILE_NO_INITRAMFS) \
        == errno.EADDRNOTAVAIL
    assert not k.kexec_crash_loaded and not k.kexec_loaded
    kho = Host(q35(SZ_1G), KhoOn([(0x20000000, 0x10000000)]))
    assert load_err(kexec_for(kho), make_bzimage(), None, "", KEXEC_FILE_ON_CRASH | KEXEC_FILE_NO_INITRAMFS) \
        == errno.EADDRNOTAVAIL


def test_unload_ignores_the_other_arguments(host: Host) -> None:
    k = kexec_for(host)
    k.kexec_file_load(make_bzimage(), None, "", KEXEC_FILE_NO_INITRAMFS)
    assert k.kexec_loaded
    k.kexec_file_load(b"", None, b"no nul", KEXEC_FILE_UNLOAD)
    assert not k.kexec_loaded
    k.kexec_file_load(b"", None, b"", KEXEC_FILE_UNLOAD | KEXEC_FILE_ON_CRASH)
    assert not k.kexec_crash_loaded


def test_failed_load_keeps_the_image_already_loaded(host: Host) -> None:
    k = kexec_for(host)
    k.kexec_file_load(make_bzimage("6.17"), None, "", KEXEC_FILE_NO_INITRAMFS)
    before = k.kexec_image
    assert load_err(k, b"junk" * 512, None, "", KEXEC_FILE_NO_INITRAMFS) == errno.ENOEXEC
    assert k.kexec_image is before


# -- placement --

def test_segments_are_placed_top_down_in_ram(host: Host) -> None:
    k = kexec_for(host)
    k.kexec_file_load(make_bzimage(), b"I" * 9000, "root=/dev/vda", 0)
    image = k.kexec_image
    assert image is not None
    # purgatory, boot params, kernel, initrd: each the highest fitting spot below the others.
    assert [(s.mem, s.memsz) for s in image.segments] == [
        (SZ_1G - 0x5000, 0x5000),
        (SZ_1G - 0x7000, 0x2000),
        (SZ_1G - 0x2200000, 32 << 20),
        (SZ_1G - 0xA000, 0x3000),
    ]
    assert image.segments[2].mem % SZ_2M == 0
    assert image.start == SZ_1G - 0x5000


def test_placement_skips_ranges_too_small_and_respects_buf_min() -> None:
    # RAM: [0, 0x9fc00), [1M, 20M), [64M, 96M+16K): purgatory and boot params take the
    # top of the high range, so a 2 MiB-aligned 32 MiB kernel fits nowhere.
    e820 = q35(20 * SZ_1M) + [E820Entry(64 * SZ_1M, 32 * SZ_1M + 0x4000, E820_TYPE_RAM)]
    host = Host(e820)
    k = kexec_for(host)
    assert load_err(k, make_bzimage(), None, "", KEXEC_FILE_NO_INITRAMFS) == errno.EADDRNOTAVAIL
    k.kexec_file_load(make_bzimage(init_size=16 << 20), b"r" * 100, "", 0)
    image = k.kexec_image
    assert image is not None
    purg, params, kern, initrd = image.segments
    assert (purg.mem, params.mem) == (96 * SZ_1M - 0x1000, 96 * SZ_1M - 0x3000)
    # 80M would overlap the purgatory: one page lower, aligned down to 2 MiB.
    assert kern.mem == 78 * SZ_1M
    assert initrd.mem == params.mem - PAGE_SIZE


def test_more_than_half_of_ram_is_einval() -> None:
    host = Host([E820Entry(0, 0x9FC00, E820_TYPE_RAM), E820Entry(SZ_1M, 60 * SZ_1M, E820_TYPE_RAM)])
    assert load_err(kexec_for(host), make_bzimage(), None, "", KEXEC_FILE_NO_INITRAMFS) == errno.EINVAL


def test_with_kho_every_segment_lands_in_scratch() -> None:
    scratch = [(0x2000000, 0x400000), (0x20000000, 0x4000000)]
    host = Host(q35(SZ_1G), KhoOn(scratch))
    k = kexec_for(host)
    k.kexec_file_load(make_bzimage(), b"I" * 10000, "kho=on", 0)
    image = k.kexec_image
    assert image is not None and image.nr_segments == 5
    for seg in image.segments:
        assert any(a <= seg.mem and seg.mem + seg.memsz <= a + s for a, s in scratch), hex(seg.mem)
    assert image.kho_scratch is image.segments[0]
    # Scratch areas are tried in array order, each top-down: the array lands in the first.
    assert image.kho_scratch.bufsz == 32 and image.kho_scratch.memsz == PAGE_SIZE
    assert image.kho_scratch.mem == 0x2400000 - SZ_64K
    assert image.segments[2].mem == 0x2400000 - 0x7000          # boot params, first area too
    assert image.segments[3].mem >= 0x20000000                  # the kernel needs the second


def test_with_kho_no_fitting_scratch_is_eaddrnotavail() -> None:
    host = Host(q35(SZ_1G), KhoOn([(0x2000000, 0x400000)]))
    k = kexec_for(host)
    assert load_err(k, make_bzimage(), None, "", KEXEC_FILE_NO_INITRAMFS) == errno.EADDRNOTAVAIL
    assert not k.kexec_loaded


def test_locate_mem_hole_callback_rules(host: Host) -> None:
    k = kexec_for(host)
    image = Kimage(k)
    kbuf = KexecBuf(image, memsz=0x3000, buf_align=PAGE_SIZE, buf_min=0, buf_max=ULONG_MAX, top_down=True)
    assert locate_mem_hole_callback(0x10000, 0x11FFF, kbuf) == 0        # too small
    assert locate_mem_hole_callback(0x10000, 0x1FFFF, kbuf) == 1 and kbuf.mem == 0x1D000
    kbuf.top_down = False
    assert locate_mem_hole_callback(0x10000, 0x1FFFF, kbuf) == 1 and kbuf.mem == 0x10000
    kbuf.buf_min = 0x30000
    assert locate_mem_hole_callback(0x10000, 0x1FFFF, kbuf) == 0        # entirely below buf_min


def test_search_avoids_other_segments_destinations(host: Host) -> None:
    image = Kimage(kexec_for(host))
    for _ in range(2):
        assert kexec_add_buffer(KexecBuf(image, b"x", 1, memsz=1, buf_max=ULONG_MAX, top_down=True)) == 0
    assert [s.mem for s in image.segments] == [SZ_1G - PAGE_SIZE, SZ_1G - 2 * PAGE_SIZE]
    # A buffer with a fixed mem ("arch knows where") is not searched for.
    assert kexec_add_buffer(KexecBuf(image, b"y", 1, mem=0x5000, memsz=1)) == 0
    assert image.segments[-1].mem == 0x5000


def test_segment_count_is_capped(host: Host) -> None:
    image = Kimage(kexec_for(host))
    for _ in range(KEXEC_SEGMENT_MAX):
        assert kexec_add_buffer(KexecBuf(image, b"s", 1, memsz=1, buf_max=ULONG_MAX, top_down=True)) == 0
    assert kexec_add_buffer(KexecBuf(image, b"s", 1, memsz=1, buf_max=ULONG_MAX, top_down=True)) \
        == -errno.EINVAL


# -- what the next kernel finds --

def test_boot_params_for_the_next_kernel(host: Host) -> None:
    k = kexec_for(host)
    k.kexec_file_load(make_bzimage("6.18", cmdline="quiet"), b"I" * 9000, "root=/dev/vda", 0)
    load, bp_phys = k.machine_kexec()
    image = k.kexec_image
    assert image is not None
    assert load == image.segments[2].mem and bp_phys == image.segments[1].mem
    info = read_kernel_info(host.physmem, load)
    assert info is not None and info.version == "6.18" and info.builtin_cmdline == "quiet"
    bp = BootParams.read(host.physmem, bp_phys)
    assert bp.header == b"HdrS" and bp.version == 0x020F
    assert bp.type_of_loader == 0xD0 and bp.loadflags == 0
    assert bp.e820_table == host.e820_table_kexec and bp.e820_entries == 4
    assert bp.cmd_line_phys == bp_phys + 4096
    assert read_boot_command_line(host.physmem, bp) == "root=/dev/vda"
    assert (bp.ramdisk_phys, bp.ramdisk_len) == (image.segments[3].mem, 9000)
    assert host.physmem.read(bp.ramdisk_phys, 9000) == b"I" * 9000
    assert bp.ext_mem_k == 0xFC00 and bp.alt_mem_k == (SZ_1G - 1 >> 10) - 1024
    # kho=off: only the RNG seed is on the list.
    (rng,) = walk_setup_data(host.physmem, bp.setup_data)
    assert (rng.type, rng.len, rng.next) == (SETUP_RNG_SEED, 32, 0)
    assert rng.read_data(host.physmem) == seed(32)


def test_kho_setup_data_at_the_spec_offsets() -> None:
    host = Host(q35(SZ_1G), KhoOn([(0x20000000, 0x4000000), (0x30000000, 0x4000000)]))
    k = kexec_for(host)
    k.kexec_file_load(make_bzimage(), None, "kho=on", KEXEC_FILE_NO_INITRAMFS)
    _, bp_phys = k.machine_kexec()
    image = k.kexec_image
    assert image is not None and image.kho_scratch is not None
    bp = BootParams.read(host.physmem, bp_phys)
    rng, kho = walk_setup_data(host.physmem, bp.setup_data)
    assert rng.type == SETUP_RNG_SEED and rng.next == kho.phys
    # Slots after the zero page and the command line (+30, 16-aligned): EFI (16+96), KHO, RNG.
    kho_slot = bp_phys + ((4096 + len(b"kho=on\0") + 30 + 15) & ~15) + 16 + 96
    assert kho.phys == kho_slot and rng.phys == kho_slot + 48
    raw = host.physmem.read(kho_slot, 48)
    assert struct.unpack("<QIIQQQQ", raw) == (0, SETUP_KEXEC_KHO, 32, KHO_FDT_PHYS, PAGE_SIZE,
                                              image.kho_scratch.mem, 32)
    assert KhoData.unpack(kho.read_data(host.physmem) or b"") == \
        KhoData(KHO_FDT_PHYS, PAGE_SIZE, image.kho_scratch.mem, 32)
    # The scratch array segment carries the areas themselves.
    assert host.physmem.read(image.kho_scratch.mem, 32) == struct.pack(
        "<QQQQ", 0x20000000, 0x4000000, 0x30000000, 0x4000000)


def test_kho_entry_is_typed_but_unlinked_without_an_fdt() -> None:
    host = Host(q35(SZ_1G), KhoOn([(0x20000000, 0x4000000)], fdt=0))
    k = kexec_for(host)
    k.kexec_file_load(make_bzimage(), None, "", KEXEC_FILE_NO_INITRAMFS)
    _, bp_phys = k.machine_kexec()
    bp = BootParams.read(host.physmem, bp_phys)
    (rng,) = walk_setup_data(host.physmem, bp.setup_data)
    kho_slot = rng.phys - 48
    assert struct.unpack("<QIIQQQQ", host.physmem.read(kho_slot, 48)) == (0, 10, 32, 0, 0, 0, 0)


def test_machine_kexec_writes_exactly_the_segments() -> None:
    host = Host(q35(64 * SZ_1M))
    k = kexec_for(host)
    k.kexec_file_load(make_bzimage(init_size=4 << 20), b"\x11" * 5000, "x", 0)
    host.physmem.fill(0, host.physmem.size, 0xAA)
    k.machine_kexec()
    image = k.kexec_image
    assert image is not None
    expect = bytearray(b"\xaa" * host.physmem.size)
    for seg in image.segments:
        expect[seg.mem:seg.mem + seg.memsz] = seg.buffer.ljust(seg.memsz, b"\0")
    assert host.physmem.read(0, host.physmem.size) == bytes(expect)


def test_machine_kexec_without_an_image_is_einval(host: Host) -> None:
    with pytest.raises(OSError) as exc:
        kexec_for(host).machine_kexec()
    assert exc.value.errno == errno.EINVAL


# -- log lines --

def test_no_log_lines_at_default_level_without_kexec_debug(host: Host) -> None:
    kexec_for(host).kexec_file_load(make_bzimage(), b"i" * 100, "a", 0)
    assert [r.level for r in host.printk.records] == [LOGLEVEL_DEBUG]
    assert host.printk.dmesg() == ""


def test_kexec_debug_lines(host: Host) -> None:
    k = kexec_for(host)
    k.kexec_file_load(make_bzimage(), None, "console=ttyS0", KEXEC_FILE_NO_INITRAMFS | KEXEC_FILE_DEBUG)
    lines = texts(host, LOGLEVEL_INFO)
    assert lines[0].startswith("kexec_file: kernel: 00000000") and lines[0].endswith(" kernel_size: 0x1a00")
    assert lines[1:8] == [
        f"kexec-bzImage64: Loaded purgatory at {SZ_1G - 0x5000:#x}",
        f"kexec-bzImage64: Loaded boot_param, command line and misc at {SZ_1G - 0x7000:#x} "
        "bufsz=0x1100 memsz=0x2000",
        f"kexec-bzImage64: Loaded 64bit kernel at {SZ_1G - 0x2200000:#x} bufsz=0x1000 memsz=0x2000000",
        "kexec-bzImage64: Final command line is: console=ttyS0",
        "kexec-bzImage64: E820 memmap:",
        "kexec-bzImage64: 0000000000000000-000000000009fbff (1)",
        "kexec-bzImage64: 000000000009fc00-000000000009ffff (2)",
    ]
    assert lines[10] == "kexec_file: nr_segments = 3"
    assert lines[11].startswith("kexec_file: segment[0]: buf=0x00000000")
    assert lines[11].endswith(f" bufsz=0x4000 mem={SZ_1G - 0x5000:#x} memsz=0x5000")
    assert lines[14].startswith(f"kexec_file: kexec_file_load: type:0, start:{SZ_1G - 0x5000:#x} head:0x")
    assert lines[14].endswith(" flags:0xc")
    assert len(lines) == 15
    # The flag lasts one call.
    k.kexec_file_load(make_bzimage(), None, "", KEXEC_FILE_NO_INITRAMFS)
    assert len(texts(host, LOGLEVEL_INFO)) == 15


# -- cold boot --

def test_cold_boot_layout() -> None:
    pm = PhysMem(SZ_1G)
    e820 = q35(SZ_1G)
    load, bp_phys = write_cold_boot(pm, e820, "console=ttyS0", "6.17", 32 << 20, initrd=b"R" * 5000,
                                    builtin_cmdline="kho=on")
    assert (load, bp_phys) == (SZ_16M, COLD_BOOT_PARAMS_ADDR)
    info = read_kernel_info(pm, load)
    assert info is not None and (info.version, info.builtin_cmdline) == ("6.17", "kho=on")
    bp = BootParams.read(pm, bp_phys)
    assert bp.cmd_line_phys == COLD_BOOT_CMDLINE_ADDR
    assert read_boot_command_line(pm, bp) == "console=ttyS0"
    assert bp.e820_table == e820 and bp.setup_data == 0
    assert bp.header == b"HdrS" and bp.loadflags & 1
    assert (bp.ramdisk_phys, bp.ramdisk_len) == (SZ_1G - 0x2000, 5000)
    assert pm.read(bp.ramdisk_phys, 5000) == b"R" * 5000
    # The image that was "loaded" is the one the probe accepts.
    assert bzImage64_probe(make_bzimage("6.17"), Printk()) == 0


def test_cold_boot_initrd_stays_clear_of_the_kernel() -> None:
    pm = PhysMem(40 * SZ_1M)
    _, bp_phys = write_cold_boot(pm, q35(40 * SZ_1M), "", "6.16", 24 << 20, initrd=b"R" * (4 << 20))
    bp = BootParams.read(pm, bp_phys)
    assert bp.ramdisk_phys + bp.ramdisk_len <= SZ_16M and bp.ramdisk_phys >= SZ_1M
    with pytest.raises(ValueError):
        write_cold_boot(pm, q35(40 * SZ_1M), "x" * 2048, "6.16", 24 << 20)
