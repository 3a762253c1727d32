"""Command line interface: one module per command, listed in :mod:`lmforge.cli.registry`;
:func:`lmforge.cli.main.main` parses, runs and maps errors to exit codes (docs/cli.md)."""
