"""early_memremap() (mm/early_ioremap.c, x86): the boot-time window onto physical memory.

Boot code maps what a boot loader or an old kernel points it at through a few
fixmap slots, so the kernel refuses a zero size, a range that wraps, and more
than NR_FIX_BTMAPS pages in one mapping, each with a WARN_ON.  Anything else is
mapped: a range outside RAM reads what the bus answers there (all ones), and it
is the caller's checks that must notice.
"""

from sim.kernel.panic import warn
from sim.kernel.printk import Printk
from sim.physmem import PhysMem
from sim.sizes import PAGE_ALIGN, PAGE_SHIFT, PAGE_SIZE, U64_MAX

NR_FIX_BTMAPS = 64            # arch/x86/include/asm/fixmap.h: pages one slot maps
_BUS_IDLE = 0xFF              # what a read where no memory answers returns


def read_phys(physmem: PhysMem, phys: int, size: int) -> bytes:
    """The bytes a mapping of [phys, phys+size) shows: RAM where there is RAM, all ones past it."""
    inside = max(0, min(phys + size, physmem.size) - phys)
    head = physmem.read(phys, inside) if inside else b""
    return head + bytes([_BUS_IDLE]) * (size - inside)


def early_memremap(physmem: PhysMem, printk: Printk, phys_addr: int, size: int) -> bytes | None:
    """The mapped bytes, or None (after the kernel's WARN) where __early_ioremap refuses."""
    phys_addr &= U64_MAX
    size &= U64_MAX
    last_addr = phys_addr + size - 1
    if not size or last_addr > U64_MAX:
        warn(printk, "mm/early_ioremap.c:124", "__early_ioremap", pid=0)
        return None
    nrpages = (PAGE_ALIGN(last_addr + 1) - (phys_addr & ~(PAGE_SIZE - 1))) >> PAGE_SHIFT
    if nrpages > NR_FIX_BTMAPS:
        warn(printk, "mm/early_ioremap.c:139", "__early_ioremap", pid=0)
        return None
    return read_phys(physmem, phys_addr, size)
