"""The mount behaves like debugfs/sysfs/procfs to real programs (bash, cat, dtc, fdtdump, dd)."""

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_fs_harness import REPO, mounted, sh

D = "sys/kernel/debug"


def test_finalize_and_abort_errors_as_bash_prints_them(tmp_path: Path) -> None:
    with mounted(tmp_path) as (m, mnt):
        out = f"{mnt}/{D}/kho/out"
        first = sh(f"echo 1 > {out}/finalize && [ -e {out}/fdt ] && cat {out}/finalize")
        assert (first.returncode, first.stdout, first.stderr) == (0, "1\n", "")
        again = sh(f"echo 1 > {out}/finalize")
        assert again.returncode == 1
        assert again.stderr == "bash: line 1: echo: write error: File exists\n"
        abort = sh(f"echo 0 > {out}/finalize && [ ! -e {out}/fdt ] && ls {out}/sub_fdts | wc -l")
        assert (abort.returncode, abort.stdout) == (0, "0\n")
        twice = sh(f"echo 0 > {out}/finalize")
        assert twice.stderr == "bash: line 1: echo: write error: No such file or directory\n"
        garbage = sh(f"echo yes > {out}/finalize")
        assert garbage.stderr == "bash: line 1: echo: write error: Invalid argument\n"
        assert m.kernel.debugfs.read("kho/out/finalize") == b"0\n"


def test_fdt_blob_bytes_reach_dtc_fdtdump_and_wc(tmp_path: Path) -> None:
    with mounted(tmp_path) as (m, mnt):
        out = mnt / D / "kho/out"
        assert sh(f"echo 1 > {out}/finalize").returncode == 0
        blob = m.kernel.debugfs.read("kho/out/fdt")
        assert (out / "fdt").read_bytes() == blob
        assert os.stat(out / "fdt").st_size == 0
        assert sh(f"wc -c < {out}/fdt").stdout == f"{len(blob)}\n"
        dts = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", str(out / "fdt")],
                             capture_output=True, text=True)
        assert dts.returncode == 0 and 'compatible = "kho-v1";' in dts.stdout
        sub = subprocess.run(["dtc", str(out / "sub_fdts/memblock")], capture_output=True, text=True)
        assert sub.returncode == 0 and "reserve-mem-v1" in sub.stdout
        dump = subprocess.run(["fdtdump", str(out / "fdt")], capture_output=True, text=True)
        assert dump.returncode == 0 and "kho-v1" in dump.stdout


def test_open_blob_returns_eio_after_abort_removes_it(tmp_path: Path) -> None:
    """debugfs: an fd on a removed file reads -EIO; a new open sees ENOENT."""
    with mounted(tmp_path) as (_, mnt):
        out = mnt / D / "kho/out"
        (out / "finalize").write_text("1\n")
        fd = os.open(out / "fdt", os.O_RDONLY)
        try:
            (out / "finalize").write_text("0\n")
            with pytest.raises(OSError) as e:
                os.read(fd, 4096)
            assert e.value.errno == errno.EIO
        finally:
            os.close(fd)
        with pytest.raises(FileNotFoundError):
            (out / "fdt").read_bytes()


def test_modes_and_sizes_match_the_kernel(tmp_path: Path) -> None:
    with mounted(tmp_path) as (m, mnt):
        listing = sh(f"cd {mnt} && stat -c '%A %s %U %n' {D} {D}/kho/out/finalize {D}/kho/out/scratch_phys"
                     " sys/kernel/kexec_loaded proc/cmdline")
        assert listing.stdout.splitlines() == [
            f"drwx------ 0 root {D}", f"-rw------- 0 root {D}/kho/out/finalize",
            f"-r-------- 0 root {D}/kho/out/scratch_phys", "-r--r--r-- 0 root sys/kernel/kexec_loaded",
            "-r--r--r-- 0 root proc/cmdline"]
        assert sorted(os.listdir(mnt / D)) == sorted(m.kernel.debugfs.listdir(""))
        assert (mnt / "sys/kernel/kexec_loaded").read_text() == "0\n"
        assert (mnt / "sys/kernel/kexec_crash_loaded").read_text() == "0\n"
        assert (mnt / "proc/cmdline").read_text() == m.kernel.cmdline + "\n"
        assert (mnt / "proc/iomem").read_text() == m.kernel.iomem()
        scratch = m.kernel.debugfs.read("kho/out/scratch_phys")
        assert (mnt / D / "kho/out/scratch_phys").read_bytes() == scratch


def test_what_kernel_file_systems_refuse(tmp_path: Path) -> None:
    with mounted(tmp_path) as (_, mnt):
        kho = f"{mnt}/{D}/kho"
        r = sh(f"echo 1 > {mnt}/sys/kernel/kexec_loaded")
        assert r.stderr == f"bash: line 1: {mnt}/sys/kernel/kexec_loaded: Permission denied\n"
        r = sh(f"echo 1 > {kho}/out/scratch_phys")
        assert r.stderr == "bash: line 1: echo: write error: Invalid argument\n"
        r = sh(f"echo x > {mnt}/proc/cmdline")
        assert r.stderr == "bash: line 1: echo: write error: Input/output error\n"
        r = sh(f"echo x > {kho}/newfile")
        assert r.stderr == f"bash: line 1: {kho}/newfile: Permission denied\n"
        assert "Operation not permitted" in sh(f"mkdir {kho}/d").stderr
        assert "Operation not permitted" in sh(f"rm -f {kho}/out/finalize").stderr
        assert sh(f"touch {kho}/out/finalize").returncode == 0


def test_garbage_never_kills_the_mount(tmp_path: Path) -> None:
    with mounted(tmp_path) as (_, mnt):
        fin = f"{mnt}/{D}/kho/out/finalize"
        r = sh(f"head -c 10M /dev/urandom > {fin}")
        assert r.returncode == 1 and r.stderr.endswith("Invalid argument\n")
        assert sh(f"cat {fin}").stdout == "0\n"
        channel = mnt / "khofs/syscall"
        for request in (b"", b"garbage", b"{}\n", b"[1]\n", b'{"call": "nope"}\n',
                        b'{"call": "kexec_file_load", "kernel_len": 5}\nabc',
                        b'{"call": "kexec_file_load", "kernel_len": -1}\n',
                        b'{"call": "reboot", "cmd": "restart"}\n', b"\xff" * 300_000):
            fd = os.open(channel, os.O_RDWR)
            try:
                os.write(fd, request)
                reply = os.read(fd, 64)
            finally:
                os.close(fd)
            assert reply in (b"-22\n", b"-38\n"), (request[:40], reply)
        assert sh(f"cat {fin}").stdout == "0\n"


def test_dev_mem_is_physical_memory(tmp_path: Path) -> None:
    with mounted(tmp_path) as (m, mnt):
        mem = mnt / "dev/mem"
        addr = 0x1_0000_0000
        r = sh(f"printf 'KHOFS!' | dd of={mem} bs=1 seek={addr} conv=notrunc status=none")
        assert r.returncode == 0, r.stderr
        assert m.physmem.read(addr, 6) == b"KHOFS!"
        back = sh(f"dd if={mem} bs=1 skip={addr} count=6 status=none")
        assert back.stdout == "KHOFS!"
        past = sh(f"dd if={mem} bs=4096 skip={m.physmem.size // 4096} count=1 status=none")
        assert past.returncode == 1 and "Bad address" in past.stderr


def test_dmesg_file_is_the_kernel_log(tmp_path: Path) -> None:
    with mounted(tmp_path) as (m, mnt):
        assert (mnt / "khofs/dmesg").read_text() == m.kernel.dmesg()


@pytest.mark.parametrize("library", ["fuse", "fuse3"])
def test_daemon_on_libfuse2_and_libfuse3(tmp_path: Path, library: str) -> None:
    """`khofs mount` as a daemon on each libfuse; `echo 1 >` needs truncate on libfuse2."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**os.environ, "FUSE_LIBRARY_NAME": library, "PYTHONPATH": str(REPO)}
    khofs = [sys.executable, "-m", "khofs.cli"]
    up = subprocess.run([*khofs, "mount", str(mnt), "--cmdline", "kho=on"], env=env,
                        capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    try:
        out = f"{mnt}/{D}/kho/out"
        r = sh(f"echo 1 > {out}/finalize && [ -e {out}/fdt ] && "
               f"echo 0 > {out}/finalize && [ ! -e {out}/fdt ]")
        assert (r.returncode, r.stderr) == (0, "")
    finally:
        down = subprocess.run([*khofs, "umount", str(mnt)], env=env, capture_output=True, text=True)
    assert down.returncode == 0 and not os.path.ismount(mnt)


def test_umount_cleans_up_after_a_killed_daemon(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    khofs = [sys.executable, "-m", "khofs.cli"]
    assert subprocess.run([*khofs, "mount", str(mnt)], timeout=60).returncode == 0
    daemon = [pid for pid in os.listdir("/proc") if pid.isdigit() and pid != str(os.getpid())
              and str(mnt).encode() in _cmdline(pid)]
    assert len(daemon) == 1
    os.kill(int(daemon[0]), 9)
    # Until the killed server is gone, the kernel may answer ECONNABORTED instead of ENOTCONN.
    while _alive(daemon[0]):
        time.sleep(0.01)
    # ENOTCONN once the kernel has noticed the dead daemon; ECONNABORTED while it aborts the
    # connection (seen under load right after the SIGKILL).
    assert sh(f"ls {mnt}").stderr.endswith(("Transport endpoint is not connected\n",
                                            "Software caused connection abort\n"))
    assert subprocess.run([*khofs, "umount", str(mnt)]).returncode == 0
    assert not os.path.ismount(mnt)


def _alive(pid: str) -> bool:
    """Running, not exited (a zombie waiting for its reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:                     # the process has gone meanwhile
        return b""
