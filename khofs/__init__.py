"""khofs: the FUSE front end and command line of the simulated KHO machine (see sim/ for the kernel)."""
