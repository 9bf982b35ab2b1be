"""The report's figures kept between runs in one run directory: a figure whose data, plotting code and matplotlib
are unchanged is read back, not drawn again, and when every figure is kept matplotlib is never imported (1 s)."""
from __future__ import annotations

import hashlib
import json
from importlib.metadata import version
from pathlib import Path
from typing import Callable

PLOTS = Path(__file__).with_name("plots.py")


def figure_key(name: str, data, code: bytes) -> str:
    """``name-<hash>`` of the figure's data, the plotting code (``code``) and the matplotlib version."""
    digest = hashlib.sha256(json.dumps([name, data, version("matplotlib")], sort_keys=True, default=str).encode())
    digest.update(code)
    return f"{name}-{digest.hexdigest()[:24]}"


def cached_figures(figures: dict, folder: Path, draw: Callable[[dict], dict[str, str]]) -> dict[str, str]:
    """Base64 PNG of each figure by name: the kept ones from ``folder``, the others from ``draw`` (then kept there);
    files of figures no longer drawn are removed."""
    code = PLOTS.read_bytes()
    keys = {name: figure_key(name, data, code) for name, data in figures.items()}
    out = {name: (folder / f"{key}.b64").read_text() for name, key in keys.items() if (folder / f"{key}.b64").is_file()}
    missing = {name: data for name, data in figures.items() if name not in out}
    if missing:
        drawn = draw(missing)
        folder.mkdir(parents=True, exist_ok=True)
        for name, image in drawn.items():
            (folder / f"{keys[name]}.b64").write_text(image)
        out.update(drawn)
    wanted = {f"{key}.b64" for key in keys.values()}
    for path in folder.glob("*.b64"):  # no folder: nothing to remove
        if path.name not in wanted:
            path.unlink(missing_ok=True)
    return {name: out[name] for name in figures if name in out}
