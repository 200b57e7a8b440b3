"""drivers/of/: the device tree hand-off (early scan, and the kexec DT with KHO's /chosen entries)."""
