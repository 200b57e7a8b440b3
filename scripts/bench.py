#!/usr/bin/env python3
"""Benchmarks: memory and time of sparse physical memory and of whole-machine boots.

Prints a table; asserts nothing (speed is measured here, never in tests).
Usage: python3 scripts/bench.py
"""

import os
import time

from sim.bzimage import make_bzimage
from sim.kho_decode import kho_decode
from sim.machine import Machine
from sim.page_alloc import Folio
from sim.physmem import PhysMem

MiB = 1 << 20


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def row(name: str, t0: float, base: float, extra: str = "") -> None:
    rss = rss_mib()
    print(f"| {name:<57} | {time.perf_counter() - t0:8.3f} | {rss - base:9.1f} | {rss:8.1f} | {extra} |")


def main() -> None:
    print("| step | seconds | RSS delta MiB | RSS MiB | notes |")
    print("|---|---:|---:|---:|---|")
    base = rss_mib()
    t0 = time.perf_counter()
    mem = PhysMem(1 << 40)
    row("PhysMem(1 TiB)", t0, base, "")
    t0 = time.perf_counter()
    data = os.urandom(4 * MiB)
    for i in range(4):
        mem.write((i << 38) + 12345, data)
    row("write 4 x 4 MiB at scattered addresses", t0, base, f"{mem.materialized_pages} pages materialised")
    t0 = time.perf_counter()
    mem.fill(0, 1 << 40, 0xAA)
    row("fill all 1 TiB with poison", t0, base, f"{mem.materialized_pages} pages materialised")
    t0 = time.perf_counter()
    assert mem.read((1 << 39) - 8, 16) == b"\xaa" * 16
    mem.read(0, 64 * MiB)
    row("read 64 MiB of filled memory", t0, base, "")
    del mem, data

    for mem_size, nodes, scrub in (("8G", 2, False), ("8G", 2, True), ("1T", 4, True)):
        base = rss_mib()
        t0 = time.perf_counter()
        m = Machine(mem=mem_size, nodes=nodes, scrub=scrub, test_kho=True,
                    cmdline="kho=on reserve_mem=64m:4k:n1")
        k = m.boot()
        row(f"boot {mem_size}/{nodes} nodes, test_kho, scrub={scrub}", t0, base,
            f"{m.physmem.materialized_pages} pages materialised")
        t0 = time.perf_counter()
        k.debugfs.write("kho/out/finalize", b"1")
        k.kexec_file_load(make_bzimage("6.16"), None, k.cmdline, 4)
        k = m.kexec()
        ok = "test_kho: KHO restore succeeded" in k.dmesg()
        row(f"finalize + kexec_file_load + kexec ({mem_size})", t0, base,
            f"restore succeeded={ok}, {m.physmem.materialized_pages} pages materialised")
        del m, k

    # A million scattered order-0 folios (every other page from 16 GiB down): the KHO
    # sanitizer's bookkeeping, and the readers (khofs decode, memmap) of such a hand-over.
    n = 1_000_000
    for sanitizer in (False, True):
        base = rss_mib()
        m = Machine(mem="64G", nodes=2, cmdline="kho=on", kho_sanitizer=sanitizer)
        k = m.boot()
        t0 = time.perf_counter()
        top = (16 << 30) >> 12
        for i in range(n):
            k.kho.kho_preserve_folio(Folio(top + 2 * (n - i), 0))
        row(f"preserve {n} scattered pages, sanitizer={sanitizer}", t0, base, "")
        t0 = time.perf_counter()
        k.debugfs.write("kho/out/finalize", b"1")
        row("finalize", t0, base, "")
        t0 = time.perf_counter()
        d = kho_decode(k.debugfs.read("kho/out/fdt"), m.physmem.read, m.physmem.size, "6.16")
        assert d.mem_map is not None
        row("kho_decode (khofs decode's reader)", t0, base, f"{len(d.mem_map.ranges)} ranges")
        t0 = time.perf_counter()
        k.kexec_file_load(make_bzimage("6.16"), None, k.cmdline, 4)
        k = m.kexec()
        row("kexec_file_load + kexec (the sanitizer compares the list)", t0, base,
            f"{len(m.kho_sanitizer.log) if m.kho_sanitizer else 'no'} sanitizer findings")
        del m, k, d


if __name__ == "__main__":
    main()
