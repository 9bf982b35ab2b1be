"""report.html as a person sees it: rendered by headless Chromium, every figure decoded, no console errors.

The screenshot is kept in test-artifacts/report.png (gitignored) for a human to look at.
"""
from __future__ import annotations

import json
import re
import struct
import subprocess
from pathlib import Path

import pytest

from tasks.report.config import ReportConfig
from tasks.report.core import build_report

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")

# Injected first into a copy of the page: records script errors, failed resource loads (capture phase catches
# <img> errors) and console.error calls, then on load writes what it saw onto <body> for --dump-dom to show.
PROBE = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(e.message || "failed to load " + (e.target.src || e.target.tagName).slice(0, 80)), true);
const __consoleError = console.error;
console.error = (...args) => { window.__errors.push(args.join(" ")); __consoleError(...args); };
window.addEventListener("load", () => {
  const images = [...document.images], body = document.body.dataset;
  body.images = images.length;
  body.decoded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  body.errors = window.__errors.join(" | ");
});
</script>"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=90)


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_report_renders_with_all_figures_and_no_console_errors(tmp_path, summary, run_dir):
    files = build_report(ReportConfig(), summary, run_dir)
    figures = len(json.loads(files.json.read_text())["figures"])
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    screenshot.unlink(missing_ok=True)

    shot = chromium(tmp_path, "--enable-logging=stderr", "--v=0", f"--screenshot={screenshot}",
                    "--window-size=1280,4000", files.html.resolve().as_uri())

    assert shot.returncode == 0, shot.stderr[-2000:]
    assert png_size(screenshot) == (1280, 4000)
    assert not re.findall(r"CONSOLE.*", shot.stderr), "the page logged to the console"

    probe = tmp_path / "probe.html"
    probe.write_text(files.html.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    dom = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())

    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body, f"no DOM dumped: {dom.stderr[-2000:]}"
    seen = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
    assert seen == {"images": str(figures), "decoded": str(figures), "errors": ""}
