"""Shared harness: a real FUSE mount of a real simulated machine, served from a thread.

Per notes §1.4 the serving thread never touches the mount; tests drive it with real
subprocesses (bash, cat, dtc, dd, kexec).
"""

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from khofs.fs import serve
from sim.machine import Machine

KHO_CMDLINE = "kho=on kho_scratch=16M,512M,256M reserve_mem=64m:4k:n1"
# What `khofs run`/`attach` print where the host has no /dev/mem to bind over (issue 8 item 5).
NO_DEV_MEM = "" if os.path.exists("/dev/mem") else \
    "khofs: this host has no /dev/mem; /dev is read-only inside, use $KHOFS_ROOT/dev/mem\n"
REPO = Path(__file__).resolve().parent.parent


@contextmanager
def mounted(tmp_path: Path, cmdline: str = KHO_CMDLINE, **machine: object) -> Iterator[tuple[Machine, Path]]:
    """Boot a machine, mount it at tmp_path/mnt, unmount afterwards (the mount must still be alive)."""
    m = Machine(mem=machine.pop("mem", "8G"), nodes=machine.pop("nodes", 2), cmdline=cmdline, **machine)
    m.boot()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    errors: list[BaseException] = []

    def server() -> None:
        try:
            serve(m, str(mnt))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not os.path.ismount(mnt):
        assert thread.is_alive() and time.monotonic() < deadline, f"mount failed: {errors}"
        time.sleep(0.01)
    try:
        yield m, mnt
        assert os.path.ismount(mnt), "the mount died"
    finally:
        subprocess.run(["fusermount", "-u", str(mnt)], check=False)
        thread.join(10)
    assert not errors, errors


def host_binds() -> list[str]:
    """The host's mounts at the paths `run`/`attach` bind over (other mounts come and go in parallel)."""
    from khofs.cli import BINDS
    targets = {target for _, target in BINDS}
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4] in targets]


def sh(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a bash script (bash, not dash: kernel-style write errors) and capture everything."""
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def kexec(root: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Our kexec command, as a separate process talking to the mount."""
    return subprocess.run([sys.executable, "-m", "khofs.kexec", *args], capture_output=True, text=True,
                          env={**os.environ, "KHOFS_ROOT": str(root)}, cwd=cwd, timeout=120)
