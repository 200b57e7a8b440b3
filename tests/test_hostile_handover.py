"""Hand-overs corrupted after machine_kexec copied them (issue 8 item 1): every boot ends in a
running kernel or a cleanly stopped one, with the kernel's message where Linux has a check and a
khofs one where it has none — never an exception.  The examples are the issue's."""

import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from kho_common import (
    DISABLING,
    FOUND,
    PAGE_SIZE,
    POISON,
    boot,
    finalize,
    load,
    log,
    prop_u64,
    random_bytes,
    read_chunks,
)
from test_fs_harness import mounted, sh

from sim.init.main import Kernel
from sim.machine import Machine
from sim.physmem import PhysMem

E820_TABLE = 0x2D0
E820_ENTRY = 20
SETUP_DATA = 0x250
SETUP_KEXEC_KHO = 10
MARK = "[khofs: not checked by Linux]"
CMDLINE = "kho=on kho_scratch=16M,64M,32M reserve_mem=8m:4k:n1"
Fault = Callable[[PhysMem, int], None]


def _kho_data_phys(mem: PhysMem, boot_params: int) -> int:
    pa = mem.read_u64(boot_params + SETUP_DATA)
    while pa:
        nxt, type_, _len = struct.unpack("<QII", mem.read(pa, 16))
        if type_ == SETUP_KEXEC_KHO:
            return pa + 16
        pa = nxt
    raise AssertionError("no SETUP_KEXEC_KHO")


def _kho_data(mem: PhysMem, boot_params: int) -> tuple[int, int, int, int]:
    return struct.unpack("<QQQQ", mem.read(_kho_data_phys(mem, boot_params), 32))


def _kexec(fault: Fault, version: str = "6.16") -> tuple[Machine, Kernel, tuple[int, int], bytes]:
    """A finalized hand-over with n1 full of a pattern, corrupted by `fault` and booted."""
    m, k0 = boot(CMDLINE, version=version, mem="2G")
    n1 = k0.reserve_mem.reserve_mem_find_by_name("n1")
    assert n1 is not None
    pattern = random_bytes(n1[1], seed=8)
    m.physmem.write(n1[0], pattern)
    finalize(k0)
    load(k0)
    return m, m.kexec(fault), n1, pattern


def _no_silent_loss(m: Machine, k: Kernel, n1: tuple[int, int], pattern: bytes) -> None:
    lines = log(k)
    if "Revived memory reservation 'n1' from KHO" not in lines:
        return
    reported = [line for line in lines if "reserve_mem 'n1'" in line and line.endswith(MARK)]
    assert reported or m.physmem.read(*n1) == pattern


def test_scratch_entry_address_beyond_ram_is_refused() -> None:
    """addr |= 0x80 << 40 in one scratch entry: a ValueError from the scratch scrub before."""
    def fault(mem: PhysMem, bp: int) -> None:
        scratch = _kho_data(mem, bp)[2]
        mem.write_u64(scratch + 16, mem.read_u64(scratch + 16) | 0x80 << 40)

    m, k1, n1, pattern = _kexec(fault)
    lines = log(k1)
    i = next(i for i, line in enumerate(lines) if line.startswith("KHO: setup: scratch area 0x80"))
    assert lines[i].endswith(f" is outside RAM {MARK}")
    assert lines[i + 1] == DISABLING
    assert FOUND not in lines and k1.panic_message is None
    assert "Revived memory reservation 'n1' from KHO" not in lines


def test_overlapping_scratch_entries_are_refused() -> None:
    def fault(mem: PhysMem, bp: int) -> None:
        scratch = _kho_data(mem, bp)[2]
        mem.write(scratch + 16, mem.read(scratch, 16))          # entry 1 := entry 0

    _m, k1, _n1, _pattern = _kexec(fault)
    lines = log(k1)
    assert any(line.endswith(f"overlaps another scratch area {MARK}") for line in lines)
    assert DISABLING in lines and FOUND not in lines


def test_scratch_array_without_scratch_is_refused() -> None:
    def fault(mem: PhysMem, bp: int) -> None:
        _fdt, _fsz, scratch, size = _kho_data(mem, bp)
        mem.fill(scratch, size, 0)

    _m, k1, _n1, _pattern = _kexec(fault)
    assert f"KHO: setup: scratch array has no scratch memory {MARK}" in log(k1)


@pytest.mark.parametrize("scratch_size", [0x30000, 0x3000000])
def test_oversized_scratch_size_boots(scratch_size: int) -> None:
    """0x30000 maps 48 pages and reads entries past the array; 0x3000000 is more than 64 pages."""
    def fault(mem: PhysMem, bp: int) -> None:
        mem.write_u64(_kho_data_phys(mem, bp) + 24, scratch_size)

    m, k1, n1, pattern = _kexec(fault)
    assert k1.panic_message is None
    _no_silent_loss(m, k1, n1, pattern)
    if scratch_size == 0x3000000:
        assert "KHO: disabling KHO revival: -14" in log(k1)


def test_zeroed_scratch_address_and_size_disable_revival_as_linux_does() -> None:
    """early_memremap(0, 0) fails: Linux's fallback, and n1 is not revived over poisoned memory."""
    def fault(mem: PhysMem, bp: int) -> None:
        mem.write(_kho_data_phys(mem, bp) + 16, bytes(16))

    _m, k1, _n1, _pattern = _kexec(fault)
    lines = log(k1)
    i = lines.index("KHO: setup: failed to memremap scratch (phys=0x0, len=0)")
    assert lines[i + 1] == "KHO: disabling KHO revival: -14"
    assert "Revived memory reservation 'n1' from KHO" not in lines


@pytest.mark.parametrize(("entry", "field", "value"), [
    (3, 0, 1 << 62),                     # a RAM entry at 2^62: ValueError in free_pages_memory
    (0, 8, 0x2000000009FC00),            # 8 PiB of RAM from 0: 20-37 s in sparse_init, then a crash
])
def test_e820_ram_the_machine_lacks_stops_the_boot(entry: int, field: int, value: int) -> None:
    def fault(mem: PhysMem, bp: int) -> None:
        mem.write_u64(bp + E820_TABLE + entry * E820_ENTRY + field, value)

    m, k1, _n1, _pattern = _kexec(fault)
    assert m.kernel is k1
    assert k1.panic_message is not None
    assert k1.panic_message.endswith(f"is not memory this machine has {MARK}")
    lines = log(k1)
    assert lines[-2] == f"Kernel panic - not syncing: {k1.panic_message}"
    assert lines[-1] == f"---[ end Kernel panic - not syncing: {k1.panic_message} ]---"


def test_e820_entry_that_wraps_falls_back_to_the_bios_88_map() -> None:
    """append_e820_table() refuses an entry whose end wraps; 6.16 then fakes a map from
    boot_params' ext_mem_k/alt_mem_k, as kexec_file_load filled them."""
    def fault(mem: PhysMem, bp: int) -> None:
        mem.write_u64(bp + E820_TABLE + 3 * E820_ENTRY + 8, 1 << 63)
        mem.write_u64(bp + E820_TABLE + 3 * E820_ENTRY, (1 << 63) + PAGE_SIZE)

    _m, k1, _n1, _pattern = _kexec(fault)
    lines = log(k1)
    alt_mem_k = ((2 << 30) - 1 >> 10) - 1024          # what kexec_file_load wrote (end >> 10) - 1 MiB
    i = lines.index("BIOS-e801: [mem 0x0000000000000000-0x000000000009efff] usable")
    end = (1 << 20) + (alt_mem_k << 10) - 1
    assert lines[i + 1] == f"BIOS-e801: [mem 0x0000000000100000-{end:#018x}] usable"
    assert k1.panic_message is None


def test_overlapping_e820_entries_are_sanitized() -> None:
    """e820__update_table: the higher type wins where entries overlap."""
    def fault(mem: PhysMem, bp: int) -> None:
        mem.write(bp + E820_TABLE + 1 * E820_ENTRY, struct.pack("<QQI", 0x90000, 0x10000, 2))

    _m, k1, _n1, _pattern = _kexec(fault)
    lines = log(k1)
    assert "BIOS-e820: [mem 0x0000000000000000-0x000000000008ffff] usable" in lines
    assert "BIOS-e820: [mem 0x0000000000090000-0x000000000009ffff] reserved" in lines
    assert k1.panic_message is None


@pytest.mark.parametrize("version", ["6.16", "6.18"])
def test_order0_bitmap_of_scrub_bytes_boots_and_loses_nothing_silently(version: str) -> None:
    """Every bit of an order-0 bitmap set to 0xaa: thousands of reservations, then a normal boot."""
    chunks: list[int] = []

    def fault(mem: PhysMem, bp: int) -> None:
        fdt = _kho_data(mem, bp)[0]
        root = mem.read(fdt, PAGE_SIZE)
        for chunk in read_chunks(mem, prop_u64(root, "/", "preserved-memory-map")):
            if chunk.order == 0:
                mem.fill(chunk.elms[0][1], 512 if version == "6.16" else PAGE_SIZE, POISON)
                chunks.append(chunk.phys)
                return

    m, k1, n1, pattern = _kexec(fault, version)
    assert chunks and k1.panic_message is None
    _no_silent_loss(m, k1, n1, pattern)


def test_a_stopped_kernel_answers_eio_through_the_mount(tmp_path: Path,
                                                        capfd: pytest.CaptureFixture[str]) -> None:
    """One errno for every kernel file, one line on the daemon's stderr, the console still readable."""
    with mounted(tmp_path, CMDLINE, mem="2G") as (m, mnt):
        k0 = m.kernel
        assert k0 is not None
        finalize(k0)
        load(k0)
        k1 = m.kexec(lambda mem, bp: mem.write_u64(bp + E820_TABLE + 3 * E820_ENTRY, 1 << 62))
        assert k1.panic_message is not None
        r = sh(f"cat {mnt}/proc/cmdline; ls {mnt}/sys/kernel/debug; cat {mnt}/khofs/dmesg")
        assert r.stderr.splitlines() == [f"cat: {mnt}/proc/cmdline: Input/output error",
                                         f"ls: cannot access '{mnt}/sys/kernel/debug': Input/output error"]
        assert f"Kernel panic - not syncing: {k1.panic_message}" in r.stdout
    told = [line for line in capfd.readouterr().err.splitlines() if "the kernel panicked" in line]
    assert told == [f"khofs: the kernel panicked: {k1.panic_message}; its files fail with EIO "
                    "(khofs/dmesg still shows its log)"]
