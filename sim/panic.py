"""panic() and WARN(): the simulated kernel stops, or logs a warning splat and goes on."""

from sim.printk import LOGLEVEL_WARNING, Printk

CUT_HERE = "------------[ cut here ]------------"


class KernelPanic(RuntimeError):
    """Raised where Linux would call panic(); str() is the message after 'Kernel panic - not syncing: '."""


def warn(printk: Printk, file_line: str, function: str, text: str) -> None:
    """WARN(1, text) at file:line in function, during boot (CPU 0, PID 1).

    The kernel's splat goes on with modules, registers and a call trace, which the
    simulator has none of: one line marked khofs stands for them.
    """
    for line in (CUT_HERE, text, f"WARNING: CPU: 0 PID: 1 at {file_line} {function}+0x0/0x0",
                 "[khofs: registers and call trace not simulated]", "---[ end trace 0000000000000000 ]---"):
        printk.log(line, LOGLEVEL_WARNING)
