"""arch/x86/lib/csum-partial_64.c (Linux 6.16): x86_64's csum_partial, not lib/checksum.c's 16-bit one."""

from sim.sizes import PAGE_SIZE

_U64_ONES = (1 << 64) - 1


def csum_partial(data: bytes, wsum: int) -> int:
    """The buffer's little-endian u64 words (the tail zero-padded) added to wsum with end-around
    carry, then the 64-bit sum folded to 32 bits the same way.  2**64 is 1 modulo 2**64 - 1, so
    that sum is the buffer read as one little-endian integer, modulo 2**64 - 1, represented as a
    ones'-complement adder does: 0 only when every input was 0.
    """
    view = memoryview(data)
    # Page-sized pieces: each is 1 modulo 2**64 - 1 apart, and they convert faster than one integer.
    total = wsum + sum([int.from_bytes(view[i:i + PAGE_SIZE], "little")
                        for i in range(0, len(data), PAGE_SIZE)])
    temp64 = total % _U64_ONES or (_U64_ONES if total else 0)
    folded = (temp64 >> 32) + (temp64 & 0xFFFFFFFF)
    return (folded + (folded >> 32)) & 0xFFFFFFFF
