"""kernel/reboot.c: the reboot(2) system call, acting on the simulated machine.

Checked against Linux 6.16.  The caller is the simulated kernel's root (CAP_SYS_BOOT
is granted by whoever forwards the call, as for kexec_file_load).  The kernel is
built with CONFIG_KEXEC_CORE=y and CONFIG_HIBERNATION=n, and q35 can power off.
"""

import errno
import os
from typing import TYPE_CHECKING

from sim.kernel.printk import LOGLEVEL_EMERG

if TYPE_CHECKING:
    from sim.machine import Machine

# include/uapi/linux/reboot.h
LINUX_REBOOT_MAGIC1 = 0xfee1dead
LINUX_REBOOT_MAGIC2, LINUX_REBOOT_MAGIC2A = 672274793, 85072278
LINUX_REBOOT_MAGIC2B, LINUX_REBOOT_MAGIC2C = 369367448, 537993216
LINUX_REBOOT_CMD_RESTART = 0x01234567
LINUX_REBOOT_CMD_HALT = 0xCDEF0123
LINUX_REBOOT_CMD_CAD_ON = 0x89ABCDEF
LINUX_REBOOT_CMD_CAD_OFF = 0x00000000
LINUX_REBOOT_CMD_POWER_OFF = 0x4321FEDC
LINUX_REBOOT_CMD_RESTART2 = 0xA1B2C3D4
LINUX_REBOOT_CMD_SW_SUSPEND = 0xD000FCE2
LINUX_REBOOT_CMD_KEXEC = 0x45584543

_MAGIC2 = (LINUX_REBOOT_MAGIC2, LINUX_REBOOT_MAGIC2A, LINUX_REBOOT_MAGIC2B, LINUX_REBOOT_MAGIC2C)
# The commands after which the calling program never runs again on this kernel.
REBOOT_CMDS_NO_RETURN = (LINUX_REBOOT_CMD_RESTART, LINUX_REBOOT_CMD_RESTART2, LINUX_REBOOT_CMD_KEXEC,
                         LINUX_REBOOT_CMD_HALT, LINUX_REBOOT_CMD_POWER_OFF)
# Commands that leave the machine stopped rather than running a kernel.
REBOOT_CMDS_STOP = (LINUX_REBOOT_CMD_HALT, LINUX_REBOOT_CMD_POWER_OFF)


def _u32(value: int) -> int:
    return value & 0xFFFFFFFF


def sys_reboot(machine: "Machine", magic1: int, magic2: int, cmd: int, arg: bytes | int | None) -> None:
    """SYSCALL reboot: raise OSError(errno) where the syscall returns -errno.

    `arg` is what strncpy_from_user() made of the RESTART2 argument: its bytes (up to
    the NUL, at most 255), or a negative errno when the pointer was bad.  Other
    commands ignore it.  A successful restart cold-boots the same machine; halt and
    power-off leave it stopped (`machine.halted`), its last kernel's log intact.
    """
    if _u32(magic1) != LINUX_REBOOT_MAGIC1 or _u32(magic2) not in _MAGIC2:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    cmd = _u32(cmd)
    kernel = machine.kernel
    if kernel is None or machine.halted:
        raise RuntimeError("reboot(2) on a machine that is not running")
    # kernel_can_power_off(): q35 has ACPI S5, so no fallback to halt.
    if cmd in (LINUX_REBOOT_CMD_CAD_ON, LINUX_REBOOT_CMD_CAD_OFF):
        return                          # C_A_D: nothing in the simulator sends ctrl-alt-del
    if cmd == LINUX_REBOOT_CMD_KEXEC:
        machine.kexec()                 # kernel_kexec(): -EINVAL when nothing is loaded
        return
    if cmd in (LINUX_REBOOT_CMD_RESTART, LINUX_REBOOT_CMD_RESTART2):
        if cmd == LINUX_REBOOT_CMD_RESTART2:
            if isinstance(arg, int) or arg is None:
                raise OSError(errno.EFAULT, os.strerror(errno.EFAULT))
            command = arg.split(b"\0", 1)[0][:255].decode("utf-8", "surrogateescape")
            kernel.printk.log(f"reboot: Restarting system with command '{command}'", LOGLEVEL_EMERG)
        else:
            kernel.printk.log("reboot: Restarting system", LOGLEVEL_EMERG)
        machine.boot()                  # machine_restart(): the firmware boots the same box again
        return
    if cmd == LINUX_REBOOT_CMD_HALT:
        kernel.printk.log("reboot: System halted", LOGLEVEL_EMERG)
    elif cmd == LINUX_REBOOT_CMD_POWER_OFF:
        kernel.printk.log("reboot: Power down", LOGLEVEL_EMERG)
    else:                               # SW_SUSPEND included: CONFIG_HIBERNATION=n
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    machine.halted = True
