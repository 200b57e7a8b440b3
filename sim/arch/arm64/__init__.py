"""arch/arm64: the arm64 kernel (kernel/, boot/) and QEMU's virt board it boots on (virt.py)."""
