"""lanworker: turn JSON command messages into real work."""

__version__ = "0.1.0"
