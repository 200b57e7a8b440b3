"""kernel/: kexec (kexec_file, machine_kexec), Kexec HandOver, printk, reboot, modules."""
