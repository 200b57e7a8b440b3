"""Kernel size constants and the alignment helpers every layer shares (sizes.h, align.h, pfn.h)."""

SZ_1K = 1 << 10
SZ_4K = 4 << 10
SZ_64K = 64 << 10
SZ_1M = 1 << 20
SZ_2M = 2 << 20
SZ_16M = 16 << 20
SZ_32M = 32 << 20
SZ_128M = 128 << 20
SZ_1G = 1 << 30
SZ_2G = 2 << 30
SZ_4G = 4 << 30

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
MAX_PAGE_ORDER = 10
NR_PAGE_ORDERS = MAX_PAGE_ORDER + 1
# x86_64 pageblock (2 MiB); KHO rounds scratch to this (CMA_MIN_ALIGNMENT_BYTES).
pageblock_order = 9
CMA_MIN_ALIGNMENT_BYTES = PAGE_SIZE << pageblock_order

# x86_64 L1_CACHE_BYTES: memblock's default alignment, and reserve_mem='s minimum.
SMP_CACHE_BYTES = 64

U64_MAX = (1 << 64) - 1
PHYS_ADDR_MAX = U64_MAX
ULONG_MAX = U64_MAX


def round_up(x: int, align: int) -> int:
    """round_up() for any alignment (the kernel's needs a power of two; ours does not care)."""
    return (x + align - 1) // align * align


def round_down(x: int, align: int) -> int:
    return x // align * align


def PAGE_ALIGN(x: int) -> int:
    return round_up(x, PAGE_SIZE)


def PFN_UP(x: int) -> int:
    return (x + PAGE_SIZE - 1) >> PAGE_SHIFT


def PFN_DOWN(x: int) -> int:
    return x >> PAGE_SHIFT


def PHYS_PFN(x: int) -> int:
    return x >> PAGE_SHIFT


def PFN_PHYS(pfn: int) -> int:
    return pfn << PAGE_SHIFT


def get_order(size: int) -> int:
    """Smallest order whose block of pages holds size bytes (get_order())."""
    order = 0
    while (PAGE_SIZE << order) < size:
        order += 1
    return order


def ilog2(x: int) -> int:
    return x.bit_length() - 1


def count_trailing_zeros(x: int) -> int:
    """__ffs(); x == 0 has no set bit, and like the kernel's callers we report 64."""
    return (x & -x).bit_length() - 1 if x else 64
