#!/usr/bin/env python3
"""Corrupt KHO hand-overs after machine_kexec copied them and check the next boot (issue 8).

Each case is a fresh machine: a kernel with two reserve_mem regions full of a random
pattern and test_kho on finalizes, loads the next kernel and kexecs; between the copy
and the jump one hand-over structure is corrupted (the root FDT, a sub-FDT, the chunk
list or a bitmap, the scratch array, kho_data, setup_data, boot_params or its e820
table), at random or with one of the values users and the issue found harmful.  The
new kernel must then boot or stop cleanly, and its KHO users must get their bytes
back or a log line saying why not:

  intact    every reserve_mem region revived with its bytes, test_kho restored
  fallback  something was not revived or restored and the log says so (or KHO was off)
  stopped   the kernel could not boot and the machine says why (a clean panic)
  crash     a Python exception escaped the boot or the new kernel's interfaces
  hang      a case took longer than --timeout seconds
  loss      a region revived or test_kho restored with wrong bytes and no khofs line

Case k of a run uses seed S+k, printed with every failure; `--cases 1 --seed S+k`
replays it.  Exit status 1 on any crash, hang or loss.
"""

import argparse
import random
import resource
import signal
import struct
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.arch.x86.boot.bzimage import make_bzimage  # noqa: E402
from sim.arch.x86.bootparam import (  # noqa: E402
    E820_ENTRIES_OFFSET,
    E820_ENTRY_SIZE,
    E820_TABLE_OFFSET,
    SETUP_DATA_HDR_SIZE,
    SETUP_KEXEC_KHO,
    BootParams,
    walk_setup_data,
)
from sim.kernel.kexec_file import KEXEC_FILE_NO_INITRAMFS  # noqa: E402
from sim.kernel.kexec_handover import KHOSER_ELM_SIZE, KHOSER_HDR_SIZE  # noqa: E402
from sim.lib import fdt as libfdt  # noqa: E402
from sim.machine import Machine  # noqa: E402
from sim.physmem import PhysMem  # noqa: E402

PAGE_SIZE = 4096
POISON = 0xAA
CMDLINE = ("kho=on kho_scratch=16M,64M,32M reserve_mem=1m:4k:n1 reserve_mem=2m:2m:n2 "
           "test_kho.max_mem=262144")
REGIONS = ("n1", "n2")
LOSS_MARK = "its contents are lost [khofs: not checked by Linux]"
KINDS = ("intact", "fallback", "stopped", "crash", "hang", "loss")

# Values that broke earlier versions or sit on a boundary the kernel checks.
SPECIAL = (0, 1, 0x30000, 0x3000000, 0x2000000009FC00, 1 << 40, 1 << 62, 1 << 63, (1 << 64) - 1,
           (1 << 64) - PAGE_SIZE, 0xAAAAAAAAAAAAAAAA, 0xFFFFFFFF, 0x100000000, 64 * PAGE_SIZE,
           65 * PAGE_SIZE)


class Hang(Exception):
    """The case's time ran out."""


@dataclass
class Field:
    """One integer field of a hand-over structure in RAM."""

    addr: int
    size: int          # bytes: 1, 4 or 8
    big_endian: bool = False


@dataclass
class Target:
    name: str
    spans: list[tuple[int, int]]          # (phys, length) of its bytes
    fields: list[Field]


def _fdt_targets(mem: PhysMem, name: str, phys: int) -> list[Target]:
    raw = mem.read(phys, 64)
    if raw[:4] != b"\xd0\x0d\xfe\xed":
        return []
    total = min(libfdt.fdt_totalsize(raw), 1 << 16)
    fields = [Field(phys + off, 4, True) for off in range(0, 40, 4)]
    return [Target(name, [(phys, total)], fields)]


def handover_targets(mem: PhysMem, boot_params: int, preserve_bits: int) -> list[Target]:
    """Where the old kernel's hand-over lies in RAM, found as the new kernel will find it."""
    bp_fields = [Field(boot_params + E820_ENTRIES_OFFSET, 1), Field(boot_params + 0x250, 8),
                 Field(boot_params + 0x228, 4), Field(boot_params + 0x0C8, 4),
                 Field(boot_params + 0x218, 4), Field(boot_params + 0x21C, 4),
                 Field(boot_params + 0x210, 1)]
    targets = [Target("boot_params", [(boot_params, PAGE_SIZE)], bp_fields)]
    bp = BootParams.read(mem, boot_params)
    e820 = [Field(boot_params + E820_TABLE_OFFSET + i * E820_ENTRY_SIZE + off, size)
            for i in range(len(bp.e820_table)) for off, size in ((0, 8), (8, 8), (16, 4))]
    targets.append(Target("e820", [(boot_params + E820_TABLE_OFFSET,
                                    len(bp.e820_table) * E820_ENTRY_SIZE)], e820))
    for sd in walk_setup_data(mem, bp.setup_data):
        targets.append(Target("setup_data", [(sd.phys, SETUP_DATA_HDR_SIZE)],
                              [Field(sd.phys, 8), Field(sd.phys + 8, 4), Field(sd.phys + 12, 4)]))
        if sd.type != SETUP_KEXEC_KHO:
            continue
        data = sd.phys + SETUP_DATA_HDR_SIZE
        targets.append(Target("kho_data", [(data, 32)], [Field(data + off, 8) for off in range(0, 32, 8)]))
        fdt_addr, _fdt_size, scratch_addr, scratch_size = struct.unpack("<QQQQ", mem.read(data, 32))
        n = min(scratch_size // 16, 64)
        targets.append(Target("scratch", [(scratch_addr, n * 16)],
                              [Field(scratch_addr + off, 8) for off in range(0, n * 16, 8)]))
        root = mem.read(fdt_addr, libfdt.fdt_totalsize(mem.read(fdt_addr, 8)))
        targets += _fdt_targets(mem, "root_fdt", fdt_addr)
        for node in libfdt.fdt_for_each_subnode(root, 0):
            value, _len = libfdt.fdt_getprop(root, node, "fdt")
            if value is not None:
                targets += _fdt_targets(mem, f"sub_fdt:{libfdt.fdt_get_name(root, node)}",
                                        struct.unpack("<Q", value)[0])
        value, _len = libfdt.fdt_getprop(root, 0, "preserved-memory-map")
        chunk = struct.unpack("<Q", value)[0] if value else 0
        while chunk:
            nxt, order, num = struct.unpack("<QII", mem.read(chunk, 16))
            fields = [Field(chunk, 8), Field(chunk + 8, 4), Field(chunk + 12, 4)]
            for i in range(num):
                elm = chunk + KHOSER_HDR_SIZE + i * KHOSER_ELM_SIZE
                fields += [Field(elm, 8), Field(elm + 8, 8)]
                bitmap = struct.unpack("<Q", mem.read(elm + 8, 8))[0]
                targets.append(Target(f"bitmap:order{order}", [(bitmap, preserve_bits // 8)], []))
            targets.append(Target("chunk", [(chunk, PAGE_SIZE)], fields))
            chunk = nxt
    return targets


def _interesting(rng: random.Random, old: int, bits: int, mem_size: int) -> int:
    mask = (1 << bits) - 1
    choice = rng.randrange(9)
    if choice == 0:
        value = rng.choice(SPECIAL)
    elif choice == 1:
        value = old ^ (1 << rng.randrange(bits))
    elif choice == 2:
        value = old | 0x80 << rng.choice((8, 16, 24, 32, 40, 48, 56))
    elif choice == 3:
        value = old + rng.choice((-PAGE_SIZE, PAGE_SIZE, -1, 1, 16, -16, 1 << 20))
    elif choice == 4:
        value = rng.choice((mem_size, mem_size - PAGE_SIZE, mem_size - 8, mem_size + PAGE_SIZE))
    elif choice == 5:
        value = rng.getrandbits(bits)
    elif choice == 6:
        value = old * rng.choice((2, 16, 4096))
    elif choice == 7:
        value = old >> rng.choice((1, 4, 12))
    else:
        value = -old
    return value & mask


def corrupt(rng: random.Random, mem: PhysMem, target: Target) -> str:
    """Apply one mutation to `target`; returns what it did."""
    how = rng.choice(("field", "field", "field", "bytes", "fill"))
    if how == "field" and target.fields:
        f = rng.choice(target.fields)
        fmt = {1: "B", 4: "I", 8: "Q"}[f.size]
        fmt = (">" if f.big_endian else "<") + fmt
        old = struct.unpack(fmt, mem.read(f.addr, f.size))[0]
        new = _interesting(rng, old, f.size * 8, mem.size)
        mem.write(f.addr, struct.pack(fmt, new))
        return f"{target.name} field@{f.addr:#x} {old:#x} -> {new:#x}"
    phys, length = rng.choice(target.spans)
    if how == "fill" or not length:
        value = rng.choice((POISON, 0, 0xFF))
        mem.fill(phys, length, value)
        return f"{target.name} filled with {value:#x}"
    out = []
    for _ in range(rng.randint(1, 8)):
        addr = phys + rng.randrange(length)
        value = rng.randrange(256)
        mem.write(addr, bytes([value]))
        out.append(f"{addr:#x}={value:#x}")
    return f"{target.name} bytes " + " ".join(out)


def _exercise(m: Machine) -> None:
    """What a user does next: read every kernel file, finalize, load and kexec again."""
    k = m.kernel
    assert k is not None
    if k.panic_message is not None:
        return
    k.dmesg()
    k.iomem()
    dirs = [""]
    while dirs:
        top = dirs.pop()
        for name in k.debugfs.listdir(top):
            path = f"{top}/{name}".lstrip("/")
            if k.debugfs.lookup(path).is_dir:
                dirs.append(path)
                continue
            try:
                k.debugfs.read(path)
            except OSError:
                pass
    try:
        k.debugfs.write("kho/out/finalize", b"1\n")
    except OSError:
        pass
    try:
        k.kexec_file_load(make_bzimage(k.info.version), None, k.cmdline, KEXEC_FILE_NO_INITRAMFS)
    except OSError:
        return
    m.kexec()


def run_case(seed: int, version: str) -> tuple[str, str]:
    """(kind, detail) of one hand-over corrupted with the given seed."""
    rng = random.Random(seed)
    m = Machine(mem="1G", nodes=2, cmdline=CMDLINE, kernel_version=version, scrub=True,
                test_kho=True, seed=seed)
    k0 = m.boot()
    patterns = {}
    for name in REGIONS:
        found = k0.reserve_mem.reserve_mem_find_by_name(name)
        assert found is not None, name
        patterns[name] = (found, rng.randbytes(found[1]))
        m.physmem.write(found[0], patterns[name][1])
    k0.debugfs.write("kho/out/finalize", b"1\n")
    k0.kexec_file_load(make_bzimage(version), None, k0.cmdline, KEXEC_FILE_NO_INITRAMFS)
    done: list[str] = []

    def fault(mem: PhysMem, boot_params: int) -> None:
        targets = handover_targets(mem, boot_params, k0.kho.preserve_bits)
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            done.append(corrupt(rng, mem, rng.choice(targets)))

    k1 = m.kexec(fault)
    what = "; ".join(done)
    if k1.panic_message is not None:
        return "stopped", f"{what}: {k1.panic_message}"
    lines = k1.dmesg().splitlines()
    kind = "intact"
    for name in REGIONS:
        (start, size), pattern = patterns[name]
        revived = any(f"Revived memory reservation '{name}' from KHO" in line for line in lines)
        reported = any(f"reserve_mem '{name}'" in line and LOSS_MARK in line for line in lines)
        if not revived:
            kind = "fallback"
        elif reported:
            kind = "fallback"
        elif k1.reserve_mem.reserve_mem_find_by_name(name) != (start, size) \
                or m.physmem.read(start, size) != pattern:
            return "loss", f"{what}: '{name}' revived without its bytes and without a khofs line"
    if not any("test_kho: KHO restore succeeded" in line for line in lines):
        kind = "fallback"
    _exercise(m)
    return kind, what


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--version", choices=("6.16", "6.18"), default="6.16")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds before a case is a hang")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case")
    args = ap.parse_args()
    # A corruption that makes the simulator allocate without bound is a crash, not the host's OOM.
    limit = 4 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))

    def alarm(_sig: int, _frame: object) -> None:
        raise Hang

    signal.signal(signal.SIGALRM, alarm)
    counts: Counter[str] = Counter()
    failures: list[str] = []
    start = time.monotonic()
    for seed in range(args.seed, args.seed + args.cases):
        signal.setitimer(signal.ITIMER_REAL, args.timeout)
        try:
            kind, detail = run_case(seed, args.version)
        except Hang:
            kind, detail = "hang", f"over {args.timeout:g} s"
        except Exception as e:       # noqa: BLE001 - counting these is the point
            kind = "crash"
            detail = f"{type(e).__name__}: {e} at {traceback.extract_tb(e.__traceback__)[-1].line}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        counts[kind] += 1
        if kind in ("crash", "hang", "loss"):
            failures.append(f"{kind} seed={seed}: {detail}")
            print(failures[-1], flush=True)
        elif args.verbose:
            print(f"{kind} seed={seed}: {detail}", flush=True)
    took = time.monotonic() - start
    print(f"fuzz_handover: {args.cases} cases, version {args.version}, seeds {args.seed}.."
          f"{args.seed + args.cases - 1}, {took:.1f} s")
    print("  " + "  ".join(f"{kind} {counts[kind]}" for kind in KINDS))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
