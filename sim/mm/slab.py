"""mm/slub.c kmalloc()/kfree(): small kernel objects carved out of unmovable pages.

KHO's tracker bitmaps and serialized chunks are plain kmalloc memory that is
*not* preserved; the next kernel reads them from scratch-only boot and then
lets them be reused.  Modelling where they live keeps that property visible.
"""

from sim.mm.page_alloc import Folio, PageAllocator
from sim.physmem import PhysMem
from sim.sizes import PAGE_SIZE, get_order


class Slab:
    """Power-of-two size classes up to a page; larger requests take whole pages."""

    def __init__(self, page_alloc: PageAllocator, physmem: PhysMem) -> None:
        self._page_alloc = page_alloc
        self._physmem = physmem
        self._free_objs: dict[int, list[int]] = {}       # size class -> free object addresses
        self._owner: dict[int, int] = {}                  # object address -> size class
        self._large: dict[int, Folio] = {}

    @staticmethod
    def _size_class(size: int) -> int:
        cls = 8
        while cls < size:
            cls <<= 1
        return cls

    def kmalloc(self, size: int) -> int:
        """Physical (= virtual) address of a new object, or 0 like a NULL return."""
        if size > PAGE_SIZE:
            folio = self._page_alloc.alloc_pages(get_order(size))
            if folio is None:
                return 0
            self._large[folio.phys] = folio
            return folio.phys
        cls = self._size_class(size)
        free = self._free_objs.setdefault(cls, [])
        if not free:
            folio = self._page_alloc.alloc_pages(0)
            if folio is None:
                return 0
            free.extend(range(folio.phys + PAGE_SIZE - cls, folio.phys - 1, -cls))
        addr = free.pop()
        self._owner[addr] = cls
        return addr

    def kzalloc(self, size: int) -> int:
        addr = self.kmalloc(size)
        if addr:
            self._physmem.fill(addr, size, 0)
        return addr

    def kfree(self, addr: int) -> None:
        if not addr:
            return
        folio = self._large.pop(addr, None)
        if folio is not None:
            self._page_alloc.free_folio(folio)
            return
        cls = self._owner.pop(addr)
        # Objects go back to their class; pages stay with the slab, as a real cache keeps them.
        self._free_objs[cls].append(addr)
