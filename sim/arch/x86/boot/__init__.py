"""arch/x86/boot/: the bzImage the simulated x86 kernels boot from."""
