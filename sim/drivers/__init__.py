"""drivers/: the few drivers memblock and KHO see at boot."""
