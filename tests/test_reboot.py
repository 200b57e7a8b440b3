"""kernel/reboot.c on the simulated machine, and kernel_read_file_from_fd() on host fds.

What the seccomp supervisor forwards from real programs lands here; each check calls
sim directly.
"""

import errno
import os
from pathlib import Path

import pytest

from sim.arch.x86.boot.bzimage import make_bzimage
from sim.kernel.kexec_file import KEXEC_FILE_NO_INITRAMFS, kernel_read_file_from_fd
from sim.kernel.reboot import (
    LINUX_REBOOT_CMD_CAD_ON,
    LINUX_REBOOT_CMD_HALT,
    LINUX_REBOOT_CMD_KEXEC,
    LINUX_REBOOT_CMD_POWER_OFF,
    LINUX_REBOOT_CMD_RESTART,
    LINUX_REBOOT_CMD_RESTART2,
    LINUX_REBOOT_CMD_SW_SUSPEND,
    LINUX_REBOOT_MAGIC1,
    LINUX_REBOOT_MAGIC2,
    LINUX_REBOOT_MAGIC2C,
    sys_reboot,
)
from sim.machine import Machine

MAGICS = (LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2)


def booted() -> Machine:
    m = Machine(mem="1G", nodes=1, cmdline="kho=on")
    m.boot()
    return m


def errno_of(m: Machine, *args: object) -> int:
    with pytest.raises(OSError) as e:
        sys_reboot(m, *args)  # type: ignore[arg-type]
    return e.value.errno


def test_bad_magic_and_unknown_commands_are_einval() -> None:
    """Expect EINVAL for a wrong magic (checked as 32-bit ints), SW_SUSPEND (no hibernation) and junk."""
    m = booted()
    kernel = m.kernel
    assert errno_of(m, 0xfee1deae, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_POWER_OFF, None) == errno.EINVAL
    assert errno_of(m, LINUX_REBOOT_MAGIC1, 1, LINUX_REBOOT_CMD_POWER_OFF, None) == errno.EINVAL
    assert errno_of(m, *MAGICS, LINUX_REBOOT_CMD_SW_SUSPEND, None) == errno.EINVAL
    assert errno_of(m, *MAGICS, 0x12345678, None) == errno.EINVAL
    sys_reboot(m, LINUX_REBOOT_MAGIC1 - (1 << 32), LINUX_REBOOT_MAGIC2C, LINUX_REBOOT_CMD_CAD_ON, None)
    assert (m.kernel, m.halted) == (kernel, False)


def test_power_off_and_halt_stop_the_machine_with_the_kernels_line() -> None:
    for cmd, line in ((LINUX_REBOOT_CMD_POWER_OFF, "reboot: Power down"),
                      (LINUX_REBOOT_CMD_HALT, "reboot: System halted")):
        m = booted()
        sys_reboot(m, *MAGICS, cmd, None)
        assert m.halted
        assert m.kernel.dmesg().splitlines()[-1].endswith(f"] {line}")
        with pytest.raises(RuntimeError):
            sys_reboot(m, *MAGICS, LINUX_REBOOT_CMD_RESTART, None)


def test_restart_is_a_cold_boot_of_the_same_machine() -> None:
    """Expect the restart line in the old kernel's log and a new kernel booted like the first."""
    m = booted()
    first = m.kernel
    first_log = first.dmesg()
    sys_reboot(m, *MAGICS, LINUX_REBOOT_CMD_RESTART2, b"rescue\0junk")
    assert first.dmesg().splitlines()[-1].endswith("] reboot: Restarting system with command 'rescue'")
    assert m.kernel is not first and m.kernel.dmesg() == first_log and m.generation == 0
    assert errno_of(m, *MAGICS, LINUX_REBOOT_CMD_RESTART2, -errno.EFAULT) == errno.EFAULT
    second = m.kernel
    sys_reboot(m, *MAGICS, LINUX_REBOOT_CMD_RESTART, None)
    assert second.dmesg().splitlines()[-1].endswith("] reboot: Restarting system")


def test_kexec_needs_a_loaded_image() -> None:
    m = booted()
    assert errno_of(m, *MAGICS, LINUX_REBOOT_CMD_KEXEC, None) == errno.EINVAL
    m.kernel.kexec_file_load(make_bzimage("6.16"), None, "kho=on", KEXEC_FILE_NO_INITRAMFS)
    sys_reboot(m, *MAGICS, LINUX_REBOOT_CMD_KEXEC, None)
    assert m.generation == 1


def test_copy_failures_fail_where_linux_copies() -> None:
    """Expect a bad kernel fd before the probe, a bad cmdline pointer only after it."""
    k = booted().kernel
    image = make_bzimage("6.16")
    for kernel, cmdline, err in ((-errno.EBADF, -errno.EFAULT, errno.EBADF),
                                 (b"not a bzImage", -errno.EFAULT, errno.ENOEXEC),
                                 (image, -errno.EFAULT, errno.EFAULT),
                                 (image, -errno.ENOMEM, errno.ENOMEM)):
        with pytest.raises(OSError) as e:
            k.kexec_file_load(kernel, None, cmdline, KEXEC_FILE_NO_INITRAMFS)
        assert e.value.errno == err
    with pytest.raises(OSError) as e:
        k.kexec_file_load(image, -errno.EINVAL, b"", 0)
    assert e.value.errno == errno.EINVAL
    k.kexec_file_load(-errno.EBADF, -errno.EBADF, -errno.EFAULT, 1)      # KEXEC_FILE_UNLOAD reads nothing


def test_kernel_read_file_from_fd(tmp_path: Path) -> None:
    """Expect the kernel's answers for each kind of fd the caller may pass."""
    f = tmp_path / "Image"
    f.write_bytes(b"x" * 5000)
    (tmp_path / "empty").write_bytes(b"")
    cases = ((os.O_RDONLY, f, b"x" * 5000), (os.O_RDWR, f, b"x" * 5000),
             (os.O_WRONLY, f, -errno.EBADF), (os.O_PATH, f, -errno.EBADF),
             (os.O_RDONLY, tmp_path, -errno.EINVAL), (os.O_RDONLY, tmp_path / "empty", -errno.EINVAL))
    for flags, path, expect in cases:
        fd = os.open(path, flags)
        try:
            assert kernel_read_file_from_fd(fd) == expect, (flags, path)
        finally:
            os.close(fd)
    assert kernel_read_file_from_fd(987654) == -errno.EBADF
    r, w = os.pipe()
    try:
        assert kernel_read_file_from_fd(r) == -errno.EINVAL
    finally:
        os.close(r)
        os.close(w)
