"""make_bzimage / read_kernel_info round trips and every bzImage64_probe rejection."""

import errno
import struct
from collections.abc import Callable

import pytest

from sim.arch.x86.boot.bzimage import (
    KERNEL_VERSIONS,
    apply_builtin_cmdline,
    bzImage64_probe,
    kern16_size,
    make_bzimage,
    read_kernel_info,
)
from sim.arch.x86.bootparam import BootParams
from sim.kernel.printk import LOGLEVEL_DEBUG, LOGLEVEL_ERR, Printk
from sim.physmem import PhysMem
from sim.sizes import SZ_1M, SZ_2M, SZ_16M


def _patched(image: bytes, offset: int, fmt: str, value: int | bytes) -> bytes:
    buf = bytearray(image)
    struct.pack_into(fmt, buf, offset, value)
    return bytes(buf)


def _probe(image: bytes) -> tuple[int, list[tuple[int, str]]]:
    printk = Printk()
    ret = bzImage64_probe(image, printk)
    return ret, [(r.level, r.text) for r in printk.records]


@pytest.mark.parametrize("version", KERNEL_VERSIONS)
def test_image_passes_probe_and_names_its_kernel(version: str) -> None:
    image = make_bzimage(version, cmdline="kho=on console=ttyS0", init_size=24 << 20)
    ret, lines = _probe(image)
    assert ret == 0
    assert lines == [(LOGLEVEL_DEBUG, "kexec-bzImage64: It's a relocatable bzImage64")]
    pm = PhysMem(64 * SZ_1M)
    pm.write(SZ_16M, image[kern16_size(image):])
    info = read_kernel_info(pm, SZ_16M)
    assert info is not None
    assert info.version == version
    assert info.release.startswith(version + ".") and info.release.endswith("-khofs")
    assert info.builtin_cmdline == "kho=on console=ttyS0"
    assert info.init_size == 24 << 20


def test_setup_header_is_that_of_a_current_x86_64_kernel() -> None:
    image = make_bzimage("6.16")
    hdr = BootParams.from_bytes(image[:4096])
    assert hdr.boot_flag == 0xAA55 and hdr.header == b"HdrS"
    assert hdr.version == 0x020F
    assert hdr.loadflags & 1                      # LOADED_HIGH
    assert hdr.xloadflags & 3 == 3                # XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
    assert hdr.relocatable_kernel == 1
    assert hdr.kernel_alignment == SZ_2M
    assert hdr.cmdline_size == 2047
    assert hdr.pref_address == SZ_16M
    assert hdr.init_size == 32 << 20
    assert image[0x201] == 0x26C - 0x202          # jump over exactly the 2.15 header
    assert len(image) == (hdr.setup_sects + 1) * 512 + hdr.syssize * 16
    ptr = hdr.kernel_version + 0x200
    version = image[ptr:image.index(b"\0", ptr)].decode()
    assert version.startswith("6.16.0-khofs (khofs@khofs) #1 SMP PREEMPT_DYNAMIC ")
    payload = image[kern16_size(image):]
    ki = payload[hdr.kernel_info_offset:hdr.kernel_info_offset + 16]
    assert ki[:4] == b"LToP" and struct.unpack("<III", ki[4:]) == (16, 16, 0x8000000A)


def test_make_bzimage_refuses_what_no_kernel_could_be() -> None:
    with pytest.raises(ValueError):
        make_bzimage("6.15")
    with pytest.raises(ValueError):
        make_bzimage("6.16", cmdline="x" * 2048)
    with pytest.raises(ValueError):
        make_bzimage("6.16", init_size=0)


PROBE_FAILURES: list[tuple[Callable[[bytes], bytes], str]] = [
    (lambda im: im[:1023], "File is too short to be a bzImage"),
    (lambda im: _patched(im, 0x202, "4s", b"HdrT"), "Not a bzImage"),
    (lambda im: _patched(im, 0x1FE, "<H", 0x55AA), "No x86 boot sector present"),
    (lambda im: _patched(im, 0x206, "<H", 0x020B), "Must be at least protocol version 2.12"),
    (lambda im: _patched(im, 0x211, "<B", 0x80), "zImage not a bzImage"),
    (lambda im: _patched(im, 0x236, "<H", 0x2), "Not a bzImage64. XLF_KERNEL_64 is not set."),
    (lambda im: _patched(im, 0x236, "<H", 0x1), "XLF_CAN_BE_LOADED_ABOVE_4G is not set."),
]


@pytest.mark.parametrize(("corrupt", "line"), PROBE_FAILURES)
def test_probe_rejections_log_the_kernel_line(corrupt: Callable[[bytes], bytes], line: str) -> None:
    ret, lines = _probe(corrupt(make_bzimage("6.16")))
    assert ret == -errno.ENOEXEC
    assert lines == [(LOGLEVEL_ERR, "kexec-bzImage64: " + line)]


def test_probe_checks_in_kernel_order() -> None:
    # Both the magic and the boot flag are wrong: the magic is reported.
    image = _patched(_patched(make_bzimage("6.16"), 0x202, "4s", b"\0\0\0\0"), 0x1FE, "<H", 0)
    assert _probe(image)[1] == [(LOGLEVEL_ERR, "kexec-bzImage64: Not a bzImage")]


def test_probe_reads_only_the_first_two_sectors() -> None:
    assert _probe(make_bzimage("6.16")[:1024])[0] == 0


def _arm64_image() -> bytes:
    head = struct.pack("<IIQQQQQQ4sI", 0xFA405A4D, 0x14000000, 0, 2 * SZ_1M, 0xA, 0, 0, 0, b"ARM\x64", 0)
    return head.ljust(64 * 1024, b"\0")


def test_arm64_image_is_not_a_bzimage() -> None:
    assert _probe(_arm64_image()) == (-errno.ENOEXEC, [(LOGLEVEL_ERR, "kexec-bzImage64: Not a bzImage")])


def test_read_kernel_info_rejects_anything_else() -> None:
    pm = PhysMem(64 * SZ_1M)
    assert read_kernel_info(pm, SZ_16M) is None                 # zeros
    pm.write(SZ_16M, _arm64_image())
    assert read_kernel_info(pm, SZ_16M) is None
    assert read_kernel_info(pm, 64 * SZ_1M - 8) is None         # header past the end of RAM
    image = make_bzimage("6.16")
    payload = bytearray(image[kern16_size(image):])
    release_off = struct.unpack_from("<H", payload, 24)[0]
    payload[release_off:release_off + 4] = b"5.10"
    pm.write(SZ_16M, bytes(payload))
    assert read_kernel_info(pm, SZ_16M) is None                 # not a version we simulate
    pm.fill(0, 64 * SZ_1M, 0xFF)
    assert read_kernel_info(pm, SZ_16M) is None


def test_builtin_command_line_is_prepended_like_cmdline_bool() -> None:
    assert apply_builtin_cmdline("", "root=/dev/vda") == "root=/dev/vda"
    assert apply_builtin_cmdline("kho=on", "root=/dev/vda") == "kho=on root=/dev/vda"
    assert apply_builtin_cmdline("kho=on", "") == "kho=on "
    assert apply_builtin_cmdline("a" * 2000, "b" * 100) == "a" * 2000 + " " + "b" * 46
