"""sim.lib.cmdline against the rules of lib/cmdline.c, kernel/params.c, init/main.c and the
parameter handlers of kexec_handover.c, memblock.c and e820.c (6.16 unless a test says)."""

import errno

import pytest

from sim.kernel.printk import LOGLEVEL_ERR, LOGLEVEL_NOTICE, LOGLEVEL_WARNING, Printk
from sim.lib.cmdline import (
    EarlyParam,
    KernelParam,
    KhoScratchScale,
    KhoScratchSizes,
    ParseArgsResult,
    Setup,
    early_memblock,
    kho_parse_enable,
    kho_parse_scratch_size,
    memparse,
    module_param_long,
    next_arg,
    obsolete_checksetup,
    param_set_long,
    parameq,
    parameqn,
    parse_args,
    parse_early_param,
    parse_memopt,
    parse_setup_params,
    reserve_mem_parse,
    skip_spaces,
)
from sim.lib.kstrtox import kstrtol, kstrtoll, kstrtoul, kstrtoull, simple_strtoull

K, M, G = 1 << 10, 1 << 20, 1 << 30


class Log:
    """A printk sink that remembers (text, level)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, int]] = []

    def __call__(self, text: str, level: int) -> None:
        self.lines.append((text, level))

    @property
    def texts(self) -> list[str]:
        return [t for t, _ in self.lines]


def errno_of(fn, *args) -> int:
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


# ---------------------------------------------------------------- kstrtox additions


@pytest.mark.parametrize("s, base, expect", [
    ("123abc", 10, (123, "abc")),
    ("", 0, (0, "")),
    ("zz", 0, (0, "zz")),
    ("0x", 0, (0, "x")),             # no hex digit after 0x: octal, stops at the x
    ("0x1fg", 0, (0x1F, "g")),
    ("0777", 0, (0o777, "")),
    ("089", 0, (0, "89")),           # octal stops at 8
    ("-5", 0, (0, "-5")),            # no sign handling
    (" 5", 0, (0, " 5")),            # no whitespace skipping
    ("18446744073709551616", 10, (0, "")),  # wraps silently
    ("18446744073709551617x", 10, (1, "x")),
])
def test_simple_strtoull(s: str, base: int, expect: tuple[int, str]) -> None:
    assert simple_strtoull(s, base) == expect


@pytest.mark.parametrize("s, expect", [
    ("0", 0), ("-0", 0), ("+7", 7), ("-7", -7), ("0x10", 16), ("-0x10", -16), ("010", 8),
    ("9223372036854775807", (1 << 63) - 1), ("-9223372036854775808", -(1 << 63)), ("5\n", 5),
])
def test_kstrtoll_ok(s: str, expect: int) -> None:
    assert kstrtoll(s, 0) == expect


@pytest.mark.parametrize("s, code", [
    ("9223372036854775808", errno.ERANGE), ("-9223372036854775809", errno.ERANGE),
    ("18446744073709551616", errno.ERANGE), ("-+5", errno.EINVAL), ("--5", errno.EINVAL),
    ("-", errno.EINVAL), ("", errno.EINVAL), ("5 ", errno.EINVAL), ("1K", errno.EINVAL),
])
def test_kstrtoll_errors(s: str, code: int) -> None:
    assert errno_of(kstrtoll, s, 0) == code


def test_long_types_are_64_bit() -> None:
    assert kstrtol("-1", 0) == -1
    assert kstrtoul("18446744073709551615", 0) == (1 << 64) - 1
    assert kstrtoull("+1", 10) == 1  # the refactor kept kstrtoull's leading '+'


# ---------------------------------------------------------------- memparse


@pytest.mark.parametrize("s, expect", [
    ("1k", (K, "")), ("1K", (K, "")), ("1m", (M, "")), ("1M", (M, "")), ("1g", (G, "")),
    ("1G", (G, "")), ("1t", (1 << 40, "")), ("1T", (1 << 40, "")), ("1p", (1 << 50, "")),
    ("1P", (1 << 50, "")), ("1e", (1 << 60, "")), ("1E", (1 << 60, "")),
    ("4096", (4096, "")), ("0x10M", (16 * M, "")), ("0X10m", (16 * M, "")), ("010", (8, "")),
    ("08M", (0, "8M")),              # base 0 octal stops at 8
    ("1KB", (K, "B")), ("1Gfoo", (G, "foo")), ("64m:4k:n1", (64 * M, ":4k:n1")),
    ("1b", (1, "b")),                # b is not a suffix
    ("0x1b", (0x1B, "")),            # ...but a hex digit
    ("", (0, "")), ("x", (0, "x")), (":", (0, ":")), ("-1", (0, "-1")), (" 1", (0, " 1")),
    ("k", (0, "")), ("K,1M", (0, ",1M")),  # no digits, yet the suffix is consumed
    ("0x", (0, "x")), ("0xg", (0, "xg")),
    ("16E", (0, "")), ("17E", (1 << 60, "")),  # the shift wraps at 64 bits
    ("18446744073709551616", (0, "")),
])
def test_memparse(s: str, expect: tuple[int, str]) -> None:
    assert memparse(s) == expect


# ---------------------------------------------------------------- next_arg / parameq


@pytest.mark.parametrize("args, expect", [
    ("foo=bar baz", ("foo", "bar", "baz")),
    ("foo", ("foo", None, "")),
    ("foo   bar", ("foo", None, "bar")),            # trailing spaces chewed
    ("foo=", ("foo", "", "")),
    ("foo=a=b", ("foo", "a=b", "")),                 # only the first = splits
    ("foo-bar=1", ("foo-bar", "1", "")),             # dashes not normalised
    ('foo="a b" c', ("foo", "a b", "c")),
    ('"foo=a b" c', ("foo", "a b", "c")),
    ('"foo bar" c', ("foo bar", None, "c")),
    ('foo="a"b" c', ("foo", 'a"b" c', "")),          # quotes toggle; only a final one is cut
    ('foo=a"b c"', ("foo", 'a"b c"', "")),           # value not opened by a quote keeps them
    ('foo="', ("foo", "", "")),
    ('"', ("", None, "")),
    ('"--" x', ("--", None, "x")),
    ("=a b", ("=a", None, "b")),                     # '=' at index 0 is not a separator
    ("=a=b c", ("=a", "b", "c")),
    ("a\tb", ("a", None, "b")),
    ("a\nb", ("a", None, "b")),
    ("a\xa0b", ("a", None, "b")),                    # kernel isspace() includes 0xa0
    ("a\x1cb", ("a\x1cb", None, "")),                # Python's isspace() would split here
    ("a\x85b", ("a\x85b", None, "")),
])
def test_next_arg(args: str, expect: tuple[str, str | None, str]) -> None:
    assert next_arg(args) == expect


def test_skip_spaces_uses_kernel_ctype() -> None:
    assert skip_spaces(" \t\n\v\f\r\xa0x ") == "x "
    assert skip_spaces("\x1cx") == "\x1cx"


def test_parameq() -> None:
    assert parameq("kho_scratch", "kho_scratch")
    assert parameq("kho-scratch", "kho_scratch")
    assert parameq("kho_scratch", "kho-scratch")
    assert not parameq("kho", "kho_scratch")
    assert not parameq("kho_scratch", "kho")
    assert not parameq("KHO", "kho")


def test_parameqn_is_a_prefix_compare() -> None:
    assert parameqn("reserve-mem=1M:4K:a", "reserve_mem=", 12)
    assert not parameqn("reserve_mem", "reserve_mem=", 12)  # the terminator is compared
    assert parameqn("kho_scratch=1", "kho", 3)
    assert not parameqn("kh", "kho", 3)


# ---------------------------------------------------------------- parse_args


def test_parse_args_messages_and_continue() -> None:
    def too_big(val: str) -> int:
        raise OSError(errno.ENOSPC, "")

    params = [KernelParam("m.big", too_big, 0), module_param_long("m", "n", 5)]
    log = Log()
    result = parse_args("doing", "  m.big=xx  m.n=zz unknown m.n m.n=7", params, None, log)
    assert log.lines == [
        ("doing: `xx' too large for parameter `m.big'", LOGLEVEL_ERR),
        ("doing: `zz' invalid for parameter `m.n'", LOGLEVEL_ERR),
        ("doing: Unknown parameter `unknown'", LOGLEVEL_ERR),
        ("doing: `' invalid for parameter `m.n'", LOGLEVEL_ERR),  # no value: EINVAL
    ]
    assert params[1].value == 7  # parsing went on after the failures
    assert result == ParseArgsResult(None, -errno.EINVAL)


def test_parse_args_stops_at_bare_dashes() -> None:
    seen: list[tuple[str, str | None]] = []

    def unknown(param: str, val: str | None) -> int:
        seen.append((param, val))
        return 0

    result = parse_args("d", 'a --=x "--" b=1 -- c=2  "d e"', [], unknown, Log())
    assert seen == [("a", None), ("--", "x")]
    assert result == ParseArgsResult('b=1 -- c=2  "d e"', 0)


def test_parse_args_reports_error_with_dashes() -> None:
    result = parse_args("d", "x -- y", [], None, Log())
    assert result == ParseArgsResult("y", -errno.ENOENT)


def test_parse_args_ends_at_nul() -> None:
    seen: list[str] = []
    parse_args("d", "a\0b", [], lambda p, v: seen.append(p) or 0, Log())
    assert seen == ["a"]


# ---------------------------------------------------------------- early pass


def make_table(calls: list[tuple[str, str | None]], results: dict[str, int] | None = None) -> list:
    results = results or {}

    def handler(tag: str):
        def fn(val: str | None) -> int:
            calls.append((tag, val))
            return results.get(tag, 0)
        return fn

    return [
        EarlyParam("kho", handler("kho")),
        EarlyParam("kho_scratch", handler("kho_scratch")),
        Setup("reserve_mem=", handler("reserve_mem")),
        EarlyParam("mem", handler("mem")),
        EarlyParam("mem", handler("mem2")),
    ]


def test_early_pass_calls_only_early_params() -> None:
    calls: list[tuple[str, str | None]] = []
    log = Log()
    parse_early_param('root=/dev/sda kho reserve_mem=1M:4K:a kho-scratch=30% mem="1G" x.y=1',
                      make_table(calls), log)
    assert calls == [("kho", None), ("kho_scratch", "30%"), ("mem", "1G"), ("mem2", "1G")]
    assert log.lines == []  # unknown parameters are silent in the early pass


def test_early_pass_malformed_message_quotes_the_typed_name() -> None:
    calls: list[tuple[str, str | None]] = []
    log = Log()
    parse_early_param("kho=maybe kho-scratch=1 mem=0", make_table(calls, {"kho": -22, "kho_scratch": -22,
                                                                         "mem": -22, "mem2": -22}), log)
    assert log.lines == [
        ("Malformed early option 'kho'", LOGLEVEL_WARNING),
        ("Malformed early option 'kho-scratch'", LOGLEVEL_WARNING),
        ("Malformed early option 'mem'", LOGLEVEL_WARNING),   # once per failing handler
        ("Malformed early option 'mem'", LOGLEVEL_WARNING),
    ]


def test_early_pass_stops_at_dashes() -> None:
    calls: list[tuple[str, str | None]] = []
    parse_early_param("kho=on -- kho=off", make_table(calls), Log())
    assert calls == [("kho", "on")]


def test_early_pass_real_handlers_into_printk() -> None:
    printk = Printk()
    state: dict[str, object] = {}

    def kho(p: str | None) -> int:
        try:
            state["kho"] = kho_parse_enable(p)
        except OSError as e:
            return -e.errno
        return 0

    def scratch(p: str | None) -> int:
        try:
            state["scratch"] = kho_parse_scratch_size(p, "6.16", printk.log)
        except OSError as e:
            return -e.errno
        return 0

    table = [EarlyParam("kho", kho), EarlyParam("kho_scratch", scratch)]
    parse_early_param("kho=on kho_scratch=16M,512M,256M kho_scratch=1G kho", table, printk.log)
    assert state == {"kho": True, "scratch": KhoScratchSizes(16 * M, 512 * M, 256 * M)}
    assert printk.dmesg() == (
        "[    0.000000] KHO: scratch areas: lowmem: 16MiB global: 512MiB pernode: 256MiB\n"
        "[    0.000000] Malformed early option 'kho_scratch'\n"
        "[    0.000000] Malformed early option 'kho'\n"
    )
    assert [r.level for r in printk.records] == [LOGLEVEL_NOTICE, LOGLEVEL_WARNING, LOGLEVEL_WARNING]


# ---------------------------------------------------------------- "Booting kernel" pass


def test_setup_pass_calls_setup_prefixes_not_early_params() -> None:
    calls: list[tuple[str, str | None]] = []
    log = Log()
    after = parse_setup_params('kho=on reserve_mem reserve-mem="1M:4K:a b" reserve_memx=1 foo.bar=1',
                               make_table(calls), [], log)
    assert calls == [("reserve_mem", "1M:4K:a b")]
    assert after is None
    assert log.lines == []


def test_setup_prefixes_tried_in_order_until_one_handles() -> None:
    calls: list[str] = []

    def setup(tag: str, ret: int) -> Setup:
        return Setup(tag, lambda v: calls.append(f"{tag}{v}") or ret)

    table = [setup("foo", 0), setup("foo=", 0), setup("foo=b", 1), setup("foo=ba", 1)]
    parse_setup_params("foo=bar", table, [], Log())
    assert calls == ["foo=bar", "foo=bar", "foo=bar"]  # the last prefix is never reached


def test_obsolete_checksetup_early_names() -> None:
    calls: list[tuple[str, str | None]] = []
    table = make_table(calls)
    assert obsolete_checksetup("kho", table)
    assert obsolete_checksetup("kho=on", table)
    assert obsolete_checksetup("kho-scratch=1", table)
    assert not obsolete_checksetup("khox=on", table)
    assert not obsolete_checksetup("reserve_mem", table)
    assert obsolete_checksetup("reserve_mem=x", table) is False  # handler returned 0
    assert calls == [("reserve_mem", "x")]


def test_early_param_and_setup_of_same_name_both_seen() -> None:
    calls: list[str] = []
    table = [EarlyParam("dup", lambda v: calls.append("early") or 0),
             Setup("dup=", lambda v: calls.append(f"setup {v}") or 0)]
    assert obsolete_checksetup("dup=1", table)  # no handler took it, but the early one counts
    assert calls == ["setup 1"]


def test_module_param_in_setup_pass() -> None:
    max_mem = module_param_long("test_kho", "max_mem", 8 * M)
    log = Log()
    after = parse_setup_params("test-kho.max-mem=0x100000 -- init=1 x", [], [max_mem], log)
    assert max_mem.name == "test_kho.max_mem"
    assert max_mem.value == 0x100000
    assert after == "init=1 x"
    assert log.lines == []


def test_module_param_failure_keeps_value_logs_and_drops_init_args() -> None:
    max_mem = module_param_long("test_kho", "max_mem", 8 * M)
    log = Log()
    after = parse_setup_params("test_kho.max_mem=16M test_kho.max_mem -- single", [], [max_mem], log)
    assert max_mem.value == 8 * M
    assert log.texts == ["Booting kernel: `16M' invalid for parameter `test_kho.max_mem'",
                         "Booting kernel: `' invalid for parameter `test_kho.max_mem'"]
    assert after is None  # the kernel then skips "Setting init args"


def test_module_param_after_dashes_is_not_parsed() -> None:
    max_mem = module_param_long("test_kho", "max_mem", 8 * M)
    after = parse_setup_params("-- test_kho.max_mem=1", [], [max_mem], Log())
    assert max_mem.value == 8 * M
    assert after == "test_kho.max_mem=1"


@pytest.mark.parametrize("val, expect", [
    ("4194304", 4 * M), ("0x400000", 4 * M), ("020", 16), ("-1", -1), ("+3", 3), ("7\n", 7),
])
def test_param_set_long(val: str, expect: int) -> None:
    assert param_set_long(val) == expect


@pytest.mark.parametrize("val, code", [
    ("8M", errno.EINVAL), ("", errno.EINVAL), ("1 ", errno.EINVAL),
    ("9223372036854775808", errno.ERANGE),
])
def test_param_set_long_errors(val: str, code: int) -> None:
    assert errno_of(param_set_long, val) == code


# ---------------------------------------------------------------- kho=


@pytest.mark.parametrize("p, expect", [
    ("1", True), ("y", True), ("Y", True), ("t", True), ("T", True), ("on", True), ("On", True),
    ("yes", True), ("onion", True), ("0", False), ("n", False), ("N", False), ("f", False),
    ("F", False), ("off", False), ("of", False), ("no", False),
])
def test_kho_parse_enable(p: str, expect: bool) -> None:
    assert kho_parse_enable(p) is expect


@pytest.mark.parametrize("p", [None, "", "o", "ox", "2", " on", "enable"])
def test_kho_parse_enable_einval(p: str | None) -> None:
    assert errno_of(kho_parse_enable, p) == errno.EINVAL


# ---------------------------------------------------------------- kho_scratch=


@pytest.mark.parametrize("version", ["6.16", "6.17", "6.18"])
@pytest.mark.parametrize("p, scale, message", [
    ("30%", 30, "KHO: scratch scale is 30%"),
    ("0%", 0, "KHO: scratch scale is 0%"),
    ("+5%", 5, "KHO: scratch scale is 5%"),
    ("010%", 10, "KHO: scratch scale is 10%"),         # base 10: no octal
    ("0000000030%", 30, "KHO: scratch scale is 30%"),  # exactly 10 characters before %
    ("4294967295%", 4294967295, "KHO: scratch scale is -1%"),  # printed with %d
    ("2147483648%", 2147483648, "KHO: scratch scale is -2147483648%"),
])
def test_kho_scratch_scale(version: str, p: str, scale: int, message: str) -> None:
    log = Log()
    assert kho_parse_scratch_size(p, version, log) == KhoScratchScale(scale)
    assert log.lines == [(message, LOGLEVEL_NOTICE)]


@pytest.mark.parametrize("version", ["6.16", "6.18"])
@pytest.mark.parametrize("p, code", [
    (None, errno.EINVAL), ("", errno.EINVAL),
    ("%", errno.EINVAL),
    ("00000000030%", errno.EINVAL),   # 11 characters before %
    ("4294967296%", errno.ERANGE),
    ("12345678901%", errno.EINVAL),   # too long beats out of range
    ("0x10%", errno.EINVAL), ("10%%", errno.EINVAL), ("-1%", errno.EINVAL), (" 5%", errno.EINVAL),
    ("1G,2G,3%", errno.EINVAL),       # a final % always selects the scale form
    ("1M", errno.EINVAL), ("1M,1M", errno.EINVAL), ("1M,1M,", errno.EINVAL),
    ("1M;1M;1M", errno.EINVAL), ("1M,,1M", errno.EINVAL), (",1M,1M", errno.EINVAL),
    ("0,0,0", errno.EINVAL), ("x", errno.EINVAL),
])
def test_kho_scratch_errors(version: str, p: str | None, code: int) -> None:
    log = Log()
    assert errno_of(kho_parse_scratch_size, p, version, log) == code
    assert log.lines == []


@pytest.mark.parametrize("p, sizes, message", [
    ("16M,512M,256M", (16 * M, 512 * M, 256 * M),
     "KHO: scratch areas: lowmem: 16MiB global: 512MiB pernode: 256MiB"),
    ("1K,0x100000,3G", (K, M, 3 * G), "KHO: scratch areas: lowmem: 0MiB global: 1MiB pernode: 3072MiB"),
    ("1e,1p,1t", (1 << 60, 1 << 50, 1 << 40),
     "KHO: scratch areas: lowmem: 1099511627776MiB global: 1073741824MiB pernode: 1048576MiB"),
])
def test_kho_scratch_sizes_all_versions(p: str, sizes: tuple[int, int, int], message: str) -> None:
    for version in ("6.16", "6.17", "6.18"):
        log = Log()
        assert kho_parse_scratch_size(p, version, log) == KhoScratchSizes(*sizes)
        assert log.lines == [(message, LOGLEVEL_NOTICE)]


@pytest.mark.parametrize("p, sizes_618", [
    ("256M,512M,512Mfoobar", None),               # 6.16 ignores the tail, 6.18 rejects it
    ("1M,1M,1M,1M", None),
    ("0,1G,1G", (0, G, G)),                       # zeros: rejected by 6.16, fine in 6.18
    ("1G,0,0", (G, 0, 0)),
    ("k,1M,1M", (0, M, M)),                       # no digits but a suffix: consumed, so 0
    ("16E,1M,1M", (0, M, M)),                     # 16E wraps to 0
    ("8E,4E,4E", None),                           # 6.16 fine; 6.18's 64-bit total wraps to 0
])
def test_kho_scratch_616_vs_618(p: str, sizes_618: tuple[int, int, int] | None) -> None:
    results = {}
    for version in ("6.16", "6.17", "6.18", "6.19"):
        try:
            results[version] = kho_parse_scratch_size(p, version, Log())
        except OSError as e:
            assert e.errno == errno.EINVAL
            results[version] = None
    assert results["6.17"] == results["6.16"]
    assert results["6.19"] == results["6.18"]
    assert results["6.18"] == (None if sizes_618 is None else KhoScratchSizes(*sizes_618))
    assert (results["6.16"] is None) == (sizes_618 is not None)


def test_kho_scratch_616_keeps_sizes_before_trailing_text() -> None:
    assert kho_parse_scratch_size("1M,2M,3Mjunk", "6.16", Log()) == KhoScratchSizes(M, 2 * M, 3 * M)


# ---------------------------------------------------------------- reserve_mem=


@pytest.mark.parametrize("p, expect", [
    ("64m:4k:n1", (64 * M, 4 * K, "n1")),
    ("0x1000:0x2000:x", (4 * K, 8 * K, "x")),
    ("010:128:x", (8, 128, "x")),                   # octal size
    ("1M:64:x", (M, 64, "x")),
    ("1M:63:x", (M, 64, "x")),                      # raised to SMP_CACHE_BYTES
    ("1M:0:x", (M, 64, "x")),
    ("1M::x", (M, 64, "x")),                        # empty align parses as 0
    ("1M:k:x", (M, 64, "x")),                       # so does a bare suffix
    ("1M:4K:a:b", (M, 4 * K, "a:b")),               # the name is everything after
    ("1M:4K:a b", (M, 4 * K, "a b")),
    ("1M:4K:123456789012345", (M, 4 * K, "123456789012345")),  # 15 characters fit
    ("1M:4K:\x1c", (M, 4 * K, "\x1c")),             # not a kernel space
    ("1M:4K: x ", (M, 4 * K, " x ")),
])
def test_reserve_mem_ok(p: str, expect: tuple[int, int, str]) -> None:
    assert reserve_mem_parse(p, []) == expect


@pytest.mark.parametrize("p", [
    None, "", "0:4K:x", "0x0:4K:x", "k:4K:x", "x:4K:x", ":4K:x", "16E:4K:x",
    "1M", "1M4K:x", "1M:4K", "1M:4K;x", "1M:4K:", "1M:4K:1234567890123456",
    "1M:4K: ", "1M:4K:\t\n\xa0",
])
def test_reserve_mem_einval(p: str | None) -> None:
    assert errno_of(reserve_mem_parse, p, []) == errno.EINVAL


def test_reserve_mem_duplicate_name() -> None:
    assert errno_of(reserve_mem_parse, "1M:4K:a", [("a", M)]) == errno.EBUSY
    assert reserve_mem_parse("1M:4K:a", [("a", 0)]) == (M, 4 * K, "a")  # released: name free
    assert reserve_mem_parse("1M:4K:A", [("a", M)]) == (M, 4 * K, "A")  # strcmp, not parameq
    assert reserve_mem_parse("1M:4K:a-b", [("a_b", M)]) == (M, 4 * K, "a-b")


def test_reserve_mem_table_full() -> None:
    table = [(f"n{i}", M) for i in range(7)]
    assert reserve_mem_parse("1M:4K:x", table) == (M, 4 * K, "x")
    table.append(("n7", 0))  # a released entry still takes a slot
    assert errno_of(reserve_mem_parse, "1M:4K:x", table) == errno.EBUSY


def test_reserve_mem_check_order() -> None:
    full = [(f"n{i}", M) for i in range(8)]
    assert errno_of(reserve_mem_parse, None, full) == errno.EINVAL       # NULL before full
    assert errno_of(reserve_mem_parse, "0:4K:n0", full) == errno.EBUSY   # full before size
    assert errno_of(reserve_mem_parse, "1M:4K:", full) == errno.EBUSY    # full before name
    one = [("n0", M)]
    assert errno_of(reserve_mem_parse, "0:4K:n0", one) == errno.EINVAL   # size before duplicate
    assert errno_of(reserve_mem_parse, "1M:4K", one) == errno.EINVAL     # colon before duplicate
    long_dup = [("123456789012345x", M)]
    assert errno_of(reserve_mem_parse, "1M:4K:123456789012345x", long_dup) == errno.EINVAL
    assert errno_of(reserve_mem_parse, "1M:4K:n0", full[:7] + [("n0", 0)]) == errno.EBUSY


def test_reserve_mem_through_setup_pass_is_silent() -> None:
    got: list[object] = []

    def reserve_mem(p: str | None) -> int:
        try:
            got.append(reserve_mem_parse(p, []))
        except OSError as e:
            got.append(e.errno)
            return -e.errno
        return 1

    log = Log()
    parse_setup_params('reserve_mem=64m:4k:n1 reserve_mem=0:4k:n2 "reserve_mem=1M:4K:a b"',
                       [Setup("reserve_mem=", reserve_mem)], [], log)
    assert got == [(64 * M, 4 * K, "n1"), errno.EINVAL, (M, 4 * K, "a b")]
    assert log.lines == []


# ---------------------------------------------------------------- memblock= and mem=


@pytest.mark.parametrize("p, expect", [
    ("debug", True), ("nodebug", True), ("xdebugx", True), ("DEBUG", False), ("", False),
    (None, False), ("deb", False),
])
def test_early_memblock(p: str | None, expect: bool) -> None:
    assert early_memblock(p) is expect


@pytest.mark.parametrize("p, limit", [
    ("1G", G), ("4096", 4096), ("0x80000000", 2 * G), ("1Gfoo", G), ("512m", 512 * M),
    # 0 and unparsable sizes come back as 0: the kernel sets userdef before rejecting them.
    ("nopentium1", 0), ("0", 0), ("foo", 0), ("-1", 0), ("16E", 0), ("", 0),
    (None, None),
])
def test_parse_memopt(p: str | None, limit: int | None) -> None:
    log = Log()
    if limit is None:
        assert errno_of(parse_memopt, p, log) == errno.EINVAL
    else:
        assert parse_memopt(p, log) == limit
    assert log.lines == []


def test_parse_memopt_nopentium_warns_on_64_bit() -> None:
    log = Log()
    assert errno_of(parse_memopt, "nopentium", log) == errno.EINVAL
    assert log.lines == [("mem=nopentium ignored! (only supported on x86_32)", LOGLEVEL_WARNING)]
