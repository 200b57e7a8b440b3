"""Our `kexec` against a mounted machine: messages and exit statuses of kexec-tools 2.0.25.

The expected strings were taken from Debian 12's kexec-tools 2.0.25 binary, run with
its system calls failed by strace fault injection.
"""

from pathlib import Path

import pytest
from test_fs_harness import kexec, mounted, sh

from khofs.kexec_usage import USAGE
from sim.arch.x86.boot.bzimage import make_bzimage

HELP = "kexec-tools 2.0.25\n" + USAGE


@pytest.fixture
def box(tmp_path: Path):  # noqa: ANN201 - (machine, mount, image dir)
    (tmp_path / "Image").write_bytes(make_bzimage())
    (tmp_path / "passwd").write_text("root:x:0:0::/root:/bin/bash\n")
    (tmp_path / "empty").write_bytes(b"")
    with mounted(tmp_path) as (m, mnt):
        yield m, mnt, tmp_path


@pytest.mark.parametrize(("args", "status", "stdout", "stderr"), [
    (["--foo"], 1, HELP, "kexec: unrecognized option '--foo'\n"),
    (["-Z"], 1, HELP, "kexec: invalid option -- 'Z'\n"),
    (["--initrd"], 1, HELP, "kexec: option '--initrd' requires an argument\n"),
    (["-t"], 1, HELP, "kexec: option requires an argument -- 't'\n"),
    (["--load=x"], 1, HELP, "kexec: option '--load' doesn't allow an argument\n"),
    (["--re"], 1, HELP, "kexec: option '--re' is ambiguous; possibilities: '--reuseinitrd' '--reset-vga'"
     " '--reuse-video-type' '--reuse-cmdline' '--real-mode'\n"),
    (["-h"], 0, HELP, ""),
    (["-v", "-Z"], 0, "kexec-tools 2.0.25\n", ""),
    (["-l"], 255, HELP, "No kernel specified\n"),
    (["-s", "-l"], 255, HELP, "No kernel specified\n"),
    (["-s", "-l", "/nonexistent"], 255, "", "Failed to open file /nonexistent:No such file or directory\n"),
    (["-l", "/nonexistent"], 1, "", "Cannot open `/nonexistent': No such file or directory\n"),
    (["-s", "-l", "passwd"], 255, "", "Cannot determine the file type of passwd\n"),
    (["-l", "passwd"], 255, "", "Cannot determine the file type of passwd\n"),
    (["-s", "-l", "/etc"], 1, "", "Read on /etc failed: Is a directory\nCannot read /etc"),
    (["-s", "-l", "empty"], 1, "", "Cannot read empty"),
    (["-e", "--append=x"], 1, HELP, ""),
    (["--mem-min=0x1g", "-l", "x"], 1, HELP, "Bad option value in --mem-min=0x1g\n"),
    (["-p", "-s", "Image"], 1, "", "Memory for crashkernel is not reserved\nPlease reserve memory by passing"
     "\"crashkernel=Y@X\" parameter to kernel\nThen try to loading kdump kernel\n"),
    (["-s", "-l", "Image", "--initrd=/nonexistent"], 255, "",
     "Could not open initrd file /nonexistent:No such file or directory\nCannot load Image\n"),
    (["-s", "-l", "Image", "--real-mode"], 255, "",
     "Kexec2 syscall does not support 16bit or 32bit entry yet\nCannot load Image\n"),
    (["-t", "foo", "-l", "Image"], 255, "", "Unsupported kernel type foo\n"),
    (["-u"], 255, "", "kexec unload failed: Function not implemented\n"),
    (["-l", "Image"], 255, "", "kexec_load failed: Function not implemented\n"),
    (["--print-ckr-size"], 0, "0\n", ""),
    (["-S"], 0, "", ""),
    (["-e"], 1, "", "Nothing has been loaded!\n"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_messages_and_exit_statuses(box, args: list[str], status: int, stdout: str, stderr: str) -> None:
    _, mnt, images = box
    r = kexec(mnt, *args, cwd=images)
    assert (r.returncode, r.stdout, r.stderr) == (status, stdout, stderr)


def test_kernel_rejection_is_syscall_not_available_253(box) -> None:
    """-s with ENOEXEC from the kernel: kexec-tools' misleading EFALLBACK message."""
    m, mnt, images = box
    r = kexec(mnt, "-s", "-l", "Image", "--append=" + "x" * 5000, cwd=images)
    assert (r.returncode, r.stderr) == (253, "syscall kexec_file_load not available.\n")
    assert not m.kernel.kexec_loaded


def test_load_status_unload_exec(box) -> None:
    m, mnt, images = box
    r = kexec(mnt, "-l", "-s", "Image", "--reuse-cmdline", "--append=extra", cwd=images)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert m.kernel.kexec_loaded and (mnt / "sys/kernel/kexec_loaded").read_text() == "1\n"
    assert kexec(mnt, "-S", "-l").returncode == 1
    assert kexec(mnt, "-S").returncode == 0             # the crash kernel: not loaded
    r = kexec(mnt, "-s", "-u")
    assert (r.returncode, r.stderr) == (0, "") and not m.kernel.kexec_loaded
    assert kexec(mnt, "-s", "-l", "Image", cwd=images).returncode == 0
    old = m.kernel
    r = kexec(mnt, "-e")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert m.kernel is not old
    assert sh(f"cat {mnt}/proc/cmdline").stdout == "\n"   # we passed no command line this time
