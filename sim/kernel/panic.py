"""kernel/panic.c: panic() and WARN(): the simulated kernel stops, or logs a warning splat and goes on."""

from sim.kernel.printk import LOGLEVEL_WARNING, Printk

CUT_HERE = "------------[ cut here ]------------"


class KernelPanic(RuntimeError):
    """Raised where Linux would call panic(); str() is the message after 'Kernel panic - not syncing: '."""


def warn(printk: Printk, file_line: str, function: str, text: str = "", pid: int = 1) -> None:
    """WARN(1, text) at file:line in function, during boot (CPU 0; PID 1 in initcalls, 0 in
    setup_arch); no text is WARN_ON().

    The kernel's splat goes on with modules, registers and a call trace, which the
    simulator has none of: one line marked khofs stands for them.
    """
    lines = (CUT_HERE, *([text] if text else []),
             f"WARNING: CPU: 0 PID: {pid} at {file_line} {function}+0x0/0x0",
             "[khofs: registers and call trace not simulated]", "---[ end trace 0000000000000000 ]---")
    for line in lines:
        printk.log(line, LOGLEVEL_WARNING)
