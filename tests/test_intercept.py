"""Real binaries under `khofs run`: seccomp user notification brings their calls to the machine.

Every test runs real processes (our C program, the host's kexec-tools, Python making
raw system calls through ctypes) inside a real `khofs run`.  The point of each is
that the call lands in the simulated machine; that the host's kernel never saw it is
checked where the host shows it (/sys/kernel/kexec_loaded, the test still running).
"""

import glob
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_fs_harness import KHO_CMDLINE, NO_DEV_MEM, REPO

pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64", reason="the supervisor is x86_64-only")
KEXEC = shutil.which("kexec", path="/usr/sbin:/sbin:/usr/bin:/bin")
needs_kexec_tools = pytest.mark.skipif(KEXEC is None, reason="kexec-tools is not installed")

# Raw system calls from Python: a real process, no wrapper that could hide the call.
RAW = textwrap.dedent("""\
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    def call(nr, *args):
        r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
        return 0 if r >= 0 else -ctypes.get_errno()
    KEXEC_FILE_LOAD, KEXEC_LOAD, REBOOT, MOUNT = 320, 246, 169, 165
    MAGIC1, MAGIC2, POWER_OFF, KEXEC = 0xfee1dead, 672274793, 0x4321FEDC, 0x45584543
    """)


def khofs_run(*command: str, options: tuple[str, ...] = (), fuse: str | None = None,
              timeout: int = 120) -> subprocess.CompletedProcess[str]:
    bindir = str(Path(sys.executable).parent)          # where `khofs` is installed
    env = {"PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO),
           "FUSE_LIBRARY_NAME": fuse or os.environ.get("FUSE_LIBRARY_NAME", "fuse3")}
    r = subprocess.run([sys.executable, "-m", "khofs.cli", "run", *options, "--", *command],
                       capture_output=True, text=True, timeout=timeout, env=env, cwd="/")
    r.stderr = r.stderr.replace(NO_DEV_MEM, "")            # the line a host without /dev/mem gets
    return r


def raw(script: str, *options: str) -> subprocess.CompletedProcess[str]:
    return khofs_run(sys.executable, "-c", RAW + textwrap.dedent(script), options=options)


def compile_c(name: str, out_dir: Path) -> Path:
    """tests/c/NAME.c, compiled with the system compiler."""
    out = out_dir / name
    subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", str(out), str(REPO / f"tests/c/{name}.c")],
                   check=True)
    return out


def without_filter(tmp_path: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """CMD as khofs runs it where seccomp is unavailable: no filter, CAP_SYS_BOOT still dropped."""
    return subprocess.run([sys.executable, "-m", "khofs.intercept", "--clone-bin", str(tmp_path),
                           "--no-filter", str(tmp_path), "--", *command], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture(scope="module")
def kho_init(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c("kho_init", tmp_path_factory.mktemp("c"))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("img") / "Image"
    subprocess.run([sys.executable, "-m", "khofs.cli", "mkimage", str(out)], check=True)
    return out


@pytest.mark.parametrize("fuse", ["fuse", "fuse3"])
def test_the_selftest_init_kexecs_with_raw_system_calls(tmp_path: Path, kho_init: Path, image: Path,
                                                        fuse: str) -> None:
    """kho_init mounts debugfs and proc itself, loads with kexec_file_load, reboot(RB_KEXEC).

    Expect: it exits 0 at the reboot, the next kernel revives test_kho's folios, and
    its own mounts show the machine's files (its /proc/cmdline is the machine's).
    """
    (tmp_path / "debugfs").mkdir()
    (tmp_path / "proc").mkdir()
    script = f"{kho_init} {tmp_path} {image}; echo rc=$?; dmesg; cat {tmp_path}/proc/cmdline"
    r = khofs_run("bash", "-c", script, options=("--test-kho", "--cmdline", KHO_CMDLINE), fuse=fuse)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert "rc=0\n" in r.stdout
    assert "] KHO: found kexec handover data. Will skip init for some devices\n" in r.stdout
    assert "] test_kho: KHO restore succeeded\n" in r.stdout
    assert r.stdout.endswith(f"\n{KHO_CMDLINE}\n")
    assert not os.path.ismount(tmp_path / "debugfs")       # the binds lived in CMD's namespace


def test_the_host_is_never_reached(image: Path) -> None:
    """kexec_file_load of the host's kernel image, then reboot(RB_POWER_OFF), inside `khofs run`.

    Expect: the image loads into the machine (its kexec_loaded is 1, the host's is
    unchanged), the power-off stops the machine with the kernel's line and kills CMD
    and its background child before the next line, and this test keeps running.
    """
    host_images = sorted(glob.glob("/boot/vmlinuz*"))
    kernel = host_images[0] if host_images else str(image)  # no /boot here: a real bzImage of ours
    host_sysfs = Path("/sys/kernel/kexec_loaded")              # absent where the host lacks KEXEC_CORE
    host_loaded = host_sysfs.read_text() if host_sysfs.exists() else None
    r = raw(f"""
        import subprocess
        sleeper = subprocess.Popen(["sleep", "300"])
        print(sleeper.pid)
        fd = os.open({kernel!r}, os.O_RDONLY)
        print(call(KEXEC_FILE_LOAD, fd, -1, 0, 0, 4))
        print(open("/sys/kernel/kexec_loaded").read(), end="", flush=True)
        print(call(REBOOT, MAGIC1, MAGIC2, POWER_OFF, 0))
        print("still running")
        """, "--cmdline", "kho=on")
    sleeper, loaded, in_machine = r.stdout.splitlines()
    assert (r.returncode, loaded, in_machine) == (0, "0", "1"), (r.stdout, r.stderr)
    assert r.stderr.startswith("khofs: the machine stopped: [")
    assert r.stderr.endswith("] reboot: Power down\n")
    assert (host_sysfs.read_text() if host_sysfs.exists() else None) == host_loaded
    stat = Path(f"/proc/{sleeper}/stat")
    assert not stat.exists() or stat.read_text().split(") ")[1][0] == "Z"


def test_errors_the_kernel_would_give() -> None:
    """Expect EBADF, EFAULT, EINVAL, ENOSYS, EPERM as Linux 6.16 answers, and the host untouched."""
    r = raw("""
        image = os.open(sys.argv[0] if False else "/proc/self/exe", os.O_RDONLY)
        bad = ctypes.c_char_p(b"x")
        print(call(KEXEC_FILE_LOAD, 987, -1, 0, 0, 4))                 # no such fd
        print(call(KEXEC_FILE_LOAD, os.open("/", os.O_RDONLY), -1, 0, 0, 4))   # a directory
        print(call(KEXEC_FILE_LOAD, image, -1, 0, 0, 4))               # not a bzImage
        print(call(KEXEC_FILE_LOAD, image, -1, 0, 0, 1 << 10))          # unknown flag
        print(call(KEXEC_LOAD, 0, 0, 0, 0))
        print(call(REBOOT, MAGIC1, 1, POWER_OFF, 0))
        print(call(REBOOT, MAGIC1, MAGIC2, KEXEC, 0))                   # nothing loaded
        print(call(MOUNT, 0, 8, 0, 0, 0))                               # a bad pointer
        os.setuid(65534)
        print(call(REBOOT, MAGIC1, MAGIC2, POWER_OFF, 0))
        """)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert r.stdout.split() == ["-9", "-22", "-8", "-22", "-38", "-22", "-22", "-14", "-1"]


def test_bad_cmdline_pointer_and_dying_callers(image: Path) -> None:
    """Expect EFAULT for an unmapped command line; callers SIGKILLed at any point of their call
    leave the supervisor answering the next one."""
    r = raw(f"""
        import random, time
        fd = os.open({str(image)!r}, os.O_RDONLY)
        cmdline = ctypes.cast(ctypes.c_char_p(b"abc"), ctypes.c_void_p).value
        print(call(KEXEC_FILE_LOAD, fd, -1, 10, 8, 4))
        for i in range(20):
            pid = os.fork()
            if pid == 0:
                while True:
                    call(KEXEC_FILE_LOAD, fd, -1, 4, cmdline, 4)
            time.sleep(random.random() / 50)
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        print(call(KEXEC_FILE_LOAD, fd, -1, 4, cmdline, 4))
        """)
    assert (r.returncode, r.stderr, r.stdout.split()) == (0, "", ["-14", "0"]), r.stderr


def test_mounts(tmp_path: Path) -> None:
    """Expect debugfs/sysfs/proc mounts (mount(8) and relative targets too) to show the machine,
    and a tmpfs mount to reach the host's kernel as usual."""
    for d in ("dbg", "sys", "tmp"):
        (tmp_path / d).mkdir()
    script = (f"cd {tmp_path} && mount -t debugfs none dbg && mount -t sysfs sysfs {tmp_path}/sys && "
              "mount -t tmpfs tmpfs tmp && ls dbg && cat sys/kernel/kexec_loaded && "
              "stat -f -c %T tmp && mount -t debugfs none missing; echo rc=$?")
    r = khofs_run("bash", "-c", script, options=("--cmdline", "kho=on"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "kho\nmemblock\n0\ntmpfs\nrc=32\n"
    assert "missing" in r.stderr and "No such file or directory" in r.stderr or "does not exist" in r.stderr


@needs_kexec_tools
def test_real_kexec_tools_match_the_clone(tmp_path: Path, image: Path) -> None:
    """`kexec -s -l Image --initrd=initrd`, `kexec -e` with /usr/sbin/kexec and with the clone.

    Expect: the same statuses, output and next kernel (its log and memblock) both ways.
    """
    initrd = tmp_path / "initrd"
    initrd.write_bytes(os.urandom(3 << 20))
    script = (f"command -v kexec; kexec -s -l {image} --initrd={initrd} --append='kho=on quiet'; "
              "echo $?; cat /sys/kernel/kexec_loaded; kexec -e; echo $?; cat /proc/cmdline; dmesg; "
              "cat /sys/kernel/debug/memblock/reserved")
    runs = {mode: khofs_run("bash", "-c", script, options=("--kexec", mode, "--cmdline", "kho=on"))
            for mode in ("real", "clone")}
    real, clone = runs["real"], runs["clone"]
    assert real.stdout.startswith(f"{KEXEC}\n") and "/khofs-bin-" in clone.stdout.splitlines()[0]
    assert (real.returncode, real.stderr) == (clone.returncode, clone.stderr) == (0, "")
    assert real.stdout.split("\n", 1)[1] == clone.stdout.split("\n", 1)[1]
    assert "0\n1\n0\nkho=on quiet\n" in real.stdout


@needs_kexec_tools
def test_the_seed_workflow_with_the_real_kexec() -> None:
    """scripts/kho-workflow.sh verbatim, scrub on, /usr/sbin/kexec: n1 survives byte for byte,
    and the real `kexec -e`'s ifdown met only a private network namespace."""
    workflow = REPO / "scripts/kho-workflow.sh"
    r = khofs_run("bash", "-c", f"command -v kexec; readlink /proc/self/ns/net; bash {workflow}",
                  options=("--kexec", "real", "--scrub", "--test-kho", "--cmdline", KHO_CMDLINE), timeout=300)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert r.stdout.startswith(f"{KEXEC}\n")
    assert r.stdout.splitlines()[1] != os.readlink("/proc/self/ns/net")
    assert "] Revived memory reservation 'n1' from KHO\n" in r.stdout
    assert "n1 holds the same 64 MiB: the memory survived the kexec\n" in r.stdout
    assert "] test_kho: KHO restore succeeded\n" in r.stdout


def test_a_failed_supervisor_kills_cmd() -> None:
    """The khofs mount vanishes under the supervisor: expect CMD killed, one line, no host call."""
    r = raw("""
        import subprocess
        subprocess.run(["umount", "-l", os.environ["KHOFS_ROOT"]], check=True)
        print("umounted", flush=True)
        print(call(REBOOT, MAGIC1, MAGIC2, POWER_OFF, 0))
        print("still running")
        """)
    assert (r.returncode, r.stdout) == (1, "umounted\n"), (r.stdout, r.stderr)
    assert r.stderr.startswith("khofs: seccomp supervisor failed, CMD killed: ")
    assert r.stderr.count("\n") == 1


def test_a_killed_supervisor_takes_cmd_with_it(tmp_path: Path) -> None:
    """SIGKILL the supervisor: expect CMD killed and its orphan's reboot(2) to fail with ENOSYS."""
    out = tmp_path / "orphan"
    r = raw(f"""
        import time
        if os.fork() == 0:
            os.setsid()
            time.sleep(0.5)                         # until the supervisor is gone
            open({str(out)!r}, "w").write(str(call(REBOOT, MAGIC1, MAGIC2, POWER_OFF, 0)))
            os._exit(0)
        os.kill(os.getppid(), 9)
        time.sleep(30)
        print("still running")
        """)
    assert (r.returncode, r.stdout) == (137, "")
    for _ in range(100):
        if out.exists() and out.read_text():
            break
        subprocess.run(["sleep", "0.1"])
    assert out.read_text() == "-38"


def test_nested_run_falls_back_to_the_clone_with_a_warning() -> None:
    """A listener is already installed (EBUSY): expect the warning and the Python clone."""
    r = khofs_run(sys.executable, "-m", "khofs.cli", "run", "--", "sh", "-c", "command -v kexec")
    assert r.returncode == 0, r.stderr
    assert "/khofs-bin-" in r.stdout
    assert r.stderr.startswith("khofs: warning: seccomp user notification is unavailable "
                               "(seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER): Device or resource busy)")


def test_attach_intercepts_too(tmp_path: Path, kho_init: Path, image: Path) -> None:
    """`khofs attach` to a `khofs mount` daemon: the raw kexec lands in the daemon's machine."""
    mnt, work = tmp_path / "mnt", tmp_path / "work"
    for d in (mnt, work / "debugfs", work / "proc"):
        d.mkdir(parents=True)
    khofs = [sys.executable, "-m", "khofs.cli"]
    r = subprocess.run([*khofs, "mount", str(mnt), "--test-kho", "--cmdline", KHO_CMDLINE],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        r = subprocess.run([*khofs, "attach", str(mnt), "--", str(kho_init), str(work), str(image)],
                           capture_output=True, text=True, timeout=120)
        assert (r.returncode, r.stderr) == (0, NO_DEV_MEM), r.stderr
        assert "] test_kho: KHO restore succeeded\n" in (mnt / "khofs/dmesg").read_text()
    finally:
        subprocess.run([*khofs, "umount", str(mnt)], check=True, timeout=60)


def test_without_interception_cmd_still_loses_cap_sys_boot(tmp_path: Path) -> None:
    """--no-filter (seccomp unavailable): expect no filter and CAP_SYS_BOOT gone from CMD's
    bounding set, so a raw reboot would get EPERM from the host."""
    r = without_filter(tmp_path, "grep", "-E", "^(Seccomp_filters|CapBnd):", "/proc/self/status")
    assert (r.returncode, r.stderr) == (0, "")
    out = r.stdout.split()
    assert (out[0], out[2:]) == ("CapBnd:", ["Seccomp_filters:", "0"])
    assert not int(out[1], 16) >> 22 & 1


def test_i386_and_x32_entries_are_intercepted_too(tmp_path: Path) -> None:
    """int $0x80 and x32 numbers reach reboot/kexec_load too: expect the simulated kernel's answers
    under the filter, and (the contrast) the host's refusals without it."""
    prog = compile_c("compat_syscalls", tmp_path)
    r = khofs_run(str(prog))
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == ("i386 reboot 0\ni386 kexec_load -38\nx32 reboot 0\nx32 kexec_load -38\n"
                        "x86_64 reboot 0\n")
    host = without_filter(tmp_path, str(prog))
    lines = dict(line.rsplit(" ", 1) for line in host.stdout.splitlines())
    # Without CAP_SYS_BOOT the host refuses with EPERM; without x32 support, ENOSYS.
    assert lines["i386 reboot"] == lines["x86_64 reboot"] == "-1"
    assert lines["x32 reboot"] in ("-1", "-38")


def test_kexec_mode_follows_what_is_installed(tmp_path: Path) -> None:
    """No kexec in PATH: expect the clone by default and a one-line error for --kexec real."""
    bindir = str(Path(sys.executable).parent)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    if shutil.which("kexec", path=env["PATH"]):
        pytest.skip("a kexec outside /usr/sbin and /sbin")
    khofs = [sys.executable, "-m", "khofs.cli", "run"]
    r = subprocess.run([*khofs, "--", "sh", "-c", "command -v kexec"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0 and "/khofs-bin-" in r.stdout, r.stderr
    r = subprocess.run([*khofs, "--kexec", "real", "--", "true"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert (r.returncode, r.stderr) == (
        1, "khofs: --kexec=real: kexec-tools is not installed (no kexec in PATH)\n")
