"""``python -m helios.cli``: the same as the ``helios`` command."""
from helios.cli.app import app

app()
