"""Refine's re-inference through the infer machinery: a manifest subset, the adapted model's own identity in its own
run directory, and `kill -9` during refine then rerun, which resumes from the committed shards and the kept
adaptation and ends with the answers of an uninterrupted run."""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from flows.refine_infer import write_subset
from helios.data.corruptions import apply_corruption
from helios.models.mnist_data import load_split
from tasks.infer.scan import read_manifest, scan_input
from tests.flows.test_infer_flow import committed
from tests.tasks.refine.conftest import write_pngs

RUNNER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from flows.infer import infer_flow
    from flows.predictions import read_predictions
    from flows.refine_infer import AdaptedInfer
    from helios.catalog import RunCatalog
    from helios.models import ModelConfig, load_model
    from tasks.infer.config import InferConfig
    from tasks.infer.model_ref import make_model_ref
    from tasks.infer.scan import scan_input
    from tasks.refine.config import RefineConfig
    from tasks.refine.context import RefineContext
    from tasks.refine.core import refine_predictions

    root, out, onnx = sys.argv[1:4]
    catalog, model, cpu = RunCatalog(Path(out)), ModelConfig(name="mnist-cnn"), ("CPUExecutionProvider",)
    scan = scan_input(root, Path(out))
    cfg = InferConfig(shard_size=100, batch_size=32, workers=1)
    inferred = infer_flow(cfg, make_model_ref(model, onnx, intra_op_threads=1), str(scan.manifest_path), out, {})
    reinfer = AdaptedInfer(cfg, model, str(catalog.manifest), str(catalog.refine_infer), {}, 32, cpu, 1)
    settings = RefineConfig(adapt_max_items=128, tent_epochs=1, max_rounds=1, methods=("bn-adapt", "tent"))
    ctx = RefineContext(settings, load_model(model), Path(onnx), catalog.refine_dir, cpu, 1, reinfer)
    frame, summary = refine_predictions(ctx, read_predictions(inferred.predictions_path), Path(root))
    frame[["path", "label", "confidence", "refine_method"]].to_parquet(Path(out) / "refined.parquet")
    print(json.dumps(summary["adaptation"]))
""")


def glass_digits(root: Path, n: int) -> None:
    _, _, x, y = load_split()
    images = apply_corruption("glass_blur", np.tile(x, (n // len(x) + 1, 1, 1))[:n], np.random.default_rng(2))
    write_pngs(root, images, np.tile(y, n // len(y) + 1)[:n])


def test_a_subset_of_the_manifest_keeps_its_root_and_only_the_paths_asked(tmp_path):
    glass_digits(tmp_path / "in", 40)
    scan = scan_input(str(tmp_path / "in"), tmp_path / "run")
    table, root = read_manifest(scan.manifest_path)
    wanted = table["path"].to_pylist()[5:12]
    out = write_subset(scan.manifest_path, wanted, tmp_path / "sub" / "manifest.parquet")
    subset, sub_root = read_manifest(out)
    assert sub_root == root and subset["path"].to_pylist() == wanted
    assert subset.schema.equals(table.schema)


def reused(log: str) -> list[int]:
    """The infer subflow's tally lines, in order: how many files each call took from its index."""
    return [int(m) for m in re.findall(r"\d+ files: \d+ to infer in \d+ shards, (\d+) reused", log)]


def test_kill_9_during_refine_then_rerun_resumes_and_matches_an_uninterrupted_run(prefect_harness, tmp_path,
                                                                                   mnist_ref):
    from prefect.settings import PREFECT_API_URL

    root, onnx = tmp_path / "in", mnist_ref.onnx_path
    glass_digits(root, 3000)
    script = tmp_path / "run_refine.py"
    script.write_text(RUNNER)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(Path.cwd())}

    def args(out: Path) -> list[str]:
        return [sys.executable, str(script), str(root), str(out), str(onnx)]

    out = tmp_path / "run"
    proc = subprocess.Popen(args(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while committed(out / "refine-infer") < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "refine finished before it could be killed: make the corpus bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = committed(out / "refine-infer")
    assert 1 <= killed_at < 30

    done = subprocess.run(args(out), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    adaptation = json.loads(done.stdout.strip().splitlines()[-1])
    assert adaptation["kept"] and adaptation["reused_steps"] == 1 and adaptation["run_steps"] == 0
    assert reused(done.stdout + done.stderr)[-1] >= killed_at * 100  # the refine call's committed shards

    fresh = subprocess.run(args(tmp_path / "fresh"), env=env, capture_output=True, text=True, timeout=600)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    resumed = pd.read_parquet(out / "refined.parquet").set_index("path")
    expected = pd.read_parquet(tmp_path / "fresh" / "refined.parquet").set_index("path")
    assert len(resumed) == 3000 and resumed.equals(expected.loc[resumed.index])
    answers = pq.read_table(out / "refine-infer" / "predictions.parquet")["path"].to_pylist()
    assert len(answers) == len(set(answers)) == 3000  # every file once: nothing lost, nothing twice


def test_an_unchanged_pipeline_rerun_replays_refine_from_what_it_kept(prefect_harness, tmp_path):
    from flows.pipeline import helios_pipeline
    from helios.cli.config_file import load_config

    cfg = load_config(None, [f"out={tmp_path / 'run'}", "demo.n=300", "optimize.variants=[fp32]",
                             "optimize.eval_samples=64", "optimize.latency_runs=5"])
    first = helios_pipeline(cfg)
    before = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    second = helios_pipeline(cfg)
    after = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    refined = json.loads((tmp_path / "run" / "report.json").read_text())["refine"]
    assert second["reused"] and refined["adaptation"]["kept"] and refined["adaptation"]["run_steps"] == 0
    assert refined["adaptation"]["reused_steps"] >= 1 and first["accuracy"] == second["accuracy"]
    # the demo mixes clean and shifted digits: one pass of the routed graph through the infer machinery placed
    # them and answered round 1 of both groups (its embeddings carry each file's group)
    assert refined["mixture"]["placed_while_answering"]
    assert (tmp_path / "run" / "refine-infer" / "index.sqlite").is_file()
    for column in ("label", "refined_label", "refine_method", "ttt_label", "tta_label"):
        assert before[column].equals(after[column]), column
