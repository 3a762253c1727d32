"""The lmforge version (a leaf module: model directories and adapters record it)."""

__version__ = "0.1.0"
