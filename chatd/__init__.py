"""chatd: a small, fast, hardened chat daemon on Twisted."""

__version__ = "0.1.0"
