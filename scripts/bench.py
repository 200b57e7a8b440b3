#!/usr/bin/env python3
"""Benchmarks of issue 7: one Markdown table, min/median of >= 5 runs, peak RSS, side-by-side ratios.

Asserts nothing (speed is measured here, never in tests).  Every workload runs in a forked
child (os.wait4 gives that child's peak RSS), every run on a freshly booted machine, and only
the operation the row names is timed.  References run in the same invocation, interleaved with
what they are compared to: a minimal mfusepy filesystem serving the same bytes at the same
paths with the same mount options (on libfuse2 and libfuse3), and a tmpfs file for the physical floor.

Usage: python3 scripts/bench.py [--quick] [--runs N]   (--quick: under a minute, no 1M / 16 TiB rows)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sim.arch.x86.boot.bzimage import make_bzimage  # noqa: E402
from sim.kho_decode import kho_decode  # noqa: E402
from sim.machine import Machine  # noqa: E402
from sim.mm.page_alloc import Folio  # noqa: E402

MiB = 1 << 20
KEXEC_FILE_NO_INITRAMFS = 4
FUSE_LIBS = {"libfuse2": "fuse", "libfuse3": "fuse3"}
READ_CHUNK = 128 << 10          # what `cat` and the kernel's FUSE max_read give a reader
MEM_WINDOW = 64 * MiB
FDT_READS = 200                 # `cat out/fdt` is sub-millisecond: time this many per run

Timer = Callable[[], float]


# -- running and measuring --

def measure(runs: int, setup: Callable[[], Timer]) -> tuple[list[float], float]:
    """`runs` timings of setup()'s timer, each after a fresh setup, in a forked child; and its
    peak RSS in MiB."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        try:
            times = [setup()() for _ in range(runs)]
            os.write(wfd, json.dumps(times).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        raw = f.read()
    _, _, usage = os.wait4(pid, 0)
    return (json.loads(raw) if raw else []), usage.ru_maxrss / 1024


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class Table:
    def __init__(self) -> None:
        self.rows: list[str] = []

    def add(self, name: str, times: list[float], rss: float, ref: list[float] | None = None,
            note: str = "") -> None:
        if not times:
            self.rows.append(f"| {name} | failed | | | | | {note} |")
            return
        med = statistics.median(times)
        ratio = f"{med / statistics.median(ref):.2f}x (min {min(times) / min(ref):.2f}x)" if ref else ""
        refcol = _ms(statistics.median(ref)) if ref else ""
        self.rows.append(f"| {name} | {len(times)} | {_ms(min(times))} | {_ms(med)} | {rss:.0f} | "
                         f"{refcol} | {ratio} | {note} |")
        print(self.rows[-1], file=sys.stderr, flush=True)

    def print(self) -> None:
        print("| workload | runs | min | median | peak RSS MiB | reference median | ratio | notes |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        print("\n".join(self.rows))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


# -- in-process workloads --

def round_trip(mem: str = "8G", nodes: int = 2, scrub: bool = False, test_kho: bool = False) -> Timer:
    """A booted machine; the timer does finalize + kexec_file_load + kexec."""
    image = make_bzimage("6.16")
    m = Machine(mem=mem, nodes=nodes, scrub=scrub, test_kho=test_kho, cmdline="kho=on")
    k = m.boot()

    def run() -> float:
        def go() -> None:
            k.debugfs.write("kho/out/finalize", b"1")
            k.kexec_file_load(image, None, k.cmdline, KEXEC_FILE_NO_INITRAMFS)
            k1 = m.kexec()
            assert not test_kho or "test_kho: KHO restore succeeded" in k1.dmesg()
        return timed(go)
    return run


def scattered(count: int, per_block: int = 8) -> Timer:
    """1 TiB, 8 nodes, scrub: `count` folios of orders 0-4 preserved, `per_block` to a 4 MiB block
    the page allocator hands out; 1,000 of them carry their own byte value, checked after."""
    image = make_bzimage("6.16")
    m = Machine(mem="1T", nodes=8, scrub=True, cmdline="kho=on")
    k = m.boot()
    rng = random.Random(count)
    slot = 1024 // per_block
    folios: list[Folio] = []
    while len(folios) < count:
        block = k.page_alloc.alloc_pages(10)
        assert block is not None
        for i in range(min(per_block, count - len(folios))):
            order = rng.randrange(5)
            folios.append(Folio(block.pfn + i * slot + (rng.randrange(16 >> order) << order), order))
    for f in folios:
        assert k.kho.kho_preserve_folio(f) == 0
    sample = sorted(rng.sample(folios, min(1000, count)), key=lambda f: f.pfn)
    for i, f in enumerate(sample):
        m.physmem.fill(f.phys, f.size, 1 + i % 0xA0)
    del folios

    def run() -> float:
        def go() -> None:
            k.debugfs.write("kho/out/finalize", b"1")
            k.kexec_file_load(image, None, k.cmdline, KEXEC_FILE_NO_INITRAMFS)
            m.kexec()
        t = timed(go)
        k1 = m.kernel
        assert k1 is not None
        for i, f in enumerate(sample):
            assert k1.kho.kho_restore_folio(f.phys) == f
            assert m.physmem.read(f.phys, f.size) == bytes([1 + i % 0xA0]) * f.size, f
        return t
    return run


def million_pages(sanitizer: bool, decode: bool) -> Timer:
    """64G/2 nodes: a million scattered order-0 pages (every other page from 16 GiB down)
    preserved, with or without the KHO sanitizer; the timer does finalize + load + kexec, or
    (decode) finalize and kho_decode of the hand-over, khofs decode's reader."""
    image = make_bzimage("6.16")
    m = Machine(mem="64G", nodes=2, cmdline="kho=on", kho_sanitizer=sanitizer)
    k = m.boot()
    n, top = 1_000_000, (16 << 30) >> 12
    for i in range(n):
        k.kho.kho_preserve_folio(Folio(top + 2 * (n - i), 0))

    def run() -> float:
        t0 = time.perf_counter()
        k.debugfs.write("kho/out/finalize", b"1")
        if decode:
            d = kho_decode(k.debugfs.read("kho/out/fdt"), m.physmem.read, m.physmem.size, "6.16")
            assert d.mem_map is not None
        else:
            k.kexec_file_load(image, None, k.cmdline, KEXEC_FILE_NO_INITRAMFS)
            m.kexec()
        return time.perf_counter() - t0
    return run


def boot_only(mem: str, nodes: int) -> Timer:
    return lambda: timed(lambda: Machine(mem=mem, nodes=nodes, scrub=True, cmdline="kho=on").boot())


# -- the shell --

KHOFS = [sys.executable, "-m", "khofs.cli"]
TRANSCRIPT = r"""
s=$(date +%s%N)
echo 1 > /sys/kernel/debug/kho/out/finalize
kexec -l "$1" -s --reuse-cmdline
kexec -e
cat /sys/kernel/debug/kho/in/fdt > /dev/null
e=$(date +%s%N)
echo $(( e - s ))
"""


# As an installed khofs starts: with its bytecode cached (PYTHONDONTWRITEBYTECODE would have every
# start compile each module from source again; the first run writes the cache).
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def child(argv: list[str]) -> tuple[float, str, float]:
    """Run argv; its wall time, stdout and peak RSS (MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO, env=CHILD_ENV)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{argv} exited {proc.returncode}")
    return time.perf_counter() - t0, out, usage.ru_maxrss / 1024


def shell_rows(table: Table, runs: int) -> None:
    child([*KHOFS, "run", "--", "true"])          # warm-up: writes the bytecode cache
    true = [child([*KHOFS, "run", "--", "true"]) for _ in range(runs)]
    table.add("`khofs run -- true`", [t for t, _, _ in true], max(r for _, _, r in true),
              note="the whole command, wall clock")
    with tempfile.TemporaryDirectory() as tmp:
        image = os.path.join(tmp, "Image")
        Path(image).write_bytes(make_bzimage("6.16"))
        done = [child([*KHOFS, "run", "--cmdline", "kho=on", "--", "bash", "-c", TRANSCRIPT, "bash", image])
                for _ in range(runs)]
    table.add("seed transcript inside `khofs run`", [int(out.split()[-1]) / 1e9 for _, out, _ in done],
              max(r for _, _, r in done), note="finalize; kexec -l; kexec -e; cat in/fdt, after start-up")


# -- FUSE --

MINIMAL_FS = r"""
import errno, stat, sys, mfusepy
class Fs(mfusepy.Operations):
    '''Files at the paths khofs serves them at (so lookups walk as many components); no more.'''
    def __init__(self, files):
        self.files = files
        self.dirs = {p[:i] or "/" for p in files for i in range(len(p)) if p[i] == "/"}
    def getattr(self, path, fh=None):
        if path in self.dirs: return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path in self.files: return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": 0}
        raise mfusepy.FuseOSError(errno.ENOENT)
    def readdir(self, path, fh): return [".", ".."]
    def open(self, path, flags): return 0
    def read(self, path, size, offset, fh): return self.files[path][offset:offset + size]
files = {path: open(src, "rb").read() for path, src in zip(sys.argv[2::2], sys.argv[3::2])}
mfusepy.FUSE(Fs(files), sys.argv[1], foreground=True, direct_io=True, entry_timeout=0, attr_timeout=0,
             negative_timeout=0, fsname="minimal")
"""

MEM_PATH = "dev/mem"
FDT_PATH = "sys/kernel/debug/kho/out/fdt"


class Mount:
    """A FUSE server in a child process on a fresh mountpoint."""

    def __init__(self, argv: list[str], lib: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="khofs-bench-")
        env = dict(os.environ, FUSE_LIBRARY_NAME=lib, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen([*argv[:1], *[a.replace("MNT", self.dir) for a in argv[1:]]],
                                     env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not os.path.ismount(self.dir):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no mount: {argv}")
            time.sleep(0.01)

    def close(self) -> float:
        """Unmount; the server's peak RSS in MiB."""
        subprocess.run(["fusermount", "-u", self.dir], capture_output=True)
        _, _, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = 0
        os.rmdir(self.dir)
        return usage.ru_maxrss / 1024


def read_file(path: str, limit: int | None = None) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        total = 0
        while limit is None or total < limit:
            chunk = os.read(fd, READ_CHUNK if limit is None else min(READ_CHUNK, limit - total))
            if not chunk:
                break
            total += len(chunk)
        return total
    finally:
        os.close(fd)


def fuse_rows(table: Table, runs: int, lib_label: str, lib: str) -> None:
    """dev/mem (64 MiB) and out/fdt through khofs, against the minimal FS serving the same bytes."""
    work = tempfile.mkdtemp(prefix="khofs-bench-data-", dir="/dev/shm")
    try:
        khofs = Mount([sys.executable, "-m", "khofs.cli", "mount", "--cmdline", "kho=on", "--foreground",
                       "MNT"], lib)
        try:
            with open(os.path.join(khofs.dir, "sys/kernel/debug/kho/out/finalize"), "w") as f:
                f.write("1")
            mem_path = os.path.join(khofs.dir, MEM_PATH)
            fdt_path = os.path.join(khofs.dir, FDT_PATH)
            with open(mem_path, "rb") as f:
                mem = f.read(MEM_WINDOW)
            with open(fdt_path, "rb") as f:
                fdt = f.read()
            mem_src, fdt_src = os.path.join(work, "mem"), os.path.join(work, "fdt")
            Path(mem_src).write_bytes(mem)
            Path(fdt_src).write_bytes(fdt)
            minimal = Mount([sys.executable, "-c", MINIMAL_FS, "MNT", f"/{MEM_PATH}", mem_src,
                             f"/{FDT_PATH}", fdt_src], lib)
            try:
                pairs = {"mem": ([], []), "fdt": ([], [])}
                for _ in range(runs):       # interleaved, so both see the same machine load
                    pairs["mem"][0].append(timed(lambda: read_file(mem_path, MEM_WINDOW)))
                    pairs["mem"][1].append(timed(lambda: read_file(os.path.join(minimal.dir, MEM_PATH))))
                    pairs["fdt"][0].append(timed(lambda: [read_file(fdt_path) for _ in range(FDT_READS)]))
                    pairs["fdt"][1].append(timed(
                        lambda: [read_file(os.path.join(minimal.dir, FDT_PATH)) for _ in range(FDT_READS)]))
                tmpfs = [timed(lambda: read_file(mem_src)) for _ in range(runs)]
            finally:
                minimal_rss = minimal.close()
        finally:
            khofs_rss = khofs.close()
    finally:
        shutil.rmtree(work)
    table.add(f"FUSE {lib_label}: read 64 MiB of dev/mem", pairs["mem"][0], khofs_rss, pairs["mem"][1],
              "reference: minimal mfusepy FS, same bytes and options (RSS: the khofs server)")
    table.add(f"FUSE {lib_label}: minimal FS, the same 64 MiB", pairs["mem"][1], minimal_rss, tmpfs,
              "reference: a tmpfs file (the physical floor)")
    table.add(f"FUSE {lib_label}: cat out/fdt x{FDT_READS}", pairs["fdt"][0], khofs_rss, pairs["fdt"][1],
              f"reference: minimal FS, the same {len(fdt)} bytes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small workloads only: under a minute")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    runs, quick = args.runs, args.quick
    table = Table()

    variants: tuple[tuple[str, dict[str, bool]], ...] = (
        ("plain", {}), ("scrub", {"scrub": True}), ("test_kho", {"scrub": True, "test_kho": True}))
    for name, kw in variants:
        table.add(f"round trip 8G/2 nodes, {name}", *measure(runs, lambda kw=kw: round_trip(**kw)),
                  note="finalize + kexec_file_load + kexec, in-process")

    for count in (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000):
        table.add(f"{count:,} scattered folios, 1T/8 nodes, scrub",
                  *measure(runs, lambda count=count: scattered(count)),
                  note="finalize + load + kexec; 1,000 sampled folios intact")

    for mem in ("8G", "64G", "1T") if quick else ("8G", "64G", "1T", "4T", "16T"):
        table.add(f"boot {mem}, 8 nodes, scrub", *measure(runs, lambda mem=mem: boot_only(mem, 8)))
    for nodes in (1, 4, 16) if quick else (1, 2, 4, 8, 16):
        table.add(f"boot 1T, {nodes} nodes, scrub",
                  *measure(runs, lambda nodes=nodes: boot_only("1T", nodes)))
    if not quick:
        table.add("boot 16T, 16 nodes, scrub", *measure(runs, lambda: boot_only("16T", 16)))

    if not quick:
        for sanitizer in (False, True):
            table.add(f"1,000,000 scattered pages, 64G, sanitizer={sanitizer}",
                      *measure(runs, lambda s=sanitizer: million_pages(s, decode=False)),
                      note="finalize + load + kexec (the sanitizer compares the map)")
        table.add("1,000,000 scattered pages: finalize + kho_decode",
                  *measure(runs, lambda: million_pages(False, decode=True)), note="khofs decode's reader")

    shell_rows(table, runs)
    for label, lib in FUSE_LIBS.items():
        fuse_rows(table, runs, label, lib)
    table.print()
    print(f"\n{os.uname().nodename}: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"{'--quick' if quick else 'full run'}, {runs} runs", file=sys.stderr)


if __name__ == "__main__":
    main()
