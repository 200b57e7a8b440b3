#!/usr/bin/env python3
"""Chain KHO kexecs on one scrubbing machine and check every preserved byte every generation.

Each generation: random writes land in every reserve_mem region, the kernel finalizes
(sometimes aborts, writes more and finalizes again), loads the next kernel and kexecs.
The new kernel must revive every region at its old address with exactly the bytes the
old one last wrote, print no khofs loss line, and — in every generation that received
one — restore test_kho's folios.  Exit status 1 at the first generation that does not.
"""

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.arch.x86.boot.bzimage import make_bzimage  # noqa: E402
from sim.init.main import Kernel  # noqa: E402
from sim.kernel.kexec_file import KEXEC_FILE_NO_INITRAMFS  # noqa: E402
from sim.machine import Machine  # noqa: E402

REGIONS = {"n1": "1m:4k", "n2": "2m:2m", "n3": "256k:64k"}
CMDLINE = ("kho=on kho_scratch=16M,64M,32M test_kho.max_mem=262144 "
           + " ".join(f"reserve_mem={spec}:{name}" for name, spec in REGIONS.items()))
LOSS = "[khofs: not checked by Linux]"


class SoakFailure(Exception):
    """A generation lost or changed a preserved byte, or said something it should not."""


def _region(k: Kernel, name: str) -> tuple[int, int]:
    found = k.reserve_mem.reserve_mem_find_by_name(name)
    if found is None:
        raise SoakFailure(f"'{name}' is missing from the reserve_mem table")
    return found


def scribble(rng: random.Random, m: Machine, k: Kernel, expected: dict[str, bytearray]) -> int:
    """Random writes into every region, mirrored in `expected`; returns the bytes written."""
    written = 0
    for name, data in expected.items():
        start, size = _region(k, name)
        for _ in range(rng.randint(1, 8)):
            off = rng.randrange(size)
            chunk = rng.randbytes(min(size - off, rng.choice((1, 8, 64, 4096, 65536))))
            m.physmem.write(start + off, chunk)
            data[off:off + len(chunk)] = chunk
            written += len(chunk)
    return written


def finalize(rng: random.Random, m: Machine, k: Kernel, expected: dict[str, bytearray]) -> int:
    """Finalize, sometimes after abort/re-finalize rounds with writes in between; the aborts."""
    aborts = rng.choice((0, 0, 1, 2))
    for _ in range(aborts):
        k.debugfs.write("kho/out/finalize", b"1\n")
        scribble(rng, m, k, expected)
        k.debugfs.write("kho/out/finalize", b"0\n")
        scribble(rng, m, k, expected)
    k.debugfs.write("kho/out/finalize", b"1\n")
    return aborts


def check(m: Machine, k: Kernel, where: dict[str, tuple[int, int]], expected: dict[str, bytearray],
          test_kho_due: bool, aborted: bool) -> tuple[int, bool]:
    """Verify one generation's kernel; (bytes compared, whether a test_kho loss was reported).

    An abort frees the whole preservation tracker (Linux 6.16 kho_abort), so test_kho's
    folios, preserved once at its init, are not handed over after one: their loss must be
    reported (a khofs line or test_kho's failure), and only theirs.
    """
    lines = [line.split("] ", 1)[-1] for line in k.dmesg().splitlines()]
    if k.panic_message is not None:
        raise SoakFailure(f"the kernel panicked: {k.panic_message}")
    bad = [line for line in lines if LOSS in line
           and not (aborted and line.startswith("KHO: restored folio "))]
    if bad:
        raise SoakFailure(bad[0])
    for name, data in expected.items():
        if f"Revived memory reservation '{name}' from KHO" not in lines:
            raise SoakFailure(f"'{name}' was not revived")
        if _region(k, name) != where[name]:
            raise SoakFailure(f"'{name}' moved from {where[name]} to {_region(k, name)}")
        got = m.physmem.read(*where[name])
        if got != data:
            first = next(i for i in range(len(data)) if got[i] != data[i])
            raise SoakFailure(f"'{name}' differs from byte {first:#x} on")
    if test_kho_due and not aborted and "test_kho: KHO restore succeeded" not in lines:
        raise SoakFailure("test_kho did not restore its folios")
    reported = test_kho_due and aborted
    if reported and not any(LOSS in line or "test_kho: KHO restore failed" in line for line in lines):
        raise SoakFailure("test_kho's folios were not handed over and nothing said so")
    return sum(len(d) for d in expected.values()), reported


def soak(generations: int, seed: int, version: str) -> tuple[int, int, int]:
    """Run the chain; (bytes written, bytes verified, reported test_kho losses) or SoakFailure."""
    rng = random.Random(seed)
    m = Machine(mem="1G", nodes=2, cmdline=CMDLINE, kernel_version=version, scrub=True,
                test_kho=True, seed=seed)
    k = m.boot()
    where = {name: _region(k, name) for name in REGIONS}
    expected = {name: bytearray(m.physmem.read(*where[name])) for name in REGIONS}
    image = make_bzimage(version)
    written = verified = reported = 0
    for generation in range(1, generations + 1):
        written += scribble(rng, m, k, expected)
        test_kho_due = k.test_kho is not None and k.test_kho.fdt is not None
        aborted = finalize(rng, m, k, expected) > 0
        k.kexec_file_load(image, None, k.cmdline, KEXEC_FILE_NO_INITRAMFS)
        k = m.kexec()
        try:
            nbytes, told = check(m, k, where, expected, test_kho_due, aborted)
        except SoakFailure as e:
            raise SoakFailure(f"generation {generation}: {e}") from None
        verified += nbytes
        reported += told
    return written, verified, reported


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generations", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--version", choices=("6.16", "6.18"), default="6.16")
    args = ap.parse_args()
    start = time.monotonic()
    try:
        written, verified, reported = soak(args.generations, args.seed, args.version)
    except SoakFailure as e:
        print(f"soak: FAILED at {e} (seed {args.seed}, version {args.version})")
        return 1
    print(f"soak: {args.generations} generations, version {args.version}, seed {args.seed}, "
          f"{time.monotonic() - start:.1f} s: {written} bytes written, {verified} bytes verified, "
          f"0 lost silently; {reported} test_kho hand-overs dropped by an abort, each reported")
    return 0


if __name__ == "__main__":
    sys.exit(main())
