"""arch/x86/lib/: x86_64's own library routines."""
