"""lib/ and scripts/dtc/libfdt/: the kernel's library code."""
