"""init/: start_kernel and the kernel's life from boot to initcalls."""
