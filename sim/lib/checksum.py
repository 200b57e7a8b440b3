"""lib/checksum.c (Linux 6.16): the generic csum_partial, which arm64 uses with its own do_csum.

do_csum() is the ones'-complement sum of the buffer's 16-bit little-endian words (an odd last
byte counts as a low byte), folded to 16 bits; csum_partial() adds the running 32-bit sum with
end-around carry.  2**16 is 1 modulo 2**16 - 1, so the word sum is the buffer read as one
little-endian integer modulo 2**16 - 1, in ones'-complement form: 0 only for an all-zero buffer.
Buffers here start page-aligned, so do_csum's odd-address byte swap never applies.
"""

from sim.sizes import PAGE_SIZE

_U16_ONES = 0xFFFF


def do_csum(data: bytes) -> int:
    view = memoryview(data)
    total = sum([int.from_bytes(view[i:i + PAGE_SIZE], "little") for i in range(0, len(data), PAGE_SIZE)])
    return total % _U16_ONES or (_U16_ONES if total else 0)


def csum_partial(data: bytes, wsum: int) -> int:
    result = (do_csum(data) + wsum) & 0xFFFFFFFF
    if wsum > result:
        result += 1
    return result
