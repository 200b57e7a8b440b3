"""The always-on loss check (issue 8 item 2): memory a new kernel takes over from KHO without it
having been handed over gets a khofs line, while Linux 6.16's own behaviour (revive anyway,
restore anyway) is kept."""

import struct

import pytest
from kho_common import (
    CMDLINE,
    PAGE_SHIFT,
    arch,  # noqa: F401 - the fixture every test here runs under
    boot,
    finalize,
    kexec,
    load,
    log,
    only,
    prop_u64,
    random_bytes,
    read_chunks,
)

from sim.init.main import Kernel
from sim.machine import Machine

pytestmark = pytest.mark.usefixtures("arch")

MARK = "[khofs: not checked by Linux]"


def _loss_lines(k: Kernel) -> list[str]:
    return [line for line in log(k) if "its contents are lost" in line]


def _n1(k: Kernel) -> tuple[int, int]:
    found = k.reserve_mem.reserve_mem_find_by_name("n1")
    assert found is not None
    return found


def _handover_with_pattern(version: str = "6.16") -> tuple[Machine, Kernel, tuple[int, int], bytes]:
    m, k0 = boot(version=version)
    n1 = _n1(k0)
    pattern = random_bytes(n1[1], seed=81)
    m.physmem.write(n1[0], pattern)
    finalize(k0)
    load(k0)
    return m, k0, n1, pattern


def test_an_intact_handover_reports_no_loss() -> None:
    m, _k0, n1, pattern = _handover_with_pattern()
    k1 = m.kexec()
    assert "Revived memory reservation 'n1' from KHO" in log(k1)
    assert _loss_lines(k1) == []
    assert m.physmem.read(*n1) == pattern


def test_unpreserved_reserve_mem_is_revived_and_reported() -> None:
    """Zeroing the bitmaps of the n1 blocks: Linux revives n1 over freed (poisoned) memory silently."""
    m, k0, n1, pattern = _handover_with_pattern()
    out = k0.debugfs.read("kho/out/fdt")
    for chunk in read_chunks(m.physmem, prop_u64(out, "/", "preserved-memory-map")):
        shift = chunk.order + PAGE_SHIFT
        for phys_start, bitmap in chunk.elms:
            for bit in range(max(0, (n1[0] - phys_start) >> shift), (n1[0] + n1[1] - phys_start) >> shift):
                byte = m.physmem.read(bitmap + bit // 8, 1)[0]
                m.physmem.write(bitmap + bit // 8, bytes([byte & ~(1 << bit % 8)]))
    k1 = m.kexec()
    lines = log(k1)
    assert "Revived memory reservation 'n1' from KHO" in lines
    assert _n1(k1) == n1
    assert m.physmem.read(*n1) != pattern
    (line,) = _loss_lines(k1)
    assert line.startswith(f"KHO: reserve_mem 'n1' [mem {n1[0]:#018x}-{n1[0] + n1[1] - 1:#018x}] "
                           f"is not in the preserved memory map from {n1[0]:#x} on")
    assert line.endswith(MARK)


def test_missing_map_reports_the_revived_entry() -> None:
    m, k0, n1, _pattern = _handover_with_pattern()
    assert k0.kho.ser.fdt is not None
    # The preserved-memory-map property's header and value (see test_kho_in) become FDT_NOPs.
    m.physmem.write(k0.kho.ser.fdt.phys + 0x5C, struct.pack(">5I", *[4] * 5))
    k1 = m.kexec()
    assert "KHO: failed to get preserved memory bitmaps" in log(k1)
    # Nothing is covered: neither n1 nor the root FDT's own page, which 6.16 restores as order 0.
    assert [line.split(" [mem")[0] for line in _loss_lines(k1)] == ["KHO: reserve_mem 'n1'",
                                                                   "KHO: restored folio"]


def test_preserved_range_inside_scratch_is_reported() -> None:
    """Preserved and revived, but in scratch the next kernel reuses first (Linux 6.16, spec §12.2)."""
    m, k0 = boot()
    finalize(k0)
    cmd = CMDLINE.replace("64m:4k:n1", "32m:4k:n1")
    k1 = kexec(m, cmdline=cmd)
    finalize(k1)
    n1 = _n1(k1)
    k2 = kexec(m, cmdline=cmd)
    assert _n1(k2) == n1
    (line,) = _loss_lines(k2)
    assert line.startswith(f"KHO: reserve_mem 'n1' [mem {n1[0]:#018x}-")
    assert " lies in scratch [mem " in line and line.endswith(MARK)


def test_restoring_an_unpreserved_folio_is_reported_but_allowed_on_6_16() -> None:
    m, k0, _n1_range, _pattern = _handover_with_pattern()
    k1 = m.kexec()
    folio = k1.page_alloc.alloc_pages(0)
    assert folio is not None
    restored = k1.kho.kho_restore_folio(folio.phys)
    assert restored is not None and restored.order == 0          # Linux 6.16: private 0 is order 0
    (line,) = _loss_lines(k1)
    assert line.startswith(f"KHO: restored folio [mem {folio.phys:#018x}-{folio.phys + 0xfff:#018x}]")


def test_restoring_preserved_folios_is_quiet() -> None:
    """test_kho restores every folio it preserved, the kernel the root FDT's page."""
    for version in ("6.16", "6.18"):
        m, k0 = boot(version=version, test_kho=True)
        finalize(k0)
        k1 = kexec(m)
        assert "test_kho: KHO restore succeeded" in log(k1)
        assert _loss_lines(k1) == []


@only("x86_64")
def test_memory_reserved_for_another_reason_is_not_preserved() -> None:
    """The real-mode area below 1 MiB is reserved in memblock, but not by the preserved map."""
    m, _k0, _n1_range, _pattern = _handover_with_pattern()
    k1 = m.kexec()
    assert k1.memblock.is_reserved(0x10000)
    assert k1.kho.kho_restore_folio(0x10000) is not None
    (line,) = _loss_lines(k1)
    assert line.startswith("KHO: restored folio [mem 0x0000000000010000-0x0000000000010fff] is not in ")
