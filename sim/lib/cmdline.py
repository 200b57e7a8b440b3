"""The kernel command line: lib/cmdline.c, kernel/params.c and init/main.c's two passes.

Linux reads its command line twice.  parse_early_param() hands every `param[=val]` to
each early_param() of that name; start_kernel()'s "Booting kernel" pass then matches
built-in module parameters (`module.param=val`) and otherwise the __setup() prefixes.
Both passes stop at a bare `--`; what follows belongs to init.  The simulated kernel
fills the registries below and calls the two passes; the parameter parsers at the end
are the pure halves of the handlers the KHO work needs, so the kernel keeps its state.

Strings are the kernel's bytes decoded as Latin-1 (one character per byte): the
kernel's isspace() includes 0xa0, and a `str` from any other decoding would split
differently.
"""

import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from sim.kernel.printk import LOGLEVEL_ERR, LOGLEVEL_NOTICE, LOGLEVEL_WARNING
from sim.lib.kstrtox import kstrtobool, kstrtol, kstrtouint, simple_strtoull
from sim.sizes import SMP_CACHE_BYTES, U64_MAX

# printk(): the text as dmesg shows it (pr_fmt prefix included) and its log level.
# sim.kernel.printk.Printk.log has this shape.
LogSink = Callable[[str, int], None]

# An early_param()/__setup() function: the value (None for a bare `kho`) in, int out.
SetupFunc = Callable[[str | None], int]

RESERVE_MEM_MAX_ENTRIES = 8
RESERVE_MEM_NAME_SIZE = 16

_KERNEL_SPACE = frozenset("\t\n\v\f\r \xa0")  # lib/ctype.c _S: not Python's str.isspace()


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def skip_spaces(s: str) -> str:
    i = 0
    while i < len(s) and s[i] in _KERNEL_SPACE:
        i += 1
    return s[i:]


# ---------------------------------------------------------------- lib/cmdline.c


def memparse(s: str) -> tuple[int, str]:
    """Number (base 0: 0x hex, 0 octal) times an optional K/M/G/T/P/E suffix, and the rest.

    Never fails, like the kernel's: no digits is 0, yet a suffix right there is still
    eaten ("k,1M" gives (0, ",1M")); the shift wraps at 64 bits, so "16E" is 0.
    """
    value, rest = simple_strtoull(s, 0)
    shift = "kmgtpe".find(rest[:1].lower()) if rest else -1
    if shift < 0:
        return value, rest
    return (value << (10 * (shift + 1))) & U64_MAX, rest[1:]


def next_arg(args: str) -> tuple[str, str | None, str]:
    """First `param[=val]` of args: (param, val or None, the rest with spaces skipped).

    Quotes group spaces and cannot be escaped.  A `"` opening the whole argument or the
    value is dropped, and so is the argument's last character if it is a `"`.  An `=` as
    the very first character does not count as the separator (index 0 means "none" in the
    kernel).  Dashes are left alone here; parameq() treats them as underscores.
    """
    quoted = args[:1] == '"'
    if quoted:
        args = args[1:]
    in_quote = quoted
    equals = 0
    i = 0
    while i < len(args):
        c = args[i]
        if c in _KERNEL_SPACE and not in_quote:
            break
        if equals == 0 and c == "=":
            equals = i
        if c == '"':
            in_quote = not in_quote
        i += 1
    token, rest = args[:i], skip_spaces(args[i + 1:])
    # The kernel writes NULs into the token; each field ends at the first one after it.
    ends = {i}
    val_start = None
    if equals:
        ends.add(equals)
        val_start = equals + 1
        if token[val_start:val_start + 1] == '"':
            val_start += 1
            if token[i - 1:i] == '"':
                ends.add(i - 1)
    if quoted and token[i - 1:i] == '"':
        ends.add(i - 1)

    def field(start: int) -> str:
        return token[start:min(e for e in ends if e >= start)]

    return field(0), (None if val_start is None else field(val_start)), rest


# ---------------------------------------------------------------- kernel/params.c


def parameqn(a: str, b: str, n: int) -> bool:
    """The first n bytes (terminating NUL included) equal, with - and _ the same."""
    return (a + "\0")[:n].replace("-", "_") == (b + "\0")[:n].replace("-", "_")


def parameq(a: str, b: str) -> bool:
    return parameqn(a, b, len(a) + 1)


@dataclass
class KernelParam:
    """One __param entry: a built-in module's module_param(), named `module.param`.

    `set` is the type's param_set_* (parse or raise OSError); `value` is the variable the
    module reads.  None of the modelled types accepts a bare name (no KERNEL_PARAM_OPS_FL_NOARG).
    """

    name: str
    set: Callable[[str], int]
    value: int


def param_set_long(val: str) -> int:
    """module_param(x, long, ...): kstrtol base 0, so 0x/0 prefixes and a sign, no suffixes."""
    return kstrtol(val, 0)


def module_param_long(modname: str, name: str, default: int) -> KernelParam:
    """module_param() in a built-in object: the command line spells it `modname.name=`."""
    return KernelParam(f"{modname}.{name}", param_set_long, default)


def parse_one(param: str, val: str | None, params: Sequence[KernelParam],
              unknown: Callable[[str, str | None], int] | None) -> int:
    """Give one argument to the first parameter it names, else to unknown(); -errno or 0."""
    for kp in params:
        if parameq(param, kp.name):
            if val is None:
                return -errno.EINVAL
            try:
                kp.value = kp.set(val)
            except OSError as e:
                return -e.errno
            return 0
    if unknown is not None:
        return unknown(param, val)
    return -errno.ENOENT


class ParseArgsResult(NamedTuple):
    after_dashes: str | None  # the text after a bare `--`, None when there was none
    err: int                  # the last failure (-errno), 0 if every argument was taken


def parse_args(doing: str, args: str, params: Sequence[KernelParam],
               unknown: Callable[[str, str | None], int] | None, printk: LogSink) -> ParseArgsResult:
    """Every argument through parse_one(); a failure is logged and parsing goes on."""
    args = skip_spaces(args.split("\0", 1)[0])  # a C string ends at its first NUL
    err = 0
    while args:
        param, val, args = next_arg(args)
        if val is None and param == "--":
            return ParseArgsResult(args, err)
        ret = parse_one(param, val, params, unknown)
        if ret == 0:
            continue
        if ret == -errno.ENOENT:
            printk(f"{doing}: Unknown parameter `{param}'", LOGLEVEL_ERR)
        elif ret == -errno.ENOSPC:
            printk(f"{doing}: `{val or ''}' too large for parameter `{param}'", LOGLEVEL_ERR)
        else:
            printk(f"{doing}: `{val or ''}' invalid for parameter `{param}'", LOGLEVEL_ERR)
        err = ret
    return ParseArgsResult(None, err)


# ---------------------------------------------------------------- init/main.c


@dataclass(frozen=True)
class EarlyParam:
    """early_param(name, fn): fn(val) during parse_early_param(); non-zero means malformed."""

    name: str
    fn: SetupFunc


@dataclass(frozen=True)
class Setup:
    """__setup(prefix, fn): fn(text after prefix) in the Booting-kernel pass; non-zero = handled.

    The prefix usually ends in `=` ("reserve_mem="), so a bare `reserve_mem` does not match.
    """

    prefix: str
    fn: SetupFunc


# The .init.setup section: early and late entries in one table, in link order.
SetupTable = Sequence[EarlyParam | Setup]


def do_early_param(param: str, val: str | None, table: SetupTable, printk: LogSink) -> int:
    """Run every early_param of this name; the warning quotes the name as the user typed it."""
    for p in table:
        if isinstance(p, EarlyParam) and parameq(param, p.name) and p.fn(val) != 0:
            printk(f"Malformed early option '{param}'", LOGLEVEL_WARNING)
    return 0


def parse_early_param(cmdline: str, table: SetupTable, printk: LogSink) -> None:
    """The early pass over the boot command line (the kernel runs it once per boot)."""
    parse_args("early options", cmdline, (), lambda param, val: do_early_param(param, val, table, printk),
               printk)


def obsolete_checksetup(line: str, table: SetupTable) -> bool:
    """Offer `param=val` to each __setup prefix in order until one returns non-zero.

    An early_param of exactly this name also counts as handled (it ran in the early pass),
    but does not stop the search: a __setup of the same name may follow it.
    """
    had_early_param = False
    for p in table:
        if isinstance(p, EarlyParam):
            n = len(p.name)
            if parameqn(line, p.name, n) and line[n:n + 1] in ("", "="):
                had_early_param = True
        elif parameqn(line, p.prefix, len(p.prefix)) and p.fn(line[len(p.prefix):]):
            return True
    return had_early_param


@dataclass
class InitArgs:
    """argv_init and envp_init: what unknown_bootoption() leaves for init."""

    argv: list[str] = field(default_factory=lambda: ["init"])
    envp: list[str] = field(default_factory=lambda: ["HOME=/", "TERM=linux"])


def parse_setup_params(cmdline: str, table: SetupTable, params: Sequence[KernelParam],
                       printk: LogSink, init: InitArgs | None = None) -> str | None:
    """start_kernel()'s "Booting kernel" pass; returns the arguments for init after `--`.

    Module parameters are tried first, then __setup prefixes (unknown_bootoption()).
    Arguments nobody takes go to `init` (when given): `name=value` to its environment,
    replacing a variable of that name, the rest to its argv; a dotted name is an unused
    module parameter and goes nowhere.  More than CONFIG_INIT_ENV_ARG_LIMIT (32) of either,
    which makes Linux panic later, is not modelled.  As in the kernel, any module-parameter
    failure before the `--` loses init's arguments.
    """
    def unknown_bootoption(param: str, val: str | None) -> int:
        line = param if val is None else f"{param}={val}"   # repair_env_string()
        if obsolete_checksetup(line, table) or "." in param or init is None:
            return 0
        if val is None:
            init.argv.append(line)
            return 0
        for i, var in enumerate(init.envp):
            if var.startswith(param + "="):
                init.envp[i] = line
                return 0
        init.envp.append(line)
        return 0

    result = parse_args("Booting kernel", cmdline, params, unknown_bootoption, printk)
    return None if result.err else result.after_dashes


def print_unknown_bootoptions(init: InitArgs, printk: LogSink) -> None:
    """The pr_notice() naming what init gets: its argv after "init", then its environment
    after HOME and TERM."""
    unknown = init.argv[1:] + init.envp[2:]
    if unknown:
        printk(f'Unknown kernel command line parameters "{" ".join(unknown)}", '
               "will be passed to user space.", LOGLEVEL_NOTICE)


# ---------------------------------------------------------------- parameters KHO needs


def kho_parse_enable(p: str | None) -> bool:
    """kho= (early_param): kstrtobool, so a bare `kho` or `kho=` is EINVAL, not "on"."""
    return kstrtobool(p)


@dataclass(frozen=True)
class KhoScratchScale:
    """kho_scratch=N%: only scratch_scale changes; sizes from an earlier kho_scratch= stay."""

    scale: int


@dataclass(frozen=True)
class KhoScratchSizes:
    """kho_scratch=lowmem,global,pernode: the three sizes, and scratch_scale becomes 0."""

    lowmem: int
    global_: int
    pernode: int


def _version(kernel_version: str) -> tuple[int, int]:
    major, minor = kernel_version.split(".")
    return int(major), int(minor)


def kho_parse_scratch_size(p: str | None, kernel_version: str,
                           printk: LogSink) -> KhoScratchScale | KhoScratchSizes:
    """kho_scratch= (early_param); logs the notice the kernel prints on success.

    A trailing `%` selects the scale: at most 10 characters before it, kstrtouint base 10
    (so "%" alone is EINVAL and "4294967296%" ERANGE), printed with %d (wraps negative).
    Otherwise three comma-separated memparse() sizes.  6.16/6.17: each must be non-zero and
    anything after the third is ignored.  6.18+: zeros are fine if the (64-bit wrapping) sum
    is not, and trailing text is EINVAL.  Every error is -EINVAL but the ERANGE one.
    """
    if not p:
        raise _fail(errno.EINVAL)
    if p[-1] == "%":
        if len(p) > 11:
            raise _fail(errno.EINVAL)
        scale = kstrtouint(p[:-1], 10)
        printk(f"KHO: scratch scale is {scale - (1 << 32) if scale >= 1 << 31 else scale}%",
               LOGLEVEL_NOTICE)
        return KhoScratchScale(scale)
    strict = _version(kernel_version) >= (6, 18)
    sizes = []
    for i in range(3):
        if i > 0:
            if p[:1] != ",":
                raise _fail(errno.EINVAL)
            p = p[1:]
        size, rest = memparse(p)
        if rest == p or (size == 0 and not strict):
            raise _fail(errno.EINVAL)
        sizes.append(size)
        p = rest
    if strict and (sum(sizes) & U64_MAX == 0 or p):
        raise _fail(errno.EINVAL)
    lowmem, global_, pernode = sizes
    printk(f"KHO: scratch areas: lowmem: {lowmem >> 20}MiB global: {global_ >> 20}MiB "
           f"pernode: {pernode >> 20}MiB", LOGLEVEL_NOTICE)
    return KhoScratchSizes(lowmem, global_, pernode)


def reserve_mem_parse(p: str | None, table: Sequence[tuple[str, int]]) -> tuple[int, int, str]:
    """reserve_mem=size:align:name checks (spec §8 steps 1-7, in the kernel's order).

    table is the current reserve_mem table as (name, size) pairs: every entry counts
    towards the limit of 8, but a released one (size 0) no longer owns its name.
    Returns (size, align, name) with align raised to SMP_CACHE_BYTES; an empty align
    ("1M::n") is 0 and so becomes 64.  Raises EINVAL/EBUSY; nothing is logged in 6.16.
    """
    if p is None:
        raise _fail(errno.EINVAL)
    if len(table) >= RESERVE_MEM_MAX_ENTRIES:
        raise _fail(errno.EBUSY)
    size, rest = memparse(p)
    if size == 0 or rest == p:
        raise _fail(errno.EINVAL)
    if rest[:1] != ":":
        raise _fail(errno.EINVAL)
    align, rest = memparse(rest[1:])
    if rest[:1] != ":":
        raise _fail(errno.EINVAL)
    align = max(align, SMP_CACHE_BYTES)
    name = rest[1:]
    if not name or len(name) >= RESERVE_MEM_NAME_SIZE:
        raise _fail(errno.EINVAL)
    if all(c in _KERNEL_SPACE for c in name):
        raise _fail(errno.EINVAL)
    if any(used != 0 and n == name for n, used in table):
        raise _fail(errno.EBUSY)
    return size, align, name


def early_memblock(p: str | None) -> bool:
    """memblock= (early_param, always returns 0): True when it turns memblock_debug on.

    Any value containing "debug" does ("memblock=nodebug" too); nothing turns it off.
    """
    return p is not None and "debug" in p


def parse_memopt(p: str | None, printk: LogSink) -> int:
    """mem= (x86 early_param): the limit above which e820 RAM is removed, 0 for no limit.

    A bare `mem` and "nopentium" (warned about on 64-bit) are EINVAL before anything
    changes.  Past that point the kernel sets e820's userdef (so the user-defined map is
    printed) and only then rejects a 0 or unparsable size: the caller sets userdef and
    turns 0 into EINVAL.  memparse() ignores trailing text ("1Gfoo" is 1 GiB).
    """
    if p is None:
        raise _fail(errno.EINVAL)
    if p == "nopentium":
        printk("mem=nopentium ignored! (only supported on x86_32)", LOGLEVEL_WARNING)
        raise _fail(errno.EINVAL)
    return memparse(p)[0]
