"""fs/: debugfs."""
