"""The x86 zero page at its real offsets, the setup_data walker, and struct kho_data."""

import struct

import pytest

import sim.arch.x86.bootparam as bootparam
from sim.arch.x86.bootparam import (
    BOOT_PARAMS_SIZE,
    E820_MAX_ENTRIES_ZEROPAGE,
    E820_TYPE_RAM,
    E820_TYPE_RESERVED,
    SETUP_ENUM_MAX,
    SETUP_KEXEC_KHO,
    SETUP_RNG_SEED,
    SETUP_TYPE_MAX,
    BootParams,
    E820Entry,
    KhoData,
    SetupData,
    pack_setup_data,
    read_boot_command_line,
    walk_setup_data,
)
from sim.physmem import PhysMem
from sim.sizes import SZ_1M


def test_setup_data_type_values_match_uapi() -> None:
    assert SETUP_RNG_SEED == 9
    assert SETUP_KEXEC_KHO == SETUP_ENUM_MAX == 10
    assert SETUP_TYPE_MAX == 0x8000000A


def test_fields_land_at_the_uapi_offsets() -> None:
    bp = BootParams(
        e820_entries=2, setup_sects=4, boot_flag=0xAA55, header=b"HdrS", version=0x020F,
        kernel_version=0x100, type_of_loader=0xD0, loadflags=1, code32_start=0x100000,
        cmd_line_ptr=0x12345678, ext_cmd_line_ptr=0x9, ramdisk_image=0x1000, ramdisk_size=0x2000,
        ext_ramdisk_image=0x3, ext_ramdisk_size=0x4, kernel_alignment=0x200000, xloadflags=3,
        cmdline_size=2047, setup_data=0x1122334455667788, pref_address=0x1000000,
        init_size=0x2000000, alt_mem_k=0xABCDEF, ext_mem_k=0xFC00,
        e820_table=[E820Entry(0, 0x9FC00, E820_TYPE_RAM), E820Entry(0x9FC00, 0x400, E820_TYPE_RESERVED)])
    page = bp.to_bytes()
    assert len(page) == BOOT_PARAMS_SIZE
    assert page[0x1E8] == 2
    assert page[0x1F1] == 4
    assert page[0x1FE:0x200] == b"\x55\xaa"
    assert page[0x202:0x206] == b"HdrS"
    assert struct.unpack_from("<H", page, 0x206)[0] == 0x020F
    assert struct.unpack_from("<H", page, 0x20E)[0] == 0x100
    assert page[0x210] == 0xD0 and page[0x211] == 1
    assert struct.unpack_from("<I", page, 0x228)[0] == 0x12345678
    assert struct.unpack_from("<I", page, 0xC8)[0] == 0x9
    assert struct.unpack_from("<IIII", page, 0x218)[:2] == (0x1000, 0x2000)
    assert struct.unpack_from("<II", page, 0xC0) == (3, 4)
    assert struct.unpack_from("<I", page, 0x230)[0] == 0x200000
    assert struct.unpack_from("<H", page, 0x236)[0] == 3
    assert struct.unpack_from("<I", page, 0x238)[0] == 2047
    assert struct.unpack_from("<QQI", page, 0x250) == (0x1122334455667788, 0x1000000, 0x2000000)
    assert struct.unpack_from("<I", page, 0x1E0)[0] == 0xABCDEF
    assert struct.unpack_from("<H", page, 0x002)[0] == 0xFC00
    assert struct.unpack_from("<QQI", page, 0x2D0) == (0, 0x9FC00, 1)
    assert struct.unpack_from("<QQI", page, 0x2D0 + 20) == (0x9FC00, 0x400, 2)
    assert bp.cmd_line_phys == 0x9_12345678
    assert bp.ramdisk_phys == 0x3_00001000 and bp.ramdisk_len == 0x4_00002000


def test_round_trip_keeps_bytes_no_field_describes() -> None:
    page = bytearray(range(256)) * 16
    bp = BootParams.from_bytes(bytes(page))
    assert bp.to_bytes() == bytes(page)
    bp.setup_data = 0xDEAD000
    out = bp.to_bytes()
    assert struct.unpack_from("<Q", out, 0x250)[0] == 0xDEAD000
    assert out[:0x250] == bytes(page[:0x250]) and out[0x258:] == bytes(page[0x258:])


def test_e820_count_is_clamped_and_overflow_refused() -> None:
    page = bytearray(BOOT_PARAMS_SIZE)
    page[0x1E8] = 200
    assert len(BootParams.from_bytes(bytes(page)).e820_table) == E820_MAX_ENTRIES_ZEROPAGE
    bp = BootParams(e820_table=[E820Entry(i << 20, 1 << 20, 1) for i in range(129)])
    with pytest.raises(ValueError):
        bp.to_bytes()
    with pytest.raises(ValueError):
        BootParams.from_bytes(b"\0" * 100)


def test_write_and_read_through_physmem() -> None:
    pm = PhysMem(4 * SZ_1M)
    bp = BootParams(setup_data=0x5000, cmd_line_ptr=0x99000,
                    e820_table=[E820Entry(0, 4 * SZ_1M, E820_TYPE_RAM)], e820_entries=1)
    bp.write(pm, 0x90000)
    back = BootParams.read(pm, 0x90000)
    assert back.to_bytes() == bp.to_bytes()
    assert back.e820_table == [E820Entry(0, 4 * SZ_1M, E820_TYPE_RAM)]


def test_boot_command_line_is_nul_cut_and_capped() -> None:
    pm = PhysMem(SZ_1M)
    pm.write(0x99000, b"console=ttyS0 kho=on\0garbage")
    assert read_boot_command_line(pm, BootParams(cmd_line_ptr=0x99000)) == "console=ttyS0 kho=on"
    pm.write(0x80000, b"x" * 3000)
    assert read_boot_command_line(pm, BootParams(cmd_line_ptr=0x80000)) == "x" * 2047
    assert read_boot_command_line(pm, BootParams(cmd_line_ptr=0)) == ""
    # A pointer past the end of RAM reads as no command line; one near the end reads what exists.
    assert read_boot_command_line(pm, BootParams(cmd_line_ptr=0, ext_cmd_line_ptr=1)) == ""
    pm.write(SZ_1M - 3, b"abc")
    assert read_boot_command_line(pm, BootParams(cmd_line_ptr=SZ_1M - 3)) == "abc"


def _entry(pm: PhysMem, phys: int, nxt: int, type_: int, data: bytes) -> None:
    pm.write(phys, pack_setup_data(nxt, type_, data))


def test_walk_follows_the_list_and_reports_unknown_types() -> None:
    pm = PhysMem(SZ_1M)
    _entry(pm, 0x1000, 0x3000, SETUP_RNG_SEED, b"s" * 32)
    _entry(pm, 0x3000, 0x2000, 0x7777, b"?")
    _entry(pm, 0x2000, 0, SETUP_KEXEC_KHO, KhoData(1, 2, 3, 4).pack())
    got = list(walk_setup_data(pm, 0x1000))
    assert got == [SetupData(0x1000, 0x3000, 9, 32), SetupData(0x3000, 0x2000, 0x7777, 1),
                   SetupData(0x2000, 0, 10, 32)]
    assert KhoData.unpack(got[2].read_data(pm) or b"") == KhoData(1, 2, 3, 4)
    assert list(walk_setup_data(pm, 0)) == []


def test_walk_stops_on_a_cycle_instead_of_hanging() -> None:
    pm = PhysMem(SZ_1M)
    _entry(pm, 0x1000, 0x2000, SETUP_RNG_SEED, b"")
    _entry(pm, 0x2000, 0x1000, SETUP_KEXEC_KHO, b"")
    assert [e.phys for e in walk_setup_data(pm, 0x1000)] == [0x1000, 0x2000]
    _entry(pm, 0x4000, 0x4000, 5, b"")
    assert [e.phys for e in walk_setup_data(pm, 0x4000)] == [0x4000]


def test_walk_stops_at_links_outside_ram() -> None:
    pm = PhysMem(SZ_1M)
    _entry(pm, 0x1000, 0xFFFF_FFFF_FFFF_FFF0, 1, b"")
    assert [e.phys for e in walk_setup_data(pm, 0x1000)] == [0x1000]
    # A header that would straddle the end of RAM is not read.
    _entry(pm, 0x2000, SZ_1M - 8, 1, b"")
    assert [e.phys for e in walk_setup_data(pm, 0x2000)] == [0x2000]
    # A payload running past RAM is reported, but cannot be read.
    _entry(pm, SZ_1M - 16, 0, SETUP_KEXEC_KHO, b"")
    pm.write(SZ_1M - 4, struct.pack("<I", 32))
    (entry,) = walk_setup_data(pm, SZ_1M - 16)
    assert entry.len == 32 and entry.read_data(pm) is None


def test_walk_of_garbage_memory_terminates() -> None:
    pm = PhysMem(SZ_1M)
    pm.fill(0, SZ_1M, 0x5A)       # every "next" is 0x5a5a5a5a5a5a5a5a, far outside RAM
    assert len(list(walk_setup_data(pm, 0x100))) == 1


def test_walk_is_bounded_even_without_a_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bootparam, "SETUP_DATA_WALK_MAX", 8)
    pm = PhysMem(SZ_1M)
    for i in range(20):
        _entry(pm, 0x1000 + i * 16, 0x1000 + (i + 1) * 16, 1, b"")
    assert len(list(walk_setup_data(pm, 0x1000))) == 8


def test_kho_data_is_32_packed_le_bytes() -> None:
    kd = KhoData(0x10116B000, 0x1000, 0x7FFF0000, 0x40)
    raw = kd.pack()
    assert len(raw) == 32
    assert raw == struct.pack("<QQQQ", 0x10116B000, 0x1000, 0x7FFF0000, 0x40)
    assert KhoData.unpack(raw) == kd
    with pytest.raises(ValueError):
        KhoData.unpack(raw[:31])
