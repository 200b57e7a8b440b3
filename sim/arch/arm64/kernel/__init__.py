"""arch/arm64/kernel/: setup_arch, the Image loader and machine_kexec."""
