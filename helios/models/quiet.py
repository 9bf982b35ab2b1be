"""Loading Hugging Face weights without transformers' console output (load report, progress bars, warnings)."""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report, progress bars and warnings for the block, then restore them.

    Helios checks what a load left missing or unused itself (``helios.models.hf.load_pretrained``) and says so in
    one line; the report's table, printed by every stage that builds the module, said it twice per run."""
    from transformers.utils import logging as hf_logging

    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()
