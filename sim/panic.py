"""panic(): the simulated kernel stops; the exception carries the panic message."""


class KernelPanic(RuntimeError):
    """Raised where Linux would call panic(); str() is the message after 'Kernel panic - not syncing: '."""
