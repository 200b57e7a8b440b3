"""`kexec`: a kexec-tools 2.0.25 (x86_64 and arm64) clone whose system calls go to the simulated kernel.

The user-space logic of kexec-tools' kexec/kexec.c, kexec/arch/x86_64 and
kexec/arch/arm64 is reproduced, for the architecture the machine reports in
$KHOFS_ROOT/proc/sys/kernel/arch (kexec-tools is built for one; the clone is the
build that matches the machine): option parsing (glibc getopt_long, messages included), the order of
checks, every message and exit status (EFAILED -1 -> 255, EFALLBACK -3 -> 253,
die() -> 1).  2.0.25 is what Debian 12 ships; its messages were checked against
that binary.  Only the system calls differ: kexec_file_load(2), kexec_load(2) and
reboot(2) are requests on the control channel `$KHOFS_ROOT/khofs/syscall`, and
the kernel files kexec reads (/sys/kernel/kexec_loaded, /proc/cmdline,
/proc/iomem) are read under $KHOFS_ROOT.

Not reproduced, by design: the user-space kexec_load loader (it needs the
firmware memory map of the machine it runs on, which would be the host's), so
after `kexec_load failed: ...` the segment dump is omitted; ifdown() (the
simulated machine has no network interfaces); `-d` debug output; and running
/sbin/shutdown (which would be the host's), so a plain `kexec IMAGE` reports
`shutdown: No such file or directory` after loading.
"""

import errno
import json
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

from khofs.kexec_usage import ARM64_USAGE, USAGE
from sim.kernel.reboot import LINUX_REBOOT_CMD_KEXEC, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2
from sim.lib.fdt import fdt_check_header

PACKAGE_STRING = "kexec-tools 2.0.25"
PROG = "kexec"                      # argv[0] as typed from PATH, used in getopt messages
DEFAULT_ROOT = "/run/khofs"

# kexec/kexec.h
EFAILED, ENOCRASHKERNEL, EFALLBACK = -1, -2, -3
# include/uapi/linux/kexec.h
KEXEC_ON_CRASH, KEXEC_PRESERVE_CONTEXT, KEXEC_LIVE_UPDATE = 0x1, 0x2, 0x4
KEXEC_FILE_UNLOAD, KEXEC_FILE_ON_CRASH, KEXEC_FILE_NO_INITRAMFS = 0x1, 0x2, 0x4
ULONG_MAX = (1 << 64) - 1

# x86_64 file types in kexec-tools' probe order; only bzImage64 is recognised here.
FILE_TYPES = ("multiboot2-x86", "elf-x86_64", "multiboot-x86", "elf-x86", "bzImage64",
              "bzImage", "beoboot-x86", "nbi-x86")


@dataclass(frozen=True)
class LongOpt:
    name: str
    has_arg: bool
    val: str                        # the option's identity (kexec-tools' OPT_* value)
    arch: bool = False              # >= OPT_ARCH_MAX: only meaningful when loading


def _table() -> tuple[LongOpt, ...]:
    """KEXEC_ALL_OPTIONS for x86_64, in table order (glibc lists ambiguities in this order).

    The first 25 are KEXEC_OPTIONS, the core every architecture shares."""
    main = [("help", 0, "h"), ("version", 0, "v"), ("force", 0, "f"), ("exec", 0, "e"),
            ("exec-live-update", 0, "exec-live-update"), ("load", 0, "l"),
            ("load-preserve-context", 0, "load-preserve-context"),
            ("load-jump-back-helper", 0, "load-jump-back-helper"),
            ("load-live-update", 0, "load-live-update"), ("entry", 1, "entry"), ("load-panic", 0, "p"),
            ("unload", 0, "u"), ("type", 1, "t"), ("mem-min", 1, "mem-min"), ("mem-max", 1, "mem-max"),
            ("reuseinitrd", 0, "reuseinitrd"), ("no-checks", 0, "i"), ("no-ifdown", 0, "x"),
            ("no-sync", 0, "y"), ("kexec-file-syscall", 0, "s"), ("kexec-syscall", 0, "c"),
            ("kexec-syscall-auto", 0, "a"), ("debug", 0, "d"), ("status", 0, "S"),
            ("print-ckr-size", 0, "print-ckr-size"),
            ("reset-vga", 0, "reset-vga"), ("serial", 1, "serial"), ("serial-baud", 1, "serial-baud"),
            ("console-vga", 0, "console-vga"), ("console-serial", 0, "console-serial"),
            ("elf32-core-headers", 0, "elf32-core-headers"), ("elf64-core-headers", 0, "elf64-core-headers"),
            ("pass-memmap-cmdline", 0, "pass-memmap-cmdline"), ("noefi", 0, "noefi"),
            ("reuse-video-type", 0, "reuse-video-type")]
    loader = [("command-line", 1, "append"), ("append", 1, "append"), ("reuse-cmdline", 0, "reuse-cmdline"),
              ("initrd", 1, "ramdisk"), ("ramdisk", 1, "ramdisk"), ("args-elf", 0, "args-elf"),
              ("args-linux", 0, "args-linux"), ("args-none", 0, "args-none"), ("module", 1, "module"),
              ("real-mode", 0, "real-mode"), ("entry-32bit", 0, "entry-32bit")]
    return (*(LongOpt(n, bool(a), v) for n, a, v in main),
            *(LongOpt(n, bool(a), v, arch=True) for n, a, v in loader))


LONG_OPTIONS = _table()
SHORT_OPTIONS = "h?vdfixyluet:pscaS"     # KEXEC_OPT_STR; neither x86_64 nor arm64 adds any
KEXEC_OPTIONS = LONG_OPTIONS[:25]
# kexec/arch/arm64/include/arch/options.h: all below OPT_ARCH_MAX, so none is "bogus" without -l.
ARM64_LONG_OPTIONS = (*KEXEC_OPTIONS, *(LongOpt(n, bool(a), v) for n, a, v in (
    ("append", 1, "append"), ("command-line", 1, "append"), ("dtb", 1, "dtb"), ("initrd", 1, "ramdisk"),
    ("ramdisk", 1, "ramdisk"), ("reuse-cmdline", 0, "reuse-cmdline"))))
# kexec/arch/arm64/kexec-arm64.c file_type[], in probe order.
ARM64_FILE_TYPES = ("vmlinux", "Image", "uImage", "zImage")
ARM64_IMAGE_MAGIC = b"ARM\x64"


@dataclass(frozen=True)
class KexecArch:
    """What one kexec-tools build knows: its options, file types (probe order) and --help text."""

    uname: str                              # /proc/sys/kernel/arch
    long_options: tuple[LongOpt, ...]
    file_types: tuple[str, ...]
    image_type: str                         # the one type the simulated kernels boot
    usage: str

    @property
    def arch_vals(self) -> set[str]:
        return {o.val for o in self.long_options if o.arch}

    def probe(self, buf: bytes) -> bool:
        """The user-space probe of image_type (every other type's probe fails on our images)."""
        return (bzImage64_probe(buf) if self.image_type == "bzImage64" else image_arm64_probe(buf)) == 0


X86_64 = KexecArch("x86_64", LONG_OPTIONS, FILE_TYPES, "bzImage64", USAGE)
ARM64 = KexecArch("aarch64", ARM64_LONG_OPTIONS, ARM64_FILE_TYPES, "Image", ARM64_USAGE)
KEXEC_ARCHES = {a.uname: a for a in (X86_64, ARM64)}


def _err(text: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(text)
    sys.stderr.flush()


def die(text: str) -> SystemExit:
    """kexec-tools' die(): the message, then exit(1); raise what this returns."""
    _err(text)
    return SystemExit(1)


def getopt_long(argv: list[str], operands: list[str],
                long_options: tuple[LongOpt, ...] = LONG_OPTIONS) -> Iterator[tuple[str, str | None]]:
    """glibc getopt_long with argument permutation, lazily: an error prints glibc's message
    when its turn comes and yields ('?', None); non-options are appended to `operands`."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            operands.extend(argv[i:])
            break
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            exact = [o for o in long_options if o.name == name]
            found = exact or [o for o in long_options if o.name.startswith(name)]
            if not found:
                _err(f"{PROG}: unrecognized option '--{name}'\n")
                yield "?", None
                continue
            first = found[0]
            if not exact and any((o.has_arg, o.val) != (first.has_arg, first.val) for o in found[1:]):
                names = "".join(f" '--{o.name}'" for o in found)
                _err(f"{PROG}: option '--{name}' is ambiguous; possibilities:{names}\n")
                yield "?", None
                continue
            if eq and not first.has_arg:
                _err(f"{PROG}: option '--{first.name}' doesn't allow an argument\n")
                yield "?", None
                continue
            if first.has_arg and not eq:
                if i >= len(argv):
                    _err(f"{PROG}: option '--{first.name}' requires an argument\n")
                    yield "?", None
                    continue
                value = argv[i]
                i += 1
            yield first.val, (value if first.has_arg else None)
            continue
        if arg.startswith("-") and arg != "-":
            j = 1
            while j < len(arg):
                c = arg[j]
                j += 1
                pos = SHORT_OPTIONS.find(c)
                if pos < 0 or c == ":":
                    _err(f"{PROG}: invalid option -- '{c}'\n")
                    yield "?", None
                    continue
                if SHORT_OPTIONS[pos + 1:pos + 2] == ":":
                    if j < len(arg):
                        yield c, arg[j:]
                    elif i < len(argv):
                        i += 1
                        yield c, argv[i - 1]
                    else:
                        _err(f"{PROG}: option requires an argument -- '{c}'\n")
                        yield "?", None
                    break
                yield c, None
            continue
        operands.append(arg)


def strtoul(text: str) -> tuple[int, str]:
    """C strtoul(text, &end, 0): the value and what is left at *end."""
    s = text.lstrip(" \t\n\v\f\r")
    neg = s[:1] == "-"
    if s[:1] in "+-" and s:
        s = s[1:]
    base = 10
    if s[:2].lower() == "0x" and s[2:3] and s[2:3] in "0123456789abcdefABCDEF":
        base, s = 16, s[2:]
    elif s[:1] == "0":
        base = 8
    digits = "0123456789abcdef"[:base]
    n = 0
    while n < len(s) and s[n].lower() in digits:
        n += 1
    if n == 0:
        return 0, text if base != 8 else s
    value = min(int(s[:n], base), ULONG_MAX)
    return ((-value) & ULONG_MAX) if neg else value, s[n:]


@dataclass
class Kexec:
    """One invocation: the state kexec-tools keeps in globals and main()'s locals."""

    root: str
    arch: KexecArch = X86_64
    kexec_flags: int = 0
    kexec_file_flags: int = 0
    opts: list[tuple[str, str | None]] = field(default_factory=list)

    # -- files of the running (simulated) kernel --

    def _path(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def kexec_loaded(self, path: str) -> int:
        """kexec_loaded(): strtol of the first two characters, -1 when unreadable."""
        try:
            with open(self._path(path), "rb") as f:
                line = f.read(2)
        except OSError:
            return -1
        text = line.split(b"\n", 1)[0].decode("latin-1").lstrip()
        sign = -1 if text[:1] == "-" else 1
        digits = text[1:] if text[:1] in "+-" else text
        n = len(digits) - len(digits.lstrip("0123456789"))
        return sign * int(digits[:n]) if n else -1

    def get_command_line(self) -> str:
        try:
            with open(self._path("/proc/cmdline"), "rb") as f:
                raw = f.read()
        except OSError:
            raw = b""
        if not raw:
            raise die("Failed to read /proc/cmdline\n")
        line = raw[:-1].decode("utf-8", "surrogateescape")
        for stop in ("\r", "\n"):
            line = line.split(stop, 1)[0]
        line = remove_parameter(line, "BOOT_IMAGE")
        if self.kexec_flags & KEXEC_ON_CRASH:
            line = remove_parameter(line, "crashkernel")
        return line

    def crash_kernel_range(self) -> tuple[int, int] | None:
        """parse_iomem_single("Crash kernel\\n"): the reserved range, if /proc/iomem has one."""
        try:
            with open(self._path("/proc/iomem")) as f:
                lines = f.read().splitlines()
        except OSError:
            return None
        for line in lines:
            span, _, name = line.partition(" : ")
            if name == "Crash kernel":
                start, _, end = span.strip().partition("-")
                return int(start, 16), int(end, 16)
        return None

    def is_crashkernel_mem_reserved(self) -> bool:
        span = self.crash_kernel_range()
        return span is not None and span[0] != span[1]

    # -- system calls --

    def syscall(self, header: dict[str, object], payload: bytes = b"") -> int:
        """One request on the control channel; 0 or the errno the kernel returned."""
        path = self._path("/khofs/syscall")
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as e:
            raise die(f"{PROG}: cannot reach the simulated kernel at {path}: {e.strerror}"
                      " (is KHOFS_ROOT set?)\n") from None
        try:
            data = json.dumps(header).encode() + b"\n" + payload
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            reply = b""
            while chunk := os.read(fd, 64):
                reply += chunk
        finally:
            os.close(fd)
        return -int(reply)

    def kexec_file_load(self, kernel: bytes, initrd: bytes | None, cmdline: str, flags: int) -> int:
        header = {"call": "kexec_file_load", "flags": flags, "cmdline": cmdline, "kernel_len": len(kernel),
                  "initrd_len": None if initrd is None else len(initrd)}
        return self.syscall(header, kernel + (initrd or b""))

    # -- kexec.c --

    def slurp_file(self, filename: str, open_failure: str) -> bytes:
        """slurp_file_generic(): the whole file, as fstat sizes it; die() on failure."""
        try:
            fd = os.open(filename, os.O_RDONLY)
        except OSError as e:
            raise die(open_failure % (filename, e.strerror)) from None
        try:
            st = os.fstat(fd)
            size = st.st_size
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                size = os.lseek(fd, 0, os.SEEK_END)
                os.lseek(fd, 0, os.SEEK_SET)
            buf = b""
            if size:
                try:
                    while len(buf) < size and (chunk := os.read(fd, size - len(buf))):
                        buf += chunk
                except OSError as e:
                    _err(f"Read on {filename} failed: {e.strerror}\n")
                    raise die(f"Cannot read {filename}") from None
        finally:
            os.close(fd)
        if not size:                    # xmalloc(0) is NULL
            raise die(f"Cannot read {filename}")
        if len(buf) != size:
            raise die(f"Read on {filename} ended before stat said it should\n")
        return buf

    def do_kexec_file_load(self, operands: list[str], flags: int) -> int:
        if not operands:
            _err("No kernel specified\n")
            usage(self.arch)
            return EFAILED
        kernel = operands[0]
        try:
            os.close(os.open(kernel, os.O_RDONLY))
        except OSError as e:
            _err(f"Failed to open file {kernel}:{e.strerror}\n")
            return EFAILED
        kernel_buf = self.slurp_file(kernel, "Cannot open `%s': %s\n")
        if not self.arch.probe(kernel_buf):
            _err(f"Cannot determine the file type of {kernel}\n")
            return EFAILED
        loaded = self.load_file()
        if loaded is None:
            _err(f"Cannot load {kernel}\n")
            return EFAILED
        command_line, initrd = loaded
        if initrd is None:
            flags |= KEXEC_FILE_NO_INITRAMFS
        err = self.kexec_file_load(kernel_buf, initrd, command_line, flags)
        if err in (errno.ENOSYS, errno.EINVAL, errno.ENOEXEC, errno.ENOTSUP):
            return EFALLBACK
        if err:
            _err(f"kexec_file_load failed: {os.strerror(err)}\n")
            return EFAILED
        return 0

    def load_file(self) -> tuple[str, bytes | None] | None:
        """bzImage64's or image_arm64's loader in file mode: command line and initrd, nothing else
        (arm64's --dtb is for kexec_load only: the kernel builds the next DT itself)."""
        reuse: str | None = None
        append: str | None = None
        ramdisk: str | None = None
        other_entry = False
        for val, arg in self.opts:
            if val == "append":
                append = arg
            elif val == "reuse-cmdline":
                reuse = self.get_command_line()
            elif val == "ramdisk":
                ramdisk = arg
            elif val in ("real-mode", "entry-32bit"):
                other_entry = True
        command_line = concat_cmdline(reuse, append) or ""
        if other_entry:                 # x86_64's --real-mode / --entry-32bit
            _err("Kexec2 syscall does not support 16bit or 32bit entry yet\n")
            return None
        initrd = None
        if ramdisk is not None:
            try:
                with open(ramdisk, "rb") as f:
                    initrd = f.read()
            except OSError as e:
                _err(f"Could not open initrd file {ramdisk}:{e.strerror}\n")
                return None
        return command_line, initrd

    def my_load(self, type_: str | None, operands: list[str]) -> int:
        """The kexec_load(2) path: user space builds the segments, so the file must be a known type."""
        if not operands:
            _err("No kernel specified\n")
            usage(self.arch)
            return -1
        kernel = operands[0]
        kernel_buf = self.slurp_file(kernel, "Cannot open `%s': %s\n")
        matches = self.arch.probe(kernel_buf)
        image_type = self.arch.image_type
        if type_ is not None:
            if type_ not in self.arch.file_types:
                _err(f"Unsupported kernel type {type_}\n")
                return -1
            if type_ != image_type and matches:
                _err(f"Wrong file type {type_}, file matches type {image_type}\n")
                return -1
        if not matches:
            _err(f"Cannot determine the file type of {kernel}\n")
            return -1
        if self.arch is ARM64 and not self.arm64_dtb_ok():
            _err("kexec: load failed.\n")
            _err(f"Cannot load {kernel}\n")
            return -1
        err = self.syscall({"call": "kexec_load", "flags": self.kexec_flags})
        if err:
            _err(f"kexec_load failed: {os.strerror(err)}\n")
            return -1
        return 0

    def arm64_dtb_ok(self) -> bool:
        """arm64_load_other_segments(): the DT for the next kernel (--dtb FILE, else the running
        kernel's /sys/firmware/fdt) must read and pass fdt_check_header (setup_2nd_dtb)."""
        dtb = next((arg for val, arg in reversed(self.opts) if val == "dtb"), None)
        if dtb is None:
            try:
                with open(self._path("/sys/firmware/fdt"), "rb") as f:
                    buf = f.read()
            except OSError:
                _err("kexec: Error: No device tree available.\n")
                return False
        else:
            buf = self.slurp_file(dtb, "Unable to open %s: %s\n")
        if fdt_check_header(buf):
            _err("kexec: Invalid 2nd device tree.\n")
            return False
        return True

    def kexec_file_unload(self) -> int:
        err = self.kexec_file_load(b"", None, "", self.kexec_file_flags)
        if err == errno.ENOSYS:
            return EFALLBACK
        if err:
            _err(f"kexec_file_load(unload) failed: {os.strerror(err)}\n")
            return EFAILED
        return 0

    def k_unload(self) -> int:
        err = self.syscall({"call": "kexec_load", "flags": self.kexec_flags, "unload": True})
        if err:
            _err(f"kexec unload failed: {os.strerror(err)}\n")
            return -1
        return 0

    def my_exec(self) -> int:
        err = self.syscall({"call": "reboot", "magic1": LINUX_REBOOT_MAGIC1, "magic2": LINUX_REBOOT_MAGIC2,
                            "cmd": LINUX_REBOOT_CMD_KEXEC})     # glibc's reboot(LINUX_REBOOT_CMD_KEXEC)
        if err:
            _err(f"kexec failed: {os.strerror(err)}\n")
            return -1
        return 0                        # the simulated machine runs the new kernel now

    def main(self, argv: list[str]) -> int:
        do_load, do_exec, do_load_jump_back_helper, do_shutdown = 1, 0, 0, 1
        do_sync, skip_sync, do_unload, do_reuse_initrd = 1, 0, 0, 0
        do_kexec_file_syscall, do_kexec_fallback, do_status, has_opt_load = 0, 0, 0, 0
        entry = 0
        type_: str | None = None
        mem_max = ULONG_MAX

        operands: list[str] = []
        for opt, arg in getopt_long(argv, operands, self.arch.long_options):
            self.opts.append((opt, arg))
            if opt == "?":
                usage(self.arch)
                return 1
            if opt == "h":
                usage(self.arch)
                return 0
            if opt == "v":
                version()
                return 0
            if opt == "f":
                do_load, do_shutdown, do_sync, do_exec = 1, 0, 1, 1
            elif opt == "l":
                has_opt_load, do_load, do_exec, do_shutdown = 1, 1, 0, 0
            elif opt == "u":
                do_load, do_shutdown, do_sync, do_unload = 0, 0, 0, 1
                self.kexec_file_flags |= KEXEC_FILE_UNLOAD
            elif opt == "exec-live-update":
                _err("--exec-live-update only works under xen.\n")
                return 1
            elif opt == "e":
                do_load, do_shutdown, do_sync, do_exec = 0, 0, 1, 1
            elif opt == "load-jump-back-helper":
                do_load, do_shutdown, do_sync, do_exec, do_load_jump_back_helper = 0, 0, 1, 0, 1
                self.kexec_flags = KEXEC_PRESERVE_CONTEXT
            elif opt in ("entry", "mem-min", "mem-max"):
                value, rest = strtoul(arg or "")
                if rest:
                    _err(f"Bad option value in --{opt}={arg}\n")
                    usage(self.arch)
                    return 1
                if opt == "entry":
                    entry = value
                elif opt == "mem-max":
                    mem_max = value
            elif opt in ("load-preserve-context", "load-live-update"):
                do_load, do_exec, do_shutdown, do_sync = 1, 0, 0, 1
                self.kexec_flags = KEXEC_PRESERVE_CONTEXT if opt == "load-preserve-context" \
                    else KEXEC_LIVE_UPDATE
            elif opt == "t":
                type_ = arg
            elif opt == "p":
                do_load, do_exec, do_shutdown, do_sync = 1, 0, 0, 0
                self.kexec_file_flags |= KEXEC_FILE_ON_CRASH
                self.kexec_flags = KEXEC_ON_CRASH
            elif opt == "reuseinitrd":
                do_reuse_initrd = 1
            elif opt == "s":
                do_kexec_file_syscall, do_kexec_fallback = 1, 0
            elif opt == "c":
                do_kexec_file_syscall, do_kexec_fallback = 0, 0
            elif opt == "a":
                do_kexec_file_syscall, do_kexec_fallback = 1, 1
            elif opt == "y":
                skip_sync = 1
            elif opt == "S":
                do_status = 1
            elif opt == "print-ckr-size":
                span = self.crash_kernel_range()
                print(span[1] - span[0] + 1 if span and span[0] != span[1] else 0, flush=True)
                return 0
            # -d, -i, -x and the arch options change nothing the simulation can show.

        if skip_sync:
            do_sync = 0
        if do_status:
            if self.kexec_flags == 0 and not has_opt_load:
                self.kexec_flags = KEXEC_ON_CRASH
            do_load = do_reuse_initrd = do_unload = do_shutdown = do_sync = do_exec = 0
            do_load_jump_back_helper = 0
        if do_load and (self.kexec_flags & KEXEC_ON_CRASH or self.kexec_file_flags & KEXEC_FILE_ON_CRASH) \
                and not self.is_crashkernel_mem_reserved():
            raise die("Memory for crashkernel is not reserved\n"
                      "Please reserve memory by passing\"crashkernel=Y@X\" parameter to kernel\n"
                      "Then try to loading kdump kernel\n")
        if do_load and self.kexec_flags & KEXEC_PRESERVE_CONTEXT and mem_max == ULONG_MAX:
            raise die("Please specify memory range used by kexeced kernel\n"
                      "to preserve the context of original kernel with \n"
                      "\"--mem-max\" parameter\n")
        if do_load and self.kexec_flags & KEXEC_LIVE_UPDATE:
            raise die("--load-live-update can only be used with xen\n")
        if not do_load and any(opt in self.arch.arch_vals for opt, _ in self.opts):
            usage(self.arch)                   # "Check for bogus options"
            return 1
        if do_kexec_file_syscall:
            if do_load_jump_back_helper and not do_kexec_fallback:
                raise die("--load-jump-back-helper not supported with kexec_file_load\n")
            if self.kexec_flags & KEXEC_PRESERVE_CONTEXT:
                raise die("--load-preserve-context not supported with kexec_file_load\n")
        if do_reuse_initrd:
            if "retain_initrd" not in self.get_command_line():
                raise die("unrecoverable error: current boot didn't retain the initrd for reuse.\n")
            raise die("--reuseinitrd not implemented on this architecture\n")

        result = 0
        if do_status:
            path = "/sys/kernel/kexec_crash_loaded" if self.kexec_flags & KEXEC_ON_CRASH \
                else "/sys/kernel/kexec_loaded"
            result = self.kexec_loaded(path)
        if do_unload:
            if do_kexec_file_syscall:
                result = self.kexec_file_unload()
                if result == EFALLBACK and do_kexec_fallback:
                    do_kexec_file_syscall = 0
            if not do_kexec_file_syscall:
                result = self.k_unload()
        if do_load and result == 0:
            if do_kexec_file_syscall:
                result = self.do_kexec_file_load(operands, self.kexec_file_flags)
                if result == EFALLBACK and do_kexec_fallback:
                    do_kexec_file_syscall = 0
            if not do_kexec_file_syscall:
                result = self.my_load(type_, operands)
        if result == 0 and (do_shutdown or do_exec) and not self.kexec_loaded("/sys/kernel/kexec_loaded"):
            raise die("Nothing has been loaded!\n")
        if result == 0 and do_shutdown:
            _err("shutdown: No such file or directory\n")     # we never exec the host's shutdown
            result = -1
        if result == 0 and do_sync:
            os.sync()
        if result == 0 and do_exec:
            result = self.my_exec()
        if result == 0 and do_load_jump_back_helper:
            result = self.load_jump_back_helper(entry)
        if result == EFALLBACK:
            _err("syscall kexec_file_load not available.\n")
        return result

    def load_jump_back_helper(self, entry: int) -> int:
        if self.kexec_loaded("/sys/kernel/kexec_loaded"):
            _err("There is kexec kernel loaded, make sure you are in kexeced kernel.\n")
            return -1
        if not entry:
            _err("Please specify jump back entry in command line\n")
            return -1
        err = self.syscall({"call": "kexec_load", "flags": self.kexec_flags, "entry": entry})
        if err:
            _err(f"load jump back kernel failed: {os.strerror(err)}\n")
            return -1
        return 0


def remove_parameter(line: str, name: str) -> str:
    """kexec-tools' remove_parameter(): drop the first `name...` word (and its space), if it starts a word."""
    start = line.find(name)
    if start < 0 or (start and not line[start - 1].isspace()):
        return line
    end = line.find(" ", start)
    return line[:start] if end < 0 else line[:start] + line[end + 1:]


def concat_cmdline(base: str | None, append: str | None) -> str | None:
    if base is None or append is None:
        return append if base is None else base
    return f"{base} {append}"


def image_arm64_probe(buf: bytes) -> int:
    """kexec-tools' arm64 Image probe: a full header with the ARM\\x64 magic."""
    return 0 if len(buf) >= 64 and buf[56:60] == ARM64_IMAGE_MAGIC else -1


def bzImage64_probe(buf: bytes) -> int:
    """kexec-tools' user-space probe (not the kernel's): a relocatable 64-bit bzImage, protocol >= 2.12."""
    if len(buf) < 2 * 512:
        return -1
    if buf[0x202:0x206] != b"HdrS" or buf[0x1FE:0x200] != b"\x55\xaa":
        return -1
    if int.from_bytes(buf[0x206:0x208], "little") < 0x020C:
        return -1
    if not buf[0x211] & 1 or buf[0x236] & 3 != 3:
        return -1
    return 0


def machine_arch(root: str) -> KexecArch:
    """The kexec-tools build for the machine at root (x86_64 when it does not say)."""
    try:
        with open(os.path.join(root, "proc/sys/kernel/arch")) as f:
            return KEXEC_ARCHES.get(f.read().strip(), X86_64)
    except OSError:
        return X86_64


def version() -> None:
    print(PACKAGE_STRING, flush=True)


def usage(arch: KexecArch = X86_64) -> None:
    version()
    sys.stdout.write(arch.usage)
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit status as kexec-tools' main() returns it (-1 -> 255)."""
    root = os.environ.get("KHOFS_ROOT", DEFAULT_ROOT)
    try:
        status = Kexec(root, machine_arch(root)).main(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
    except (OSError, ValueError) as e:
        _err(f"{PROG}: {e}\n")
        status = 1
    return status & 0xFF


if __name__ == "__main__":
    sys.exit(main())
