"""The ``helios`` command line: parse arguments and files into the typed config, call ``flows/``, print results."""
from helios.cli.app import app

__all__ = ["app"]
