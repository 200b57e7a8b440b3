"""The simulated machine: physical memory, memblock, the kernel and Kexec HandOver.

Nothing here knows about FUSE or argv; every file a shell user sees through the
mount is a plain Python call on these objects.
"""
