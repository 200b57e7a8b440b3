"""`khofs`: boot a simulated machine and put its kernel files where a real box has them.

    khofs mount MOUNTPOINT [machine options] [-f]   serve the machine's tree (a daemon unless -f)
    khofs umount MOUNTPOINT                         unmount it (also after the daemon was killed)
    khofs run [machine options] -- CMD ARGS...      CMD sees the machine at the real paths
    khofs attach MOUNTPOINT -- CMD ARGS...          the same, on the machine a `khofs mount` serves
    khofs shell [machine options | --attach MOUNTPOINT]   an interactive bash there, prompt `(khofs) `
    khofs mkimage OUT [--kernel-version V] [--cmdline S] [--arch A]   a bzImage or arm64 Image to kexec into
    khofs dmesg [util-linux dmesg options]          the kernel log (the `dmesg` inside `run`)
    khofs decode [PATH] [--mem FILE] [--json]       a KHO hand-over as the kernel reads it
    khofs memmap [--svg FILE] [--json] [--before-after]   the physical memory map

`run` and `attach` call unshare(2) on themselves, as `unshare -m --propagation private` would,
without re-executing: their bind mounts (/sys/kernel, /sys/firmware on arm64, /proc/cmdline,
/proc/iomem, /dev/mem) exist only in that private mount namespace and vanish with it, so the host's
mount table is never touched.  `run` serves the machine from a thread of the same process; both
then fork the seccomp supervisor (khofs.intercept.run), which starts CMD and answers its kexec,
reboot and mount calls.  A bind target the host lacks (containers often have no /dev/mem) is
skipped, not created: use $KHOFS_ROOT/dev/mem there.
"""

import argparse
import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_MOUNT_WAIT_S = 10.0

# What `khofs run` binds over the host's files: (path in the mount, path on the box).
BINDS = (("sys/kernel", "/sys/kernel"), ("sys/firmware", "/sys/firmware"), ("proc/cmdline", "/proc/cmdline"),
         ("proc/iomem", "/proc/iomem"), ("dev/mem", "/dev/mem"))
# Where the host's kexec-tools live; the shim is bound over each that exists.
KEXEC_PATHS = ("/sbin/kexec", "/usr/sbin/kexec")


class CliError(Exception):
    """A failure to report as one line, `khofs: ...`, with exit status 1."""


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}") from None


@dataclass(frozen=True)
class MachineOption:
    """One row of the option table: the Machine keyword `--keyword-with-dashes` feeds."""

    keyword: str
    kwargs: dict[str, Any]
    convert: Callable[[Any], Any] | None = None
    name: str = ""                      # the flag's name when it is not the keyword's

    @property
    def flag(self) -> str:
        return "--" + (self.name or self.keyword).replace("_", "-")

    def value(self, args: argparse.Namespace) -> Any:
        value = getattr(args, self.keyword)
        return value if self.convert is None else self.convert(value)


# Every Machine keyword the CLI offers, in one table (`mount`, `run` and `shell` share it).
MACHINE_OPTIONS = (
    MachineOption("arch", {"default": "x86_64", "choices": ("x86_64", "arm64"),
                           "help": "x86_64 (default, a q35 PC) or arm64 (a QEMU virt board)"}),
    MachineOption("mem", {"default": "8G", "help": "RAM size, memparse syntax (default 8G)"}),
    MachineOption("nodes", {"type": int, "default": 2, "help": "NUMA nodes (default 2)"}),
    MachineOption("cmdline", {"default": "", "help": "the boot loader's kernel command line"}),
    MachineOption("kernel_version", {"default": "6.16", "help": "6.16 (default), 6.17 or 6.18"}),
    MachineOption("kernel_size", {"default": "32M", "help": "the image's init_size (default 32M)"}),
    MachineOption("initrd", {"metavar": "FILE", "help": "a file the boot loader loads as the initrd"},
                  lambda path: None if path is None else _read_file(path)),
    MachineOption("seed", {"type": int, "default": 0, "help": "the hardware RNG's seed (default 0)"}),
    MachineOption("scrub", {"action": "store_true", "help": "poison memory a kernel did not preserve"}),
    MachineOption("test_kho", {"action": "store_true",
                               "help": "build kernels with CONFIG_TEST_KEXEC_HANDOVER"}),
    MachineOption("kho_sanitizer", {"action": "store_true",
                                    "help": "report KHO misuse in the next kernel (khofs/kho_sanitizer)"}),
    MachineOption("modules", {"action": "append", "default": [], "metavar": "FILE.py",
                              "help": "a KHO user built into every kernel (repeatable; README "
                                      "\"Write a KHO user\")"}, name="module"),
)


def _machine_options(p: argparse.ArgumentParser, only_given: bool = False) -> None:
    """only_given: an option not on the command line stays out of the Namespace (see cmd_shell)."""
    g = p.add_argument_group("machine options (as sim.machine.Machine)")
    for option in MACHINE_OPTIONS:
        kwargs = dict(option.kwargs, default=argparse.SUPPRESS) if only_given else option.kwargs
        g.add_argument(option.flag, dest=option.keyword, **kwargs)


def serve(machine: Any, mountpoint: str) -> None:
    """khofs.fs.serve, imported when a machine is served: mfusepy is not needed before that
    (`attach` never loads it)."""
    from khofs.fs import serve as fs_serve
    fs_serve(machine, mountpoint)


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kexec", choices=("real", "clone"), default=None,
                   help="`kexec` in CMD: the host's kexec-tools with its system calls intercepted "
                   "(default where installed) or khofs's Python clone")


def _boot(args: argparse.Namespace) -> Any:
    from sim.machine import Machine  # late: `mkimage` and `umount` need no kernel
    machine = Machine(**{o.keyword: o.value(args) for o in MACHINE_OPTIONS})
    machine.boot()
    return machine


def _wait_mounted(mountpoint: str, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + _MOUNT_WAIT_S
    while not os.path.ismount(mountpoint):
        if not alive():
            raise CliError(f"cannot mount {mountpoint}: the FUSE server stopped")
        if time.monotonic() > deadline:
            raise CliError(f"cannot mount {mountpoint}: no mount after {_MOUNT_WAIT_S:.0f} s")
        time.sleep(0.002)


def _fusermount_u(mountpoint: str) -> None:
    """Unmount; a dead server's mount ("Transport endpoint is not connected") needs a lazy one."""
    first = subprocess.run(["fusermount", "-u", mountpoint], capture_output=True, text=True)
    if first.returncode == 0:
        return
    lazy = subprocess.run(["fusermount", "-uz", mountpoint], capture_output=True, text=True)
    if lazy.returncode != 0:
        message = (first.stderr or lazy.stderr).strip().splitlines() or ["fusermount failed"]
        raise CliError(f"cannot unmount {mountpoint}: {message[-1]}")


# -- mount / umount --

def cmd_mount(args: argparse.Namespace) -> int:
    mountpoint = os.path.abspath(args.mountpoint)
    if not os.path.isdir(mountpoint):
        raise CliError(f"cannot mount {args.mountpoint}: not a directory")
    if os.path.ismount(mountpoint):
        raise CliError(f"cannot mount {args.mountpoint}: already a mount point (khofs umount it first)")
    machine = _boot(args)
    if args.foreground:
        serve(machine, mountpoint)
        return 0
    pid = os.fork()
    if pid == 0:                                    # the daemon
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        log = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if args.log else null
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(log, 2)
        status = 0
        try:
            serve(machine, mountpoint)
        except BaseException as e:                  # noqa: BLE001 - report, never a traceback
            print(f"khofs: {type(e).__name__}: {e}", file=sys.stderr)
            status = 1
        os._exit(status)

    def alive() -> bool:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)

    _wait_mounted(mountpoint, alive)
    return 0


def cmd_umount(args: argparse.Namespace) -> int:
    _fusermount_u(os.path.abspath(args.mountpoint))
    return 0


# -- run / shell --

# `khofs shell`'s rc file: the user's own set-up, then a prompt that says which machine this is.
_BASHRC = '[ -f ~/.bashrc ] && . ~/.bashrc\nPS1="(khofs) $PS1"\n'


def _shim_dir() -> str:
    """`dmesg` for CMD's PATH (thin scripts that run our modules with this Python), the shell's
    rc file, and in clone/ the `kexec` clone: first in PATH in `clone` mode, else the fallback."""
    shims = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}bin-{os.getpid()}-")
    with open(os.path.join(shims, "bashrc"), "w") as f:
        f.write(_BASHRC)
    pythonpath = str(Path(__file__).resolve().parent.parent)
    # kexec needs only the standard library and khofs, so it skips site (-S): start-up is its cost.
    os.mkdir(os.path.join(shims, "clone"))
    for name, module, flags in (("clone/kexec", "khofs.kexec", " -S"), ("dmesg", "khofs.dmesg", "")):
        path = os.path.join(shims, name)
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\nPYTHONPATH={shlex.quote(pythonpath)}${{PYTHONPATH:+:$PYTHONPATH}} "
                    f"exec {shlex.quote(sys.executable)}{flags} -m {module} \"$@\"\n")
        os.chmod(path, 0o755)
    return shims


# unshare(2), mount(2) and umount2(2) called directly: a second Python under unshare(1) and a
# mount(8) process per bind would be most of `run`'s start-up.
_MS_RDONLY = 0x1
_MS_REMOUNT = 0x20
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_PRIVATE = 0x40000
_MNT_DETACH = 0x2
_CLONE_NEWNS = 0x20000


def _bind(source: str, target: str, flags: int = _MS_BIND) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(source.encode(), target.encode(), None, ctypes.c_ulong(flags), None) != 0:
        raise CliError(f"cannot bind {target}: {os.strerror(ctypes.get_errno())}")


def _detach(target: str) -> None:
    """umount -l: the binds must let go of the FUSE mount before it is unmounted."""
    ctypes.CDLL(None, use_errno=True).umount2(target.encode(), _MNT_DETACH)


def _in_private_namespace() -> None:
    """`unshare -m --propagation private` for this process itself, before any thread starts:
    the binds and the mount then vanish with it, and no second Python has to start up."""
    libc = ctypes.CDLL(None, use_errno=True)
    if (libc.unshare(_CLONE_NEWNS) != 0
            or libc.mount(b"none", b"/", None, ctypes.c_ulong(_MS_REC | _MS_PRIVATE), None) != 0):
        raise CliError(f"cannot enter a private mount namespace: {os.strerror(ctypes.get_errno())}")


_TMP_PREFIX = "khofs-"


def _clean_stale_tmp() -> None:
    """Remove the mount and shim directories of `khofs run`s that were killed (SIGKILL leaves
    them behind); each name carries its owner's pid."""
    tmp = Path(tempfile.gettempdir())
    for path in [*tmp.glob(f"{_TMP_PREFIX}root-*-*"), *tmp.glob(f"{_TMP_PREFIX}bin-*-*")]:
        pid = path.name.split("-")[2]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        if os.path.ismount(path):
            continue                                # still serving in some namespace
        shutil.rmtree(path, ignore_errors=True)


def _bind_kexec_shim(clone: str) -> list[str]:
    """Clone mode: put the `kexec` clone over the host's kexec-tools too, so an absolute
    /sbin/kexec reaches the machine rather than the host; the bound paths."""
    bound: list[str] = []
    for target in KEXEC_PATHS:
        if os.path.exists(target) and os.path.realpath(target) not in map(os.path.realpath, bound):
            _bind(os.path.join(clone, "kexec"), target)
            bound.append(target)
    return bound


def _fence_dev_mem() -> list[str]:
    """No /dev/mem to bind over: make /dev read-only for CMD, so that writing /dev/mem fails
    instead of creating a file on the host."""
    print("khofs: this host has no /dev/mem; /dev is read-only inside, use $KHOFS_ROOT/dev/mem",
          file=sys.stderr)
    _bind("/dev", "/dev", _MS_BIND | _MS_REC)
    _bind("/dev", "/dev", _MS_REMOUNT | _MS_BIND | _MS_RDONLY)
    return ["/dev"]


def _kexec_mode(choice: str | None, root: str) -> str:
    """`real` (the host's kexec-tools, its calls intercepted), `clone`, or `none`: the clone
    without interception, with a warning, where seccomp user notification is unavailable.
    The host's kexec-tools is built for the host: an arm64 machine on an x86_64 host gets the
    clone, which is built for whichever architecture the machine reports."""
    from khofs.intercept import UNAVAILABLE_WARNING, user_notif_available
    with open(os.path.join(root, "proc/sys/kernel/arch")) as f:
        machine_arch = f.read().strip()
    if machine_arch != os.uname().machine:
        if choice == "real":
            raise CliError(f"--kexec=real: the host's kexec-tools is built for {os.uname().machine}, "
                           f"the machine is {machine_arch}")
        choice = "clone"
    why_not = user_notif_available()
    if why_not is not None:
        if choice == "real":
            raise CliError(f"--kexec=real needs seccomp user notification: {why_not}")
        print(UNAVAILABLE_WARNING.format(why_not), file=sys.stderr)
        return "none"
    if choice is None:
        return "real" if shutil.which("kexec") else "clone"
    if choice == "real" and not shutil.which("kexec"):
        raise CliError("--kexec=real: kexec-tools is not installed (no kexec in PATH)")
    return choice


def _supervise(root: str, command: list[str], cwd: str, env: dict[str, str], clone: str, mode: str) -> int:
    """khofs.intercept's supervisor in a child forked from this already-imported process (exec'ing
    a second Python was most of `run`'s start-up), run to its end; SIGTERM, SIGINT and SIGHUP sent
    to us go to it, so the machine stays up until CMD has exited.  The child touches nothing of the
    machine (the server thread is not there); it reaches it only through the mount.  Its exit
    status, as subprocess reports it (negative: killed by that signal)."""
    from khofs import intercept
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(env)
            status = intercept.run(root, command, clone, mode == "real", mode != "none")
        except BaseException as e:                  # noqa: BLE001 - report, never a traceback
            print(f"khofs: seccomp supervisor failed: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status & 0xFF)
    previous = intercept.forward_signals(pid)
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return os.waitstatus_to_exitcode(status)


def _enter(root: str, command: list[str] | None, cwd: str, kexec: str | None) -> int:
    """Run CMD (None: an interactive bash) in cwd with the machine mounted at root seen at the real
    paths, under the seccomp supervisor (khofs.intercept) and unable to reboot or kexec the host;
    CMD's exit status.  Must run in a private mount namespace: the binds vanish with it."""
    bound: list[str] = []
    mode = _kexec_mode(kexec, root)
    shims = _shim_dir()
    clone = os.path.join(shims, "clone")
    if command is None:
        command = ["bash", "--rcfile", os.path.join(shims, "bashrc"), "-i"]
    try:
        for inside, target in BINDS:
            if not os.path.exists(target):
                if target == "/dev/mem":
                    bound += _fence_dev_mem()
                continue
            if not os.path.exists(os.path.join(root, inside)):     # sys/firmware: arm64 machines only
                continue
            _bind(os.path.join(root, inside), target)
            bound.append(target)
        if mode != "real":                  # without the supervisor's kexec-tools
            bound += _bind_kexec_shim(clone)
        path = f"{shims}:{clone + ':' if mode == 'clone' else ''}{os.environ.get('PATH', '')}"
        status = _supervise(root, command, cwd, dict(os.environ, KHOFS_ROOT=root, PATH=path), clone, mode)
        return status if status >= 0 else 128 - status
    finally:
        for target in reversed(bound):
            _detach(target)
        shutil.rmtree(shims)


def _run(args: argparse.Namespace, command: list[str] | None) -> int:
    """A fresh machine, served from a thread for as long as CMD runs."""
    _in_private_namespace()
    cwd = os.getcwd()                               # libfuse3's fuse_main moves the process to /
    _clean_stale_tmp()
    machine = _boot(args)
    root = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}root-{os.getpid()}-")
    failure: list[BaseException] = []

    def server() -> None:
        try:
            serve(machine, root)
        except BaseException as e:                  # noqa: BLE001 - reported by the main thread
            failure.append(e)

    thread = threading.Thread(target=server, name="khofs-fuse", daemon=True)
    thread.start()
    try:
        _wait_mounted(root, thread.is_alive)
        return _enter(root, command, cwd, args.kexec)
    finally:
        if os.path.ismount(root):
            _fusermount_u(root)
        thread.join(_MOUNT_WAIT_S)
        os.rmdir(root)


def _attach(args: argparse.Namespace, command: list[str] | None) -> int:
    """CMD against the machine an existing `khofs mount` serves, with the view `run` gives."""
    from khofs.fs import SYSCALL_PATH
    root = os.path.abspath(args.attach)
    if not os.path.exists(os.path.join(root, SYSCALL_PATH.lstrip("/"))):
        raise CliError(f"attach: {args.attach} is not a khofs mount")
    _in_private_namespace()
    return _enter(root, command, os.getcwd(), args.kexec)


def _command(args: argparse.Namespace) -> list[str]:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise CliError(f"{args.subcommand}: no command given ({args.synopsis})")
    return command


def cmd_run(args: argparse.Namespace) -> int:
    return _run(args, _command(args))


def cmd_attach(args: argparse.Namespace) -> int:
    return _attach(args, _command(args))


def cmd_shell(args: argparse.Namespace) -> int:
    """An attached machine is already booted: machine options with --attach are a usage error
    (exit 2), not silently ignored."""
    given = [option for option in MACHINE_OPTIONS if hasattr(args, option.keyword)]
    if args.attach:
        if given:
            args.usage_error(f"argument --attach: not allowed with argument {given[0].flag} "
                             "(the attached machine is already booted)")
        return _attach(args, None)
    defaults = argparse.ArgumentParser(add_help=False)
    _machine_options(defaults)
    for keyword, value in vars(defaults.parse_args([])).items():
        if not hasattr(args, keyword):
            setattr(args, keyword, value)
    return _run(args, None)


# -- mkimage --

def cmd_mkimage(args: argparse.Namespace) -> int:
    from sim.arch import make_kernel_image
    image = make_kernel_image(args.arch, args.kernel_version, args.cmdline)
    with open(args.out, "wb") as f:
        f.write(image)
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from khofs.decode import decode
    return decode(args.path, args.mem, args.kernel_version, args.json, sys.stdout)


def cmd_memmap(args: argparse.Namespace) -> int:
    from khofs.memmap import memmap
    return memmap(args.svg, args.json, args.before_after, sys.stdout)


def cmd_memblock_tests(args: argparse.Namespace) -> int:
    from khofs.memblock_tests import run
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)     # `| head` ends it quietly, as it ends ./main
    return run(verbose=args.verbose, movable_node=args.movable_node)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="khofs", description="A simulated Linux 6.16 machine with KHO, "
                                "its kernel files served through FUSE.")
    sub = p.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")

    m = sub.add_parser("mount", help="serve a freshly booted machine at MOUNTPOINT")
    m.add_argument("mountpoint")
    m.add_argument("-f", "--foreground", action="store_true", help="serve in the foreground")
    m.add_argument("--log", help="daemon's stderr (default: discarded)")
    _machine_options(m)
    m.set_defaults(func=cmd_mount)

    u = sub.add_parser("umount", help="unmount a khofs mount (also one whose daemon died)")
    u.add_argument("mountpoint")
    u.set_defaults(func=cmd_umount)

    r = sub.add_parser("run", help="run CMD with the machine's files at /sys/kernel, /proc, /dev/mem")
    _machine_options(r)
    _run_options(r)
    r.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    r.set_defaults(func=cmd_run, synopsis="khofs run [options] -- CMD ARGS...")

    a = sub.add_parser("attach", help="run CMD as `run` does, against the machine a `khofs mount` serves")
    a.add_argument("attach", metavar="MOUNTPOINT")
    _run_options(a)
    a.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    a.set_defaults(func=cmd_attach, synopsis="khofs attach MOUNTPOINT -- CMD ARGS...")

    s = sub.add_parser("shell", help="an interactive bash on the machine, prompt `(khofs) ...`")
    s.add_argument("--attach", metavar="MOUNTPOINT", help="the machine a `khofs mount` serves, not a new one")
    _machine_options(s, only_given=True)
    _run_options(s)
    s.set_defaults(func=cmd_shell, usage_error=s.error)

    i = sub.add_parser("mkimage", help="write a bootable kernel image (x86_64 bzImage, arm64 Image)")
    i.add_argument("out")
    i.add_argument("--kernel-version", default="6.16")
    i.add_argument("--cmdline", default="", help="built-in command line (CONFIG_CMDLINE)")
    i.add_argument("--arch", default="x86_64", choices=("x86_64", "arm64"),
                   help="x86_64 (a bzImage, default) or arm64 (an Image)")
    i.set_defaults(func=cmd_mkimage)

    c = sub.add_parser("decode", help="decode a KHO hand-over (root FDT, sub-FDTs, preserved memory)")
    c.add_argument("path", nargs="?", help="a root FDT (default: the machine's kho/out/fdt, else in/fdt)")
    c.add_argument("--mem", metavar="FILE", help="RAM as a raw dump (file offset = physical address)")
    c.add_argument("--kernel-version", choices=("6.16", "6.17", "6.18"),
                   help="layout of the hand-over (default: the mount's kernel, else guessed)")
    c.add_argument("--json", action="store_true", help="one JSON object (schema in README.md)")
    c.set_defaults(func=cmd_decode)

    mm = sub.add_parser("memmap", help="the machine's physical memory map (text, --json, --svg FILE)")
    mm.add_argument("--svg", metavar="FILE", help="also draw it, log-scaled, with a legend")
    mm.add_argument("--json", action="store_true", help="one JSON object instead of text")
    mm.add_argument("--before-after", action="store_true",
                    help="the previous kernel's map (from the hand-over) beside this one's")
    mm.set_defaults(func=cmd_memmap)

    t = sub.add_parser("memblock-tests", help="the ported tools/testing/memblock suite, as upstream's main")
    t.add_argument("-v", "--verbose", action="store_true", help="one kselftest line per check")
    t.add_argument("-m", "--movable-node", action="store_true", help="NUMA checks with movable_node")
    t.set_defaults(func=cmd_memblock_tests)

    # Listed for --help; main() hands its arguments to khofs.dmesg, which parses util-linux's options.
    sub.add_parser("dmesg", help="the kernel log of the machine at $KHOFS_ROOT (util-linux dmesg options)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dmesg"]:
        from khofs import dmesg
        return dmesg.main(argv[1:])
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as e:
        print(f"khofs: {e}", file=sys.stderr)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"khofs: {e}", file=sys.stderr)
    except Exception as e:                          # noqa: BLE001 - one line, never a traceback
        print(f"khofs: {type(e).__name__}: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
