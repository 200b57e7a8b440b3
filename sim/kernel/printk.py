"""kernel/printk/printk.c: the kernel log buffer and the simulated clock its timestamps come from."""

from dataclasses import dataclass, field

# Console log levels (include/linux/kern_levels.h).
LOGLEVEL_EMERG, LOGLEVEL_ALERT, LOGLEVEL_CRIT, LOGLEVEL_ERR = 0, 1, 2, 3
LOGLEVEL_WARNING, LOGLEVEL_NOTICE, LOGLEVEL_INFO, LOGLEVEL_DEBUG = 4, 5, 6, 7
# syslog(2) actions (include/linux/syslog.h) the simulator serves.
SYSLOG_ACTION_CLEAR = 5


@dataclass
class LogRecord:
    ts_nsec: int
    level: int
    text: str
    pr_debug: bool = False      # from pr_debug(), which a distribution kernel compiles out


@dataclass
class Printk:
    """One boot's log.  The clock starts at 0 and only moves when the kernel advances it,
    so two runs of the same boot print the same timestamps."""

    records: list[LogRecord] = field(default_factory=list)
    clock_ns: int = 0
    # pr_debug() is compiled out in a distribution kernel: kept, but not shown by dmesg().
    # printk(KERN_DEBUG ...) is not: it is logged at debug level and shown.
    show_debug: bool = False
    # The first record syslog(2) readers see: SYSLOG_ACTION_CLEAR moves it past the end.
    clear_seq: int = 0

    def advance(self, ns: int) -> None:
        self.clock_ns += ns

    def log(self, text: str, level: int = LOGLEVEL_INFO, pr_debug: bool = False) -> None:
        for line in text.rstrip("\n").split("\n"):
            self.records.append(LogRecord(self.clock_ns, level, line, pr_debug))

    def pr_err(self, text: str) -> None:
        self.log(text, LOGLEVEL_ERR)

    def pr_warn(self, text: str) -> None:
        self.log(text, LOGLEVEL_WARNING)

    def pr_info(self, text: str) -> None:
        self.log(text, LOGLEVEL_INFO)

    def pr_debug(self, text: str) -> None:
        self.log(text, LOGLEVEL_DEBUG, pr_debug=True)

    def syslog_clear(self) -> None:
        """SYSLOG_ACTION_CLEAR (`dmesg -C`): readers start after what is logged now."""
        self.clear_seq = len(self.records)

    def devkmsg(self) -> str:
        """/dev/kmsg as a reader sees it after lseek(SEEK_DATA), i.e. from clear_seq: one
        `level,seq,usec,-;text` line per record, bytes outside ' '..'~' and '\\' as \\xNN."""
        out = []
        for seq in range(self.clear_seq, len(self.records)):
            r = self.records[seq]
            if r.pr_debug and not self.show_debug:
                continue
            text = "".join(c if " " <= c < "\x7f" and c != "\\" else
                           "".join(f"\\x{b:02x}" for b in c.encode("utf-8", "surrogateescape"))
                           for c in r.text)
            out.append(f"{r.level},{seq},{r.ts_nsec // 1000},-;{text}\n")
        return "".join(out)

    def dmesg(self) -> str:
        """The log as `dmesg` prints it: `[    5.123456] text` lines."""
        out = []
        for r in self.records:
            if r.pr_debug and not self.show_debug:
                continue
            sec, nsec = divmod(r.ts_nsec, 1_000_000_000)
            out.append(f"[{sec:5d}.{nsec // 1000:06d}] {r.text}\n")
        return "".join(out)
