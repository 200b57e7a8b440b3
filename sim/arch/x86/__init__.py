"""arch/x86: the x86_64 kernel (kernel/setup.py) and the q35 board it boots on (q35.py)."""
