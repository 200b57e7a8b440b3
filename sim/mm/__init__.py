"""mm/: memblock, the page allocator, slab and reserve_mem."""
