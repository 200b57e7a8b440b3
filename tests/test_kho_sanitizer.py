"""The KHO sanitizer (sim.kho_sanitizer): each misuse gives one `khofs: KHO sanitizer:` KERN_ERR
line in the new kernel naming the memory; a clean chain gives none; it never changes what a
kernel does.

Corruptions are made the way a buggy kernel or a hostile user would: by writing RAM (the
chunk list is read back with kho_common's own walker) or by calling the KHO API.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kho_common import (
    CMDLINE,
    arch,  # noqa: F401 - the fixture every test here runs under
    finalize,
    kexec,
    log,
    machine,
    make_image,
    only,
    prop_u64,
    read_chunks,
)
from test_fs_harness import mounted

from sim.kernel.printk import LOGLEVEL_ERR
from sim.machine import Machine

pytestmark = pytest.mark.usefixtures("arch")

PREFIX = "khofs: KHO sanitizer: "
# n2 is 16 MiB at a 16 MiB boundary: exactly one order-12 block.
N2_CMDLINE = CMDLINE + " reserve_mem=16m:16m:n2"


def sanitizer_lines(k) -> list[str]:
    return [line for line in log(k) if "KHO sanitizer" in line]


def boot(cmdline: str = CMDLINE, sanitizer: bool = True, **kw) -> tuple[Machine, object]:
    m = machine(cmdline=cmdline, scrub=True, kho_sanitizer=sanitizer, **kw)
    return m, m.boot()


def reserve_mem(k, name: str) -> tuple[int, int]:
    blob = k.debugfs.read("kho/out/sub_fdts/memblock")
    return prop_u64(blob, f"/{name}", "start"), prop_u64(blob, f"/{name}", "size")


def clear_bitmaps(m: Machine, k, order: int) -> None:
    first = prop_u64(k.debugfs.read("kho/out/fdt"), "/", "preserved-memory-map")
    chunks = [c for c in read_chunks(m.physmem, first) if c.order == order]
    assert chunks, f"no order-{order} chunk"
    for chunk in chunks:
        for _, bitmap in chunk.elms:
            m.physmem.fill(bitmap, k.kho.preserve_bits // 8, 0)


@pytest.mark.parametrize("version", ["6.16", "6.18"])
def test_a_cleared_order_12_bitmap_is_named(version: str) -> None:
    """Expect: the missing block, then n2's revival over memory the map lost, both naming n2."""
    m, k = boot(N2_CMDLINE, kernel_version=version)
    finalize(k)
    start, size = reserve_mem(k, "n2")
    clear_bitmaps(m, k, 12)
    k2 = kexec(m)
    mem = f"[mem {start:#018x}-{start + size - 1:#018x}]"
    assert sanitizer_lines(k2) == [
        f"{PREFIX}preserved memory {mem} (order 12) is missing from the preserved memory map: "
        "the new kernel will not keep it",
        f"{PREFIX}reserve_mem 'n2' {mem} is not in the preserved memory map from {start:#x} on; "
        "its contents are lost"]
    errs = [r for r in k2.printk.records if r.text.startswith(PREFIX)]
    assert {r.level for r in errs} == {LOGLEVEL_ERR}
    assert m.kho_sanitizer.log == [f"gen 1: {line}" for line in sanitizer_lines(k2)]


def test_restoring_a_folio_never_preserved_is_named() -> None:
    m, k = boot()
    finalize(k)
    k2 = kexec(m)
    assert sanitizer_lines(k2) == []
    assert k2.kho.kho_restore_folio(0x100000000) is not None        # 6.16 hands it out all the same
    assert sanitizer_lines(k2) == [
        f"{PREFIX}restored folio [mem 0x0000000100000000-0x0000000100000fff] was never preserved "
        "(from 0x100000000 on); its contents are lost"]


def test_without_the_sanitizer_the_always_on_check_speaks_for_itself() -> None:
    m, k = boot(N2_CMDLINE, sanitizer=False)
    finalize(k)
    start, _ = reserve_mem(k, "n2")
    clear_bitmaps(m, k, 12)
    k2 = kexec(m)
    assert sanitizer_lines(k2) == [] and m.kho_sanitizer is None
    assert any(line.startswith("KHO: reserve_mem 'n2'") and f"from {start:#x} on" in line
               and line.endswith("[khofs: not checked by Linux]") for line in log(k2))


def test_a_preserved_folio_freed_before_the_kexec_is_named() -> None:
    m, k = boot(test_kho=True)
    folio = k.test_kho.folios[0]
    k.page_alloc.free_folio(folio)              # a KHO user that frees what it preserved
    again = k.page_alloc.alloc_pages(folio.order)
    assert again == folio                       # ... and the allocator hands it to someone else
    finalize(k)
    k2 = kexec(m)
    mem = f"[mem {folio.phys:#018x}-{folio.phys + folio.size - 1:#018x}]"
    assert sanitizer_lines(k2)[:2] == [
        f"{PREFIX}preserved memory {mem} freed to the page allocator before the kexec: "
        "its next owner's bytes reach the new kernel",
        f"{PREFIX}preserved memory {mem} reallocated by the page allocator before the kexec: "
        "its next owner's bytes reach the new kernel"]


def test_preserved_memory_in_scratch_and_a_bit_nobody_set_are_named() -> None:
    m, k = boot()
    area = k.kho.kho_scratch[1]
    assert k.kho.kho_preserve_phys(area.addr, 0x2000) == 0
    finalize(k)
    # Set a bit nobody preserved: order 0, the page after the scratch pages just preserved.
    first = prop_u64(k.debugfs.read("kho/out/fdt"), "/", "preserved-memory-map")
    chunk = next(c for c in read_chunks(m.physmem, first) if c.order == 1)
    phys_start, bitmap = chunk.elms[0]
    bit = (area.addr + 0x2000 - phys_start) >> 13
    m.physmem.write(bitmap + bit // 8, bytes([m.physmem.read(bitmap + bit // 8, 1)[0] | 1 << bit % 8]))
    k2 = kexec(m)
    lines = sanitizer_lines(k2)
    scratch = f"[mem {area.addr:#018x}-{area.addr + area.size - 1:#018x}]"
    assert lines[0] == (f"{PREFIX}preserved memory [mem {area.addr:#018x}-{area.addr + 0x1fff:#018x}] "
                        f"overlaps scratch {scratch}: the new kernel allocates from it before it reads "
                        "the preserved map")
    assert lines[1] == (f"{PREFIX}the preserved memory map lists [mem {area.addr + 0x2000:#018x}-"
                        f"{area.addr + 0x3fff:#018x}] (order 1), which was never preserved")
    assert len(lines) == 2


@pytest.mark.parametrize("version", ["6.16", "6.18"])
def test_a_clean_chain_of_20_generations_reports_nothing(version: str) -> None:
    m, k = boot(test_kho=True, kernel_version=version)
    for _ in range(20):
        finalize(k)
        k = kexec(m)
        assert sanitizer_lines(k) == [], m.generation
        assert "Revived memory reservation 'n1' from KHO" in log(k)
    assert m.kho_sanitizer.log == [] and m.generation == 20


@only("x86_64")        # the addresses below are the q35 machine's
def test_the_sanitizer_changes_nothing_the_kernel_does() -> None:
    """Expect the same log (less the sanitizer's lines), memblock and RAM with it on and off."""
    runs = []
    for sanitizer in (False, True):
        m, k = boot(N2_CMDLINE, sanitizer=sanitizer, test_kho=True)
        finalize(k)
        clear_bitmaps(m, k, 12)
        k2 = kexec(m)
        k2.kho.kho_restore_folio(0x100000000)
        runs.append(([line for line in log(k2) if "KHO sanitizer" not in line
                      and "[khofs: not checked by Linux]" not in line],
                     k2.debugfs.read("memblock/reserved"), m.physmem.read(0x270000000, 0x10000000)))
    assert runs[0] == runs[1]


@only("x86_64")
def test_findings_are_served_under_khofs(tmp_path: Path) -> None:
    with mounted(tmp_path, kho_sanitizer=True) as (m, mnt):
        assert (mnt / "khofs/kho_sanitizer").read_text() == ""
        m.kernel.debugfs.write("kho/out/finalize", b"1\n")
        m.kernel.kexec_file_load(make_image("6.16"), None, m.kernel.cmdline, 4)
        m.kexec()
        m.kernel.kho.kho_restore_folio(0x100000000)
        r = subprocess.run(["cat", str(mnt / "khofs/kho_sanitizer")], capture_output=True, text=True)
        assert r.stdout == (f"gen 1: {PREFIX}restored folio [mem 0x0000000100000000-0x0000000100000fff] "
                            "was never preserved (from 0x100000000 on); its contents are lost\n")
        assert "kho_sanitizer" in subprocess.run(["ls", str(mnt / "khofs")], capture_output=True,
                                                 text=True).stdout
        r = subprocess.run([sys.executable, "-m", "khofs.cli", "decode", "--json"], capture_output=True,
                           text=True, env={**os.environ, "KHOFS_ROOT": str(mnt)}, timeout=60)
        assert json.loads(r.stdout)["sanitizer_findings"] == 1
    (tmp_path / "off").mkdir()
    with mounted(tmp_path / "off") as (m, mnt):
        assert not (mnt / "khofs/kho_sanitizer").exists()
        assert sorted(p.name for p in (mnt / "khofs").iterdir()) == ["dmesg", "kmsg", "syscall"]
