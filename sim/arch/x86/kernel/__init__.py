"""arch/x86/kernel/: setup_arch and kexec for x86_64."""
