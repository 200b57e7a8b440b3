#!/usr/bin/env python3
"""Benchmark: what seccomp interception costs on a kexec_file_load round trip.

The same call (a bzImage of ours, 6.5 KiB; with no initrd, then with a 64 MiB one), N
times each way, inside `khofs run`:
  sim        Kernel.kexec_file_load in this process (no FUSE, no interception)
  channel    a Python process writing the request to $KHOFS_ROOT/khofs/syscall (what the
             kexec clone does; FUSE, no interception)
  seccomp    tests/c/kho_init.c's raw syscall(SYS_kexec_file_load) (seccomp notification,
             pidfd_getfd and a read of the caller's files, then the same control channel)
Prints milliseconds per call; asserts nothing.  Usage: python3 scripts/bench_intercept.py [N]
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sim.arch.x86.boot.bzimage import make_bzimage
from sim.machine import Machine

REPO = Path(__file__).resolve().parent.parent
CHANNEL = """
import json, os, sys, time
image = open(sys.argv[1], "rb").read()
initrd = open(sys.argv[3], "rb").read() if len(sys.argv) > 3 else None
request = json.dumps({"call": "kexec_file_load", "flags": 0 if initrd else 4, "kernel_len": len(image),
                      "initrd_len": initrd and len(initrd), "cmdline_len": 0}).encode()
request += b"\\n" + image + (initrd or b"")
n = int(sys.argv[2])
t0 = time.perf_counter_ns()
for _ in range(n):
    fd = os.open(os.environ["KHOFS_ROOT"] + "/khofs/syscall", os.O_RDWR)
    view = memoryview(request)
    while view:
        view = view[os.write(fd, view[:1 << 20]):]
    assert os.read(fd, 64) == b"0\\n"
    os.close(fd)
print((time.perf_counter_ns() - t0) // n)
"""


def khofs_run(*command: str) -> int:
    r = subprocess.run([sys.executable, "-m", "khofs.cli", "run", "--cmdline", "kho=on", "--", *command],
                       capture_output=True, text=True, check=True)
    return int(r.stdout)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    with tempfile.TemporaryDirectory() as tmp:
        image, initrd = os.path.join(tmp, "Image"), os.path.join(tmp, "initrd")
        data = make_bzimage("6.16")
        Path(image).write_bytes(data)
        Path(initrd).write_bytes(os.urandom(64 << 20))
        prog = os.path.join(tmp, "kho_init")
        subprocess.run(["cc", "-O2", "-o", prog, str(REPO / "tests/c/kho_init.c")], check=True)
        print(f"kexec_file_load, {n} calls each way (ms per call)")
        print("| initrd | sim | channel | seccomp | interception overhead (seccomp - channel) |")
        print("|---|---:|---:|---:|---:|")
        for extra in ([], [initrd]):
            k = Machine(mem="8G", nodes=2, cmdline="kho=on").boot()
            rd = Path(initrd).read_bytes() if extra else None
            t0 = time.perf_counter_ns()
            for _ in range(n):
                k.kexec_file_load(data, rd, b"", 0 if extra else 4)
            sim = (time.perf_counter_ns() - t0) // n
            channel = khofs_run(sys.executable, "-c", CHANNEL, image, str(n), *extra)
            seccomp = khofs_run(prog, "bench", str(n), image, *extra)
            print(f"| {'64 MiB' if extra else 'none'} | {sim / 1e6:.2f} | {channel / 1e6:.2f} | "
                  f"{seccomp / 1e6:.2f} | {(seccomp - channel) / 1e6:.2f} |")


if __name__ == "__main__":
    main()
