"""lib/kstrtox.c: the kernel's strict string-to-integer conversions.

Errors are OSError with the errno the kernel returns, because callers such as
simple_attr_write hand that errno straight back to write(2).
"""

import errno
import os

from sim.sizes import U64_MAX

UINT_MAX = (1 << 32) - 1
S64_MAX = (1 << 63) - 1
S64_MIN = -(1 << 63)


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _parse_integer_fixup_radix(s: str, base: int) -> tuple[str, int]:
    if base == 0:
        if s[:1] == "0":
            if s[1:2].lower() == "x" and s[2:3] and s[2] in "0123456789abcdefABCDEF":
                return s[2:], 16
            return s, 8
        return s, 10
    if base == 16 and s[:1] == "0" and s[1:2].lower() == "x":
        return s[2:], 16
    return s, base


def _parse_integer(s: str, base: int, limit: int = U64_MAX) -> tuple[int, int, bool]:
    """Digits from the start of s: (value, characters used, overflowed)."""
    value, used, overflow = 0, 0, False
    for ch in s:
        d = "0123456789abcdefghijklmnopqrstuvwxyz".find(ch.lower())
        if d < 0 or d >= base:
            break
        value = value * base + d
        if value > limit:
            overflow = True
            value &= limit
        used += 1
    return value, used, overflow


def simple_strtoull(s: str, base: int) -> tuple[int, str]:
    """Leading digits of s and the text after them (lib/vsprintf.c).

    Unlike kstrtoull nothing is rejected: no digits give 0 with s unconsumed, and
    overflow silently wraps modulo 2**64, which memparse() and its callers inherit.
    """
    s, base = _parse_integer_fixup_radix(s, base)
    value, used, _ = _parse_integer(s, base)
    return value, s[used:]


def _kstrtoull(s: str, base: int) -> int:
    """kstrtoull() without its leading '+', which kstrtoll() must not accept after a '-'."""
    s, base = _parse_integer_fixup_radix(s, base)
    value, used, overflow = _parse_integer(s, base)
    if used == 0:
        raise _fail(errno.EINVAL)
    if overflow:
        raise _fail(errno.ERANGE)
    rest = s[used:]
    if rest not in ("", "\n"):
        raise _fail(errno.EINVAL)
    return value


def kstrtoull(s: str, base: int) -> int:
    """Whole string (one trailing newline allowed) as an unsigned 64-bit number."""
    if s[:1] == "+":
        s = s[1:]
    return _kstrtoull(s, base)


def kstrtouint(s: str, base: int) -> int:
    value = kstrtoull(s, base)
    if value > UINT_MAX:
        raise _fail(errno.ERANGE)
    return value


def kstrtoll(s: str, base: int) -> int:
    """Signed 64-bit: '-' then digits, or kstrtoull's form; out of range is ERANGE."""
    if s[:1] == "-":
        value = _kstrtoull(s[1:], base)
        if value > -S64_MIN:
            raise _fail(errno.ERANGE)
        return -value
    value = kstrtoull(s, base)
    if value > S64_MAX:
        raise _fail(errno.ERANGE)
    return value


# unsigned long and long are 64 bits on the simulated x86_64/arm64.
kstrtoul = kstrtoull
kstrtol = kstrtoll


def kstrtobool(s: str | None) -> bool:
    """y/Y/t/T/1 and n/N/f/F/0 by the first character, on/off by the second."""
    if not s:
        raise _fail(errno.EINVAL)
    c = s[0]
    if c in "yYtT1":
        return True
    if c in "nNfF0":
        return False
    if c in "oO" and len(s) > 1:
        if s[1] in "nN":
            return True
        if s[1] in "fF":
            return False
    raise _fail(errno.EINVAL)
