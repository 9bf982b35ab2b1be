"""The report's figures are kept per run directory: unchanged ones are read back, changed ones drawn again (real
matplotlib), and files of figures no longer drawn are removed."""
import base64

from tasks.report.core import draw_figures
from tasks.report.figure_cache import cached_figures

STAGES = {"bars": [{"stage": "infer", "start": 0.0, "seconds": 2.0}], "total_s": 2.0}


def test_unchanged_figures_are_read_back_and_changed_ones_drawn_again(tmp_path):
    drawn: list[str] = []

    def draw(figures):
        drawn.extend(figures)
        return draw_figures(figures)

    first = cached_figures({"stages": STAGES}, tmp_path, draw)
    assert base64.b64decode(first["stages"])[:8] == b"\x89PNG\r\n\x1a\n" and drawn == ["stages"]
    again = cached_figures({"stages": STAGES}, tmp_path, draw)
    assert again == first and drawn == ["stages"]  # not drawn a second time
    slower = {**STAGES, "total_s": 3.0, "bars": [{"stage": "infer", "start": 0.0, "seconds": 3.0}]}
    changed = cached_figures({"stages": slower}, tmp_path, draw)
    assert drawn == ["stages", "stages"] and changed["stages"] != first["stages"]
    assert len(list(tmp_path.glob("*.b64"))) == 1  # the old drawing is gone
