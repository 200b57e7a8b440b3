"""arch/arm64/boot/: the Image the simulated arm64 kernels boot from."""
