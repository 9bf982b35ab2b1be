"""Refine at scale, in the core: a set larger than a memory limit is refined in bounded memory; a rerun replays the
kept adaptation without torch work; new files are answered by it and adapting again is advised (or done, when most
files are new). Real mnist-cnn, real PNG files, real ONNX Runtime."""
import hashlib
import tracemalloc

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from helios.data.corruptions import apply_corruption
from helios.models.mnist_data import load_split
from tasks.refine.config import RefineConfig
from tasks.refine.context import RefineContext
from tasks.refine.core import refine_predictions
from tests.tasks.refine.conftest import infer_frame, write_pngs

CPU = ("CPUExecutionProvider",)
SMALL = dict(adapt_max_items=256, batch_size=64, tent_epochs=1, max_rounds=1)


def with_hashes(frame: pd.DataFrame, root) -> pd.DataFrame:
    frame = frame.copy()
    frame["content_hash"] = [hashlib.blake2b((root / p).read_bytes(), digest_size=16).hexdigest() for p in frame["path"]]
    return frame


@pytest.fixture(scope="module")
def big(tmp_path_factory, mnist_onnx):
    """6,000 glass-blurred digits (18.8 MB once decoded) in class folders, with the infer stage's columns."""
    adapter, onnx_path = mnist_onnx
    x_train, y_train, x_test, y_test = load_split()
    images = apply_corruption("glass_blur", np.tile(np.concatenate([x_test, x_train]), (2, 1, 1))[:6000],
                              np.random.default_rng(1))
    labels = np.tile(np.concatenate([y_test, y_train]), 2)[:6000]
    root = tmp_path_factory.mktemp("big")
    paths = write_pngs(root, images, labels)
    truth = {p: str(int(label)) for p, label in zip(paths, labels)}
    return root, with_hashes(infer_frame(adapter, onnx_path, root, paths), root), truth


class Tripwire:
    """A model whose torch module refuses every forward pass: proof that a rerun did no torch work."""

    def __init__(self, adapter):
        self.adapter = adapter

    def torch_module(self):
        module = self.adapter.torch_module()

        def refuse(*_):
            raise AssertionError("torch forward pass on a rerun that should replay the kept adaptation")

        module.register_forward_pre_hook(refuse)
        return module

    def __getattr__(self, name):
        return getattr(self.adapter, name)


def refine(adapter, onnx_path, work, frame, root, truth=None, **overrides):
    ctx = RefineContext(RefineConfig(**{**SMALL, **overrides}), adapter, onnx_path, work, CPU, 1)
    return refine_predictions(ctx, frame, root, truth)


def test_a_set_larger_than_the_memory_limit_is_refined_chunk_by_chunk(big, scan, mnist_onnx, tmp_path):
    adapter, onnx_path = mnist_onnx
    root, frame, truth = big
    decoded = len(frame) * 28 * 28 * 4
    limit = decoded // 2  # the test's memory limit: half the decoded set
    settings = dict(threshold=0.99, batch_size=32)
    refine(adapter, onnx_path, tmp_path / "warm", scan.frame, scan.root, **settings)  # imports are not the set's
    tracemalloc.start()
    try:
        out, summary = refine(adapter, onnx_path, tmp_path, frame.drop(columns="content_hash"), root, truth,
                              **settings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < limit, f"refine held {peak / 2**20:.1f} MB at its peak; the limit is {limit / 2**20:.1f} MB"
    assert summary["methods"]["bn-adapt"]["touched"] == len(frame)  # every file re-inferred by the adapted model
    assert summary["methods"]["tta"]["touched"] > 1000  # the unsure ones augmented, chunk by chunk
    assert summary["accuracy_after"] > summary["accuracy_before"] + 0.1
    assert (out["refine_method"] != "").all()


def test_a_rerun_replays_the_kept_adaptation_without_torch_work(scan, tmp_path):
    frame = with_hashes(scan.frame, scan.root)
    first, s1 = refine(scan.adapter, scan.onnx_path, tmp_path, frame, scan.root, scan.truth, max_rounds=2)
    assert s1["adaptation"]["run_steps"] == 2 and not s1["adaptation"]["kept"]
    (tmp_path / "answers.json").unlink()  # the kept answers would answer at once: replay the kept steps instead
    again, s2 = refine(Tripwire(scan.adapter), scan.onnx_path, tmp_path, frame, scan.root, scan.truth, max_rounds=2)
    assert s2["adaptation"]["kept"] and s2["adaptation"]["run_steps"] == 0 and s2["adaptation"]["reused_steps"] == 2
    assert "answers_kept" not in s2["adaptation"]
    assert any("no torch work" in n for n in s2["notes"]) and not s2["adaptation"]["readapt_advised"]
    for column in ("label", "confidence", "refine_method", "ttt_label", "tta_label"):
        assert first[column].equals(again[column]), column
    assert s2["accuracy_after"] == s1["accuracy_after"]
    assert {k: v["touched"] for k, v in s2["methods"].items()} == {k: v["touched"] for k, v in s1["methods"].items()}


RERUN = """
import sys, pandas as pd
from helios.models.mnist_cnn import load_mnist_cnn
from tasks.refine.config import RefineConfig
from tasks.refine.context import RefineContext
from tasks.refine.core import refine_predictions
frame = pd.read_parquet(sys.argv[1])
ctx = RefineContext(RefineConfig(adapt_max_items=256, batch_size=64, tent_epochs=1, max_rounds=1), load_mnist_cnn(),
                    sys.argv[2], sys.argv[3], ("CPUExecutionProvider",), 1)
out, summary = refine_predictions(ctx, frame, sys.argv[4])
out.to_parquet(sys.argv[5])
print("torch imported:", "torch" in sys.modules, "| note:", summary["notes"][0])
"""


def test_an_unchanged_rerun_returns_the_kept_answers_without_importing_torch(scan, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    frame = with_hashes(scan.frame, scan.root)
    first, s1 = refine(scan.adapter, scan.onnx_path, tmp_path / "work", frame, scan.root)
    frame.to_parquet(tmp_path / "frame.parquet")
    done = subprocess.run([sys.executable, "-c", RERUN, str(tmp_path / "frame.parquet"), str(scan.onnx_path),
                           str(tmp_path / "work"), str(scan.root), str(tmp_path / "out.parquet")],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[3])
    assert done.returncode == 0, done.stderr
    assert "torch imported: False" in done.stdout and "answers kept from" in done.stdout, done.stdout
    again = pd.read_parquet(tmp_path / "out.parquet")
    for column in ("label", "confidence", "refine_method", "ttt_label", "tta_label", "refined_confidence"):
        assert first[column].isna().tolist() == again[column].isna().tolist(), column
        assert first[column].dropna().tolist() == again[column].dropna().tolist(), column


def test_kept_answers_are_not_returned_when_a_file_or_an_infer_answer_changed(scan, tmp_path):
    frame = with_hashes(scan.frame, scan.root)
    refine(scan.adapter, scan.onnx_path, tmp_path, frame, scan.root)
    _, same = refine(scan.adapter, scan.onnx_path, tmp_path, frame, scan.root)
    assert same["adaptation"]["answers_kept"] and same["adaptation"]["run_steps"] == 0
    changed = frame.copy()
    changed.loc[3, "content_hash"] = "0" * 32  # one file's bytes changed since
    _, other = refine(Tripwire(scan.adapter), scan.onnx_path, tmp_path, changed, scan.root)
    assert "answers_kept" not in other["adaptation"] and other["adaptation"]["kept"]  # replayed, not returned
    answered = frame.assign(confidence=frame["confidence"] * 0.5)  # the infer stage answered differently
    _, replayed = refine(Tripwire(scan.adapter), scan.onnx_path, tmp_path, answered, scan.root)
    assert "answers_kept" not in replayed["adaptation"]


def test_new_files_are_answered_by_the_kept_adaptation_and_readapting_is_advised(scan, big, tmp_path):
    old = with_hashes(scan.frame, scan.root)
    refine(scan.adapter, scan.onnx_path, tmp_path, old, scan.root)
    root, frame, _ = big
    for p in frame["path"][:80]:  # 80 files the adaptation never saw join the 160 it learned from
        (scan.root / "new" / p).parent.mkdir(parents=True, exist_ok=True)
        (scan.root / "new" / p).write_bytes((root / p).read_bytes())
    new = frame[:80].assign(path=lambda f: "new/" + f["path"])
    out, summary = refine(Tripwire(scan.adapter), scan.onnx_path, tmp_path, pd.concat([old, new], ignore_index=True),
                          scan.root)
    facts = summary["adaptation"]
    assert facts["kept"] and facts["run_steps"] == 0 and facts["new_files"] == 80
    assert facts["new_share"] == pytest.approx(80 / 240, abs=1e-3) and facts["readapt_advised"]
    assert any("refine.reuse_adaptation=false" in n for n in summary["notes"])
    answered = out[out["path"].str.startswith("new/")]
    assert answered["refine_method"].str.contains("bn-adapt").all()  # the kept adapted model answered them
    _, again = refine(Tripwire(scan.adapter), scan.onnx_path, tmp_path, pd.concat([old, new], ignore_index=True),
                      scan.root)  # the same grown set again: its kept answers, and the advice still stands
    assert again["adaptation"]["answers_kept"] and again["adaptation"]["readapt_advised"]
    assert again["adaptation"]["new_files"] == 80 and any("refine.reuse_adaptation=false" in n for n in again["notes"])


def test_a_set_that_is_mostly_new_is_adapted_again_by_itself(scan, big, tmp_path):
    refine(scan.adapter, scan.onnx_path, tmp_path, with_hashes(scan.frame, scan.root), scan.root)
    root, frame, _ = big
    other = frame[:200]  # another set: none of its files were in the one the adaptation learned from
    _, summary = refine(scan.adapter, scan.onnx_path, tmp_path, other, root)
    facts = summary["adaptation"]
    assert facts["readapted"] and not facts["kept"] and facts["run_steps"] >= 1 and facts["new_share"] == 1.0
    assert any("adapted again to this set" in n for n in summary["notes"]) and not facts["readapt_advised"]
    _, kept = refine(Tripwire(scan.adapter), scan.onnx_path, tmp_path, other, root)
    assert kept["adaptation"]["kept"] and kept["adaptation"]["run_steps"] == 0  # and that set's adaptation is kept
    assert kept["adaptation"]["new_files"] == 0 and not any("adapted again" in n for n in kept["notes"])


def test_other_settings_or_reuse_off_adapt_again(scan, tmp_path):
    frame = with_hashes(scan.frame, scan.root)
    refine(scan.adapter, scan.onnx_path, tmp_path, frame, scan.root)
    _, other = refine(scan.adapter, scan.onnx_path, tmp_path, frame, scan.root, tent_lr=1e-3)
    assert not other["adaptation"]["kept"] and other["adaptation"]["run_steps"] == 1
    _, off = refine(scan.adapter, scan.onnx_path, tmp_path, frame, scan.root, tent_lr=1e-3, reuse_adaptation=False)
    assert not off["adaptation"]["kept"] and off["adaptation"]["run_steps"] == 1


def test_a_mixed_set_larger_than_the_sample_places_every_file_and_a_rerun_keeps_the_split(mnist_onnx, tmp_path):
    adapter, onnx_path = mnist_onnx
    _, _, x, y = load_split()
    fog = np.arange(len(x)) >= 500
    images = np.where(fog[:, None, None], apply_corruption("fog", x, np.random.default_rng(3)), x)
    root = tmp_path / "in"
    frame = with_hashes(infer_frame(adapter, onnx_path, root, write_pngs(root, images, y)), root)
    truly_fog = frame["path"].map(lambda p: fog[int(p.split("/")[1][:4])]).to_numpy()
    out, summary = refine(adapter, onnx_path, tmp_path / "work", frame, root)
    mixture = summary["mixture"]
    assert mixture["split"] and mixture["sample"] == 256 and mixture["forward_passes"] == len(frame)
    assert mixture["placed_while_answering"]  # one routed pass placed the 744 files and answered round 1
    assert abs(mixture["groups"]["shifted"]["items"] - 500) <= 10  # the 744 files outside the sample placed too
    assert (out.loc[~truly_fog, "refine_method"].isin(["", "tta"])).mean() >= 0.98  # clean files left alone
    again, kept = refine(Tripwire(adapter), onnx_path, tmp_path / "work", frame, root)
    assert kept["mixture"]["groups"] == mixture["groups"] and kept["adaptation"]["run_steps"] == 0
    assert again["label"].equals(out["label"])
    # an increment: the last 100 files are new to a run that kept the first 900's adaptation; the kept steps and the
    # kept routed graph place and answer them without torch work (Tripwire), and each keeps its group's answer
    first, _ = refine(adapter, onnx_path, tmp_path / "grow", frame[:900], root)
    grown, facts = refine(Tripwire(adapter), onnx_path, tmp_path / "grow", frame, root)
    assert facts["adaptation"]["kept"] and facts["adaptation"]["new_files"] == 100
    assert facts["adaptation"]["run_steps"] == 0 and facts["adaptation"]["reused_steps"] >= 2
    assert facts["mixture"]["placed_while_answering"]
    new_fog = truly_fog & (np.arange(len(frame)) >= 900)
    assert (grown.loc[new_fog, "refine_method"].str.contains("tent")).mean() >= 0.95  # the shifted group's model
    assert (grown.loc[~truly_fog, "refine_method"].isin(["", "tta"])).mean() >= 0.98
    # without content hashes nothing is kept, so the files are placed by the probe pass first, then each group
    # re-infers: the same groups and answers
    probed, plain = refine(adapter, onnx_path, tmp_path / "plain", frame.drop(columns="content_hash"), root)
    assert "placed_while_answering" not in plain["mixture"] and plain["mixture"]["groups"] == mixture["groups"]
    for column in ("label", "confidence", "refine_method", "ttt_label"):
        assert probed[column].equals(out[column]), column


def test_files_that_no_longer_decode_keep_their_answers_and_are_counted(scan, tmp_path):
    import shutil

    root = tmp_path / "in"
    shutil.copytree(scan.root, root)
    broken = scan.frame["path"].iloc[[0, 70, 150]].tolist()  # the first one is also the one that sizes the inputs
    for p in broken:
        (root / p).write_bytes(b"\x89PNG\r\n\x1a\nnot any more")
    out, summary = refine(scan.adapter, scan.onnx_path, tmp_path / "work", scan.frame, root, threshold=0.99)
    assert "3 file(s) no longer decode and were left as inferred" in summary["notes"]
    kept = out.set_index("path").loc[broken]
    assert (kept["refine_method"] == "").all() and (kept["label"] == kept["infer_label"]).all()
    assert (out["refine_method"] != "").sum() == len(out) - 3


def test_reinfer_answers_are_matched_to_the_paths_asked_and_gaps_are_lost(scan, tmp_path):
    from tasks.refine.stream import _reinfer

    labels = list(scan.adapter.labels)
    answers = pd.DataFrame({"path": ["b", "a", "b", "c", "d"], "status": ["ok", "ok", "error", "error", "ok"],
                            "label": [labels[2], labels[1], None, None, "not a label"],
                            "confidence": np.array([0.9, 0.8, np.nan, np.nan, 0.7], np.float32)})
    asked = []

    def reinfer(onnx_path, paths):  # what flows.refine_infer.AdaptedInfer gives back, for these five rows
        asked.append(paths.to_pylist())
        return answers

    ctx = RefineContext(RefineConfig(), scan.adapter, scan.onnx_path, tmp_path, ("CPUExecutionProvider",), 1, reinfer)
    lost: set[int] = set()
    fn = _reinfer(ctx, pa.array(["a", "b", "c", "d", "e"]), lost)
    label, confidence = fn(tmp_path / "m.onnx", np.array([0, 1, 2, 3, 4]))
    assert asked == [["a", "b", "c", "d", "e"]]
    assert label.tolist() == [1, 2, -1, -1, -1]  # b's first row wins; c failed, d's label is unknown, e unanswered
    np.testing.assert_allclose(confidence[:2], [0.8, 0.9], rtol=1e-6)
    assert np.isnan(confidence[2:]).all() and lost == {2, 3, 4}
    again, again_confidence = fn(tmp_path / "m.onnx", np.array([1, 0, 4]))  # positions in any order
    assert again.tolist() == [2, 1, -1] and np.isnan(again_confidence[2])
