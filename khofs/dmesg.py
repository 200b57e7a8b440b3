"""`dmesg` inside `khofs run|shell|attach`: util-linux 2.38's dmesg, reading the simulated kernel.

It reads `$KHOFS_ROOT/khofs/kmsg` (the records as /dev/kmsg gives them from the last clear,
which is what util-linux reads) and prints them in util-linux's formats: `[    1.234567] text`,
`-x` (`kern  :info  : ...`), `-T` (`[Tue Dec  1 21:16:08 2026] ...`, boot time = now minus
$KHOFS_ROOT/proc/uptime), `-t`, `-r`, `--json`; it filters with `-l/--level`, follows with
`-w/--follow` (across a kexec too: the new kernel's log follows), and clears through the
syslog(2) the control channel serves (`-c`, `-C`).  Option errors are glibc getopt's.
"""

import getopt
import json
import os
import signal
import sys
import time

from khofs.fs import KMSG_PATH, SYSCALL_PATH
from khofs.kexec import DEFAULT_ROOT

LEVELS = ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug")
SYSLOG_ACTION_CLEAR = 5
_FOLLOW_POLL_S = 0.1
_SHORT = "CcJhkl:rTtwWxV"
_LONG = ["clear", "read-clear", "json", "help", "kernel", "level=", "raw", "ctime", "notime", "follow",
         "follow-new", "decode", "version"]
_USAGE = """
Usage:
 dmesg [options]

Display or control the kernel ring buffer (of the simulated machine at $KHOFS_ROOT).

Options:
 -C, --clear                 clear the kernel ring buffer
 -c, --read-clear            read and clear all messages
 -J, --json                  use JSON output format
 -k, --kernel                display kernel messages
 -l, --level <list>          restrict output to defined levels
 -r, --raw                   print the raw message buffer
 -T, --ctime                 show human-readable timestamp (may be inaccurate!)
 -t, --notime                don't show any timestamp with messages
 -w, --follow                wait for new messages
 -W, --follow-new            wait and print only new messages
 -x, --decode                decode facility and level to readable string

 -h, --help                  display this help
 -V, --version               display version

Supported log levels (priorities):
   emerg - system is unusable
   alert - action must be taken immediately
    crit - critical conditions
     err - error conditions
    warn - warning conditions
  notice - normal but significant condition
    info - informational
   debug - debug-level messages
"""


class DmesgError(Exception):
    """`dmesg: ...` on stderr, exit status 1."""


class Record:
    """One /dev/kmsg record: `prefix,seq,usec,flags;text` with \\xNN escapes undone."""

    def __init__(self, line: str) -> None:
        head, _, text = line.partition(";")
        fields = head.split(",")
        prefix, self.seq, self.usec = int(fields[0]), int(fields[1]), int(fields[2])
        self.level, self.facility = prefix & 7, prefix >> 3
        self.text = _unescape(text.encode()).decode("utf-8", "replace")
        self.line = line


def _unescape(raw: bytes) -> bytes:
    out, i = bytearray(), 0
    while i < len(raw):
        if raw[i:i + 2] == b"\\x" and len(raw) >= i + 4:
            out.append(int(raw[i + 2:i + 4], 16))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def _seconds(usec: int) -> str:
    """util-linux's `%5lu.%06lu` timestamp."""
    return f"{usec // 1_000_000:5d}.{usec % 1_000_000:06d}"


def _parse_levels(arg: str, levels: set[int]) -> None:
    for word in arg.split(","):
        if word in LEVELS:
            levels.add(LEVELS.index(word))
        elif word.isdigit() and int(word) < len(LEVELS):
            levels.add(int(word))
        else:
            raise DmesgError(f"unknown level '{word}'")


def _getopt_message(e: getopt.GetoptError, argv: list[str]) -> str:
    """glibc's wording for what Python's getopt reports."""
    opt = e.opt
    if len(opt) > 1 or any(a.startswith("--" + opt) for a in argv):
        long = "--" + opt
        if "requires argument" in e.msg:
            return f"option '{long}' requires an argument"
        if "must not have an argument" in e.msg:
            return f"option '{long}' doesn't allow an argument"
        return f"unrecognized option '{long}'"
    if "requires argument" in e.msg:
        return f"option requires an argument -- '{opt}'"
    return f"invalid option -- '{opt}'"


class Dmesg:
    def __init__(self, root: str, opts: dict[str, object]) -> None:
        self.root = root
        self.opts = opts
        self.boot_time: float | None = None

    def read(self) -> list[Record]:
        path = self.root + KMSG_PATH
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            raise DmesgError(f"cannot read the kernel log at {path}: {e.strerror} "
                             "(khofs: is KHOFS_ROOT set?)") from None
        return [Record(line) for line in text.splitlines()]

    def clear(self) -> None:
        """syslog(SYSLOG_ACTION_CLEAR), through the control channel."""
        request = json.dumps({"call": "syslog", "type": SYSLOG_ACTION_CLEAR}).encode() + b"\n"
        try:
            fd = os.open(self.root + SYSCALL_PATH, os.O_RDWR)
            try:
                os.write(fd, request)
                reply = os.read(fd, 64)
            finally:
                os.close(fd)
        except OSError as e:
            raise DmesgError(f"klogctl failed: {e.strerror}") from None
        if reply.strip() != b"0":
            code = -int(reply)
            raise DmesgError(f"klogctl failed: {os.strerror(code)}")

    def wanted(self, r: Record) -> bool:
        levels = self.opts["levels"]
        return not levels or r.level in levels           # type: ignore[operator]

    def _ctime(self, usec: int) -> str:
        if self.boot_time is None:
            try:
                with open(self.root + "/proc/uptime") as f:
                    uptime = float(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                uptime = 0.0
            self.boot_time = time.time() - uptime
        return time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(self.boot_time + usec / 1e6))

    def format(self, r: Record) -> str:
        if self.opts["raw"]:
            return f"<{r.facility << 3 | r.level}>[{_seconds(r.usec)}] {r.text}\n"
        prefix = f"{'kern':<6}:{LEVELS[r.level]:<6}: " if self.opts["decode"] else ""
        if self.opts["notime"]:
            stamp = ""
        elif self.opts["ctime"]:
            stamp = f"[{self._ctime(r.usec)}] "
        else:
            stamp = f"[{_seconds(r.usec)}] "
        return f"{prefix}{stamp}{r.text}\n"

    def _json_entry(self, r: Record) -> str:
        fields = []
        if self.opts["decode"]:
            fields += ['"fac": "kern"', f'"pri": "{LEVELS[r.level]}"']
        else:
            fields.append(f'"pri": {r.facility << 3 | r.level}')
        fields.append(f'"time": {_seconds(r.usec)}')
        fields.append(f'"msg": {json.dumps(r.text, ensure_ascii=False)}')
        return "{\n" + ",\n".join("         " + f for f in fields) + "\n      }"

    def print_all(self, records: list[Record]) -> None:
        shown = [r for r in records if self.wanted(r)]
        if self.opts["json"]:
            body = "      " + ",".join(self._json_entry(r) for r in shown) + "\n" if shown else ""
            sys.stdout.write('{\n   "dmesg": [\n' + body + "   ]\n}\n")
        else:
            sys.stdout.write("".join(self.format(r) for r in shown))
        sys.stdout.flush()

    def follow(self, records: list[Record]) -> None:
        """Print what is logged from now on; a kexec starts a new log, printed from its start."""
        last = records[-1] if records else None
        while True:
            time.sleep(_FOLLOW_POLL_S)
            records = self.read()
            if last is not None:
                at = next((i for i, r in enumerate(records) if r.seq == last.seq), None)
                if at is not None and records[at].line == last.line:
                    new = records[at + 1:]
                elif records and records[-1].seq > last.seq and records[0].seq > last.seq:
                    new = records                           # cleared past what we printed
                else:
                    new, self.boot_time = records, None     # another kernel: its whole log
            else:
                new = records
            if new:
                sys.stdout.write("".join(self.format(r) for r in new if self.wanted(r)))
                sys.stdout.flush()
                last = new[-1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    opts: dict[str, object] = {"levels": set(), "raw": False, "decode": False, "ctime": False,
                               "notime": False, "json": False}
    action = "print"
    try:
        parsed, operands = getopt.gnu_getopt(argv, _SHORT, _LONG)
        if operands:
            raise DmesgError("bad usage")
        for opt, arg in parsed:
            if opt in ("-h", "--help"):
                sys.stdout.write(_USAGE)
                return 0
            if opt in ("-V", "--version"):
                sys.stdout.write("dmesg from util-linux 2.38.1 (khofs)\n")
                return 0
            if opt in ("-l", "--level"):
                try:
                    _parse_levels(arg, opts["levels"])  # type: ignore[arg-type]
                except DmesgError as e:
                    sys.stderr.write(f"dmesg: {e}\n")
                    return 1
            elif opt in ("-C", "--clear"):
                action = "clear"
            elif opt in ("-c", "--read-clear"):
                action = "read-clear"
            elif opt in ("-w", "--follow"):
                action = "follow"
            elif opt in ("-W", "--follow-new"):
                action = "follow-new"
            else:
                key = {"-r": "raw", "--raw": "raw", "-x": "decode", "--decode": "decode", "-T": "ctime",
                       "--ctime": "ctime", "-t": "notime", "--notime": "notime", "-J": "json",
                       "--json": "json"}.get(opt)
                if key:
                    opts[key] = True
    except getopt.GetoptError as e:
        sys.stderr.write(f"dmesg: {_getopt_message(e, argv)}\nTry 'dmesg --help' for more information.\n")
        return 1
    except DmesgError as e:
        sys.stderr.write(f"dmesg: {e}\nTry 'dmesg --help' for more information.\n")
        return 1
    dmesg = Dmesg(os.environ.get("KHOFS_ROOT", DEFAULT_ROOT), opts)
    try:
        if action == "clear":
            dmesg.clear()
            return 0
        records = dmesg.read()
        if action != "follow-new":
            dmesg.print_all(records)
        if action == "read-clear":
            dmesg.clear()
        elif action in ("follow", "follow-new"):
            dmesg.follow(records)
    except DmesgError as e:
        sys.stderr.write(f"dmesg: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
