"""The host stays out of reach and the interface holds under bad use (issue 8 items 4-6):
`khofs run` drops CAP_SYS_BOOT and shadows the host's kexec and /dev/mem, `khofs mount` serves
every user with Linux's permissions, refuses a busy mount point, and `run` survives signals."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_fs_harness import mounted, sh

KHOFS = [sys.executable, "-m", "khofs.cli"]
CAP_SYS_BOOT = 22
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def run(script: str, *options: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KHOFS, "run", "--mem", "1G", *options, "--", "sh", "-c", script],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("mode", ["real", "clone"])
def test_run_cannot_reach_the_hosts_kexec_or_reboot(mode: str) -> None:
    """Either mode: no CAP_SYS_BOOT in CMD's bounding set.  Clone mode: the host's kexec-tools
    paths are the clone (real mode runs them under the seccomp supervisor instead)."""
    if mode == "real" and not shutil.which("kexec"):
        mode = "clone"                                      # what `run` itself falls back to
    r = run("grep CapBnd /proc/self/status; for k in /sbin/kexec /usr/sbin/kexec; do "
            "[ -e $k ] && head -c 9 $k && echo; done; command -v kexec", "--kexec", mode)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    bounding = int(lines[0].split()[1], 16)
    assert not bounding & 1 << CAP_SYS_BOOT and bounding & 1 << (CAP_SYS_BOOT - 1)
    host_kexecs = [p for p in ("/sbin/kexec", "/usr/sbin/kexec") if os.path.exists(p)]
    first = "#!/bin/sh" if mode == "clone" else "\x7fELF\x02\x01\x01\x00\x00"
    assert lines[1:-1] == [first] * len(host_kexecs)
    assert ("/khofs-bin-" in lines[-1]) == (mode == "clone")


def test_dev_mem_writes_never_land_on_the_host() -> None:
    r = run("echo x > /dev/mem; echo status=$?")
    if os.path.exists("/dev/mem"):
        assert "status=0" in r.stdout                    # bound over: it went to the machine
    else:
        assert r.stderr.splitlines() == [
            "khofs: this host has no /dev/mem; /dev is read-only inside, use $KHOFS_ROOT/dev/mem",
            "sh: 1: cannot create /dev/mem: Read-only file system"]
        assert "status=2" in r.stdout and not os.path.exists("/dev/mem")


@pytest.fixture
def public_mount() -> Iterator[Path]:
    """A `khofs mount` in a directory every user may traverse (pytest's tmp_path is 0700)."""
    top = Path(tempfile.mkdtemp(prefix="khofs-test-"))
    top.chmod(0o755)
    mnt = top / "mnt"
    mnt.mkdir()
    assert subprocess.run([*KHOFS, "mount", str(mnt), "--mem", "1G", "--cmdline", "kho=on"],
                          timeout=60).returncode == 0
    try:
        yield mnt
    finally:
        subprocess.run([*KHOFS, "umount", str(mnt)], timeout=60)
        mnt.rmdir()
        top.rmdir()


def test_nobody_reads_what_linux_lets_everyone_read(public_mount: Path) -> None:
    mnt = public_mount
    r = subprocess.run([*NOBODY, "sh", "-c", f"cat {mnt}/proc/cmdline {mnt}/sys/kernel/kexec_loaded "
                        f"{mnt}/sys/kernel/kexec_crash_loaded; head -c 9 {mnt}/proc/iomem"],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "kho=on\n0\n0\n00000000-", "")
    for path in ("sys/kernel/debug", "sys/kernel/debug/kho/out/finalize", "dev/mem", "khofs/syscall"):
        r = subprocess.run([*NOBODY, "cat", f"{mnt}/{path}"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and r.stderr.endswith(": Permission denied\n"), (path, r.stderr)
    r = subprocess.run(["cat", f"{mnt}/sys/kernel/debug/kho/out/finalize"], capture_output=True, text=True)
    assert r.stdout == "0\n"                                              # root still may


def test_mount_on_a_busy_mount_point_fails_with_the_reason(public_mount: Path) -> None:
    r = subprocess.run([*KHOFS, "mount", str(public_mount)], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (
        1, f"khofs: cannot mount {public_mount}: already a mount point (khofs umount it first)\n")
    assert (public_mount / "proc" / "cmdline").read_text() == "kho=on\n"   # the first one still serves


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_reach_cmd_and_the_machine_outlives_it(tmp_path: Path, sig: signal.Signals) -> None:
    ready = tmp_path / "ready"
    script = (f"trap 'cat /proc/cmdline; exit 9' {sig.name[3:]}; touch {ready}; "
              "while :; do sleep 0.1; done")
    p = subprocess.Popen([*KHOFS, "run", "--mem", "1G", "--cmdline", "quiet", "--", "sh", "-c", script],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not ready.exists():
        assert p.poll() is None, p.communicate()
        time.sleep(0.05)
    p.send_signal(sig)
    out, _err = p.communicate(timeout=60)
    assert (p.returncode, out) == (9, "quiet\n")        # CMD read the machine while handling it


def test_a_killed_run_leaves_nothing_the_next_run_keeps(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    p = subprocess.Popen([*KHOFS, "run", "--mem", "1G", "--", "sh", "-c", f"touch {ready}; exec sleep 60"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not ready.exists():
        assert p.poll() is None
        time.sleep(0.05)
    left = sorted(Path(tempfile.gettempdir()).glob(f"khofs-*-{p.pid}-*"))
    assert [d.name.split("-")[1] for d in left] == ["bin", "root"]
    sleeper = subprocess.run(["pgrep", "-P", str(p.pid), "sleep"], capture_output=True, text=True)
    p.kill()
    p.wait()
    for pid in sleeper.stdout.split():                  # CMD, orphaned by the SIGKILL
        os.kill(int(pid), signal.SIGKILL)
    assert all(d.exists() for d in left)
    assert run("true").returncode == 0
    assert not any(d.exists() for d in left)


def _syscall(channel: Path, *writes: bytes) -> tuple[bytes, list[int]]:
    """One control-channel call made of several writes: the reply and what each write returned."""
    fd = os.open(channel, os.O_RDWR)
    try:
        done = [os.write(fd, chunk) for chunk in writes]
        return os.read(fd, 64), done
    finally:
        os.close(fd)


def test_control_channel_refuses_bad_requests_without_buffering(tmp_path: Path) -> None:
    """Lengths are checked from the request line, before any payload is kept: a kernel beyond
    KEXEC_FILE_SIZE_MAX is EFBIG, one beyond RAM ENOMEM; bad lines are EINVAL."""
    with mounted(tmp_path, mem="1G") as (m, mnt):
        channel = mnt / "khofs/syscall"
        big = b"\0" * (1 << 20)
        for length, errno_ in ((5 << 30, 27), (2 << 30, 12)):          # EFBIG, ENOMEM
            line = json.dumps({"call": "kexec_file_load", "flags": 4, "cmdline": "", "kernel_len": length})
            reply, done = _syscall(channel, line.encode() + b"\n", big, big)
            assert (reply, done) == (b"-%d\n" % errno_, [len(line) + 1, len(big), len(big)])
        assert not m.kernel.kexec_loaded
        bad = (b'{"call": "kexec_file_load", "kernel_len": 1.5}',
               b'{"call": "kexec_file_load", "kernel_len": true}',
               b'{"call": "kexec_file_load", "cmdline": "\\ud800", "kernel_len": 1}',
               b"[" * 100_000 + b"]" * 100_000,                  # no recursion to exhaust
               b'{"call": "reboot"' + b" " * (64 << 10) + b"}")  # a line past the 64 KiB cap
        for line in bad:
            assert _syscall(channel, line + b"\nX")[0] == b"-22\n", line[:60]
        with pytest.raises(OSError) as e:
            os.close(os.open(channel, os.O_WRONLY))       # a reply nobody can read: refused
        assert e.value.errno == 22


def test_chmod_and_chown_work_as_on_debugfs(tmp_path: Path) -> None:
    with mounted(tmp_path, mem="1G", cmdline="kho=on") as (_m, mnt):
        fin = mnt / "sys/kernel/debug/kho/out/finalize"
        r = sh(f"chmod 0640 {fin} && chown 65534:65534 {fin} && stat -c '%a %u %g' {fin}; "
               f"chmod 0444 {mnt}/proc/cmdline && stat -c %a {mnt}/proc/cmdline")
        assert (r.returncode, r.stdout, r.stderr) == (0, "640 65534 65534\n444\n", "")
