"""lib/test_kho's checksum: x86_64's csum_partial (arch/x86/lib/csum-partial_64.c, Linux 6.16).

The reference below spells the kernel's assembly out step by step — the 40-byte case, the
64-byte loop with its second accumulator and carry counter, the 32/16/8-byte steps, the
zero-padded tail, each adc chain ending in `adcq $0` — and csum_partial must agree with it
on any buffer and starting sum, including sums that wrap to all ones.
"""

import random

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sim.arch.x86.lib.csum_partial_64 import csum_partial
from sim.lib.checksum import csum_partial as generic_csum_partial

U64 = (1 << 64) - 1


def adc(a: int, b: int, carry: int) -> tuple[int, int]:
    total = a + b + carry
    return total & U64, total >> 64


def chain(res: int, words: list[int]) -> int:
    """addq w0; adcq w1 ...; adcq $0: a run of words added with the carry fed back once at the end."""
    carry = 0
    for w in words:
        res, carry = adc(res, w, carry)
    res, _ = adc(res, 0, carry)
    return res


def words(buf: bytes) -> list[int]:
    return [int.from_bytes(buf[i:i + 8], "little") for i in range(0, len(buf), 8)]


def reference(buf: bytes, wsum: int) -> int:
    temp64, n, pos = wsum, len(buf), 0
    if n == 40:
        temp64 = chain(temp64, words(buf))
    else:
        if n >= 64:
            accum = carries = 0
            n -= 64
            while True:
                w = words(buf[pos:pos + 64])
                carry = 0
                for x in w[:4]:
                    temp64, carry = adc(temp64, x, carry)
                carries += carry
                carry = 0
                for x in w[4:]:
                    accum, carry = adc(accum, x, carry)
                carries += carry
                pos += 64
                n -= 64
                if n < 0:
                    break
            temp64 = chain(temp64, [accum, carries])
            n += 64
        for step in (32, 16, 8):
            if n & step:
                temp64 = chain(temp64, words(buf[pos:pos + step]))
                pos += step
        if n & 7:
            temp64 = chain(temp64, [int.from_bytes(buf[pos:pos + (n & 7)], "little")])
    rotated = (temp64 >> 32) | (temp64 << 32) & U64
    return ((temp64 + rotated) & U64) >> 32


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 0xFFFFFFFF))
@example(b"", 0)
@example(b"\0" * 64, 0)
@example(b"\xff" * 8, 0)                       # the sum is all ones, not zero
@example(b"\xff" * 128, 0xFFFFFFFF)
@example(b"\x01" + b"\0" * 7 + b"\xfe" + b"\xff" * 7, 0)
@example(bytes(range(40)), 7)
def test_csum_partial_is_the_kernel_s_x86_64_assembly(buf: bytes, wsum: int) -> None:
    assert csum_partial(buf, wsum) == reference(buf, wsum)


@settings(max_examples=20, deadline=None)
@given(st.integers(4096, 3 * 4096 + 13), st.integers(0, 2**32), st.integers(0, 0xFFFFFFFF))
def test_csum_partial_over_page_boundaries(length: int, seed: int, wsum: int) -> None:
    """Expect the page-by-page conversion to change nothing where pieces meet."""
    buf = random.Random(seed).randbytes(length)
    assert csum_partial(buf, wsum) == reference(buf, wsum)


def generic_reference(buf: bytes, wsum: int) -> int:
    """lib/checksum.c do_csum() as written (aligned buffer): 16-bit words summed into 32 bits with
    end-around carry, an odd last byte as the low byte, from32to16 twice; then csum_partial's add."""
    result = 0
    for i in range(0, len(buf) - 1, 2):
        result += buf[i] | buf[i + 1] << 8
        if result >> 32:
            result = (result & 0xFFFFFFFF) + 1
    if len(buf) & 1:
        result += buf[-1]
    for _ in range(2):
        result = (result & 0xFFFF) + (result >> 16)
    result = (result & 0xFFFF) + (result >> 16)
    total = (result + wsum) & 0xFFFFFFFF
    return total + 1 if wsum > total else total


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 0xFFFFFFFF))
@example(b"\xff\xff", 0)
@example(b"", 0xFFFFFFFF)
@example(b"\x01", 0xFFFFFFFF)
def test_generic_csum_partial_is_lib_checksum_c(buf: bytes, wsum: int) -> None:
    """arm64's csum_partial: lib/checksum.c with a 16-bit do_csum (arm64's do_csum gives the same sum)."""
    assert generic_csum_partial(buf, wsum) == generic_reference(buf, wsum)
