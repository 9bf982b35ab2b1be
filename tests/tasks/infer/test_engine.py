"""The engine: one session per process, batch halving on allocation failure, text bucketing."""
from __future__ import annotations

import subprocess
import sys

import numpy as np

from tasks.infer.engine import Engine, get_engine, is_allocation_failure
from tasks.infer.shard import ShardSettings, infer_shard
from tasks.infer.plan import plan_shards
from tasks.infer.scan import read_manifest, scan_input


class TightMemoryEngine(Engine):
    """The real engine on a machine where batches above ``limit`` cannot be allocated."""

    limit = 8

    def run(self, feeds, extra=()):
        if len(next(iter(feeds.values()))) > self.limit:
            raise MemoryError("simulated: not enough memory for this batch")
        return super().run(feeds, extra)


def test_allocation_failures_halve_the_batch_and_keep_every_file(mnist_ref):
    real = get_engine(mnist_ref)
    engine = TightMemoryEngine(real.adapter, real.session)
    feeds = {"image": np.random.default_rng(0).normal(size=(50, 1, 28, 28)).astype(np.float32)}
    logits = engine.predict(feeds)
    assert logits.shape == (50, 10)
    np.testing.assert_allclose(logits, real.run(feeds), rtol=1e-4, atol=1e-4)
    assert engine.max_batch == 6 and engine.batch_size(64) == 6  # remembered: 50 -> 25 -> 12 -> 6


def test_other_errors_are_not_retried(mnist_ref):
    engine = get_engine(mnist_ref)
    try:
        engine.predict({"image": np.zeros((4, 3, 28, 28), np.float32)})
    except Exception as exc:  # ORT's own error class
        assert not is_allocation_failure(exc)
    else:
        raise AssertionError("a wrong input shape must fail")


def test_session_is_built_once_per_process(mnist_ref):
    assert get_engine(mnist_ref) is get_engine(mnist_ref)


def test_cuda_oom_message_counts_as_allocation_failure():
    assert is_allocation_failure(RuntimeError("CUDA failure 2: out of memory ; GPU=0"))
    assert is_allocation_failure(RuntimeError("Failed to allocate memory for requested buffer of size 123"))
    assert not is_allocation_failure(RuntimeError("Invalid rank for input: image"))


def test_text_batches_are_bucketed_by_length(tmp_path, minilm_ref):
    root = tmp_path / "in"
    root.mkdir()
    rng = np.random.default_rng(0)
    lengths = rng.choice(np.arange(3, 300), size=40, replace=False)  # distinct contents
    for i, n in enumerate(lengths):
        (root / f"{i:02d}.txt").write_text(" ".join(["market"] * int(n)))
    scan = scan_input(str(root), tmp_path / "run")
    manifest, src = read_manifest(scan.manifest_path)
    [spec] = plan_shards(manifest, src, set(), minilm_ref.identity, 1000, tmp_path / "run")
    engine = get_engine(minilm_ref)
    items = [engine.adapter.preprocess((root / f"{i:02d}.txt").read_bytes()) for i in range(40)]
    widths = [feeds["input_ids"].shape[1] for _, feeds in engine.batches(list(range(40)), items, 8)]
    assert widths == sorted(widths) and widths[-1] == 256  # truncated at the model's max length
    outcome = infer_shard(spec, minilm_ref, ShardSettings(batch_size=8))
    assert outcome.ok == 40 and sum(outcome.batch_sizes) == 40


def _digit_shard(tmp_path, mnist_ref, n=60):
    from PIL import Image

    root = tmp_path / "in"
    root.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L").save(root / f"{i:03d}.png")
    (root / "broken.png").write_bytes(b"not a png")
    scan = scan_input(str(root), tmp_path / "run")
    manifest, src = read_manifest(scan.manifest_path)
    [spec] = plan_shards(manifest, src, set(), mnist_ref.identity, 1000, tmp_path / "run")
    return spec


def test_several_runners_share_a_shard_and_give_the_same_rows(tmp_path, mnist_ref):
    import pyarrow.parquet as pq

    spec = _digit_shard(tmp_path, mnist_ref)
    one = infer_shard(spec, mnist_ref, ShardSettings(batch_size=4, runners=1))
    first = pq.read_table(spec.out_path).sort_by("content_hash")
    three = infer_shard(spec, mnist_ref, ShardSettings(batch_size=4, runners=3))
    again = pq.read_table(spec.out_path).sort_by("content_hash")
    assert (one.ok, one.error) == (three.ok, three.error) == (60, 1)
    assert sum(three.batch_sizes) == 60 and len(three.batch_seconds) == len(three.batch_sizes)
    assert again.column("label").to_pylist() == first.column("label").to_pylist()
    np.testing.assert_allclose(again.column("confidence").to_numpy(zero_copy_only=False),
                               first.column("confidence").to_numpy(zero_copy_only=False), rtol=1e-5)


def test_image_batches_are_capped_in_bytes_on_cpu(tmp_path, mnist_ref, monkeypatch):
    import pyarrow.parquet as pq

    import tasks.infer.engine as engine_module

    spec = _digit_shard(tmp_path, mnist_ref)
    plain = infer_shard(spec, mnist_ref, ShardSettings(batch_size=64))
    first = pq.read_table(spec.out_path).sort_by("content_hash")
    monkeypatch.setattr(engine_module, "CPU_MAX_BATCH_BYTES", 10 * 28 * 28 * 4)  # ten float32 digits
    capped = infer_shard(spec, mnist_ref, ShardSettings(batch_size=64))
    again = pq.read_table(spec.out_path).sort_by("content_hash")
    assert plain.batch_sizes == (60,) and plain.batch_size == 64  # the size in effect, not the shard's last batch
    assert max(capped.batch_sizes) == capped.batch_size == 10 and sum(capped.batch_sizes) == 60
    assert again.column("label").to_pylist() == first.column("label").to_pylist()  # same answers, smaller batches
    assert get_engine(mnist_ref).batch_size(64) == 64  # no item size given: only the requested size applies


def test_the_prefetch_queue_holds_a_byte_budget_of_batches():
    import queue

    from tasks.infer.engine import PREFETCH_BYTES
    from tasks.infer.shard import _limit_depth

    q = queue.Queue(maxsize=8)
    _limit_depth(q, PREFETCH_BYTES // 3)
    assert q.maxsize == 3
    _limit_depth(q, PREFETCH_BYTES * 2)  # batches larger than the budget: two still wait, so the engine never idles
    assert q.maxsize == 2
    small = queue.Queue(maxsize=8)
    _limit_depth(small, 1024)  # small batches: the configured depth stays
    assert small.maxsize == 8


class FailingEngine(Engine):
    def run(self, feeds):
        raise ValueError("simulated engine failure")


def test_a_failing_runner_fails_the_shard_and_stops_the_others(tmp_path, mnist_ref, monkeypatch):
    import pytest

    import tasks.infer.shard as shard

    spec = _digit_shard(tmp_path, mnist_ref)
    real = get_engine(mnist_ref)
    monkeypatch.setattr(shard, "get_engine", lambda ref: FailingEngine(real.adapter, real.session))
    with pytest.raises(ValueError, match="simulated engine failure"):
        infer_shard(spec, mnist_ref, ShardSettings(batch_size=4, runners=3))


def test_stage_cores_do_not_import_prefect():
    modules = ["tasks.infer.source", "tasks.infer.scan", "tasks.infer.shard", "tasks.infer.engine",
               "tasks.infer.plan", "tasks.infer.index", "tasks.infer.model_ref", "tasks.infer.result",
               "tasks.infer.workers", "tasks.infer.table", "tasks.infer.outputs"]
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
