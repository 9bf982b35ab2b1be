import dataclasses

import numpy as np
import pytest

from tasks.refine.config import RefineConfig
from tasks.refine.context import RefineContext
from tasks.refine.core import refine_predictions

FAST = dict(tent_epochs=1, max_rounds=2)
CPU = ("CPUExecutionProvider",)


def refine(scan, tmp_path, frame=None, adapter=None, onnx_path=None, truth="given", **overrides):
    ctx = RefineContext(RefineConfig(**{**FAST, **overrides}), adapter or scan.adapter, onnx_path or scan.onnx_path,
                        tmp_path, CPU, 1)
    return refine_predictions(ctx, scan.frame if frame is None else frame, scan.root,
                              scan.truth if truth == "given" else truth)


@pytest.fixture(scope="module")
def default_run(scan, tmp_path_factory):
    return refine(scan, tmp_path_factory.mktemp("work"))


def test_unsure_rows_are_refined_and_each_method_reports(default_run, scan):
    frame, summary = default_run
    assert summary["status"] == "done"
    assert summary["routed"] == int((scan.frame["confidence"] < 0.9).sum()) > 0
    assert set(summary["methods"]) == {"bn-adapt", "tent", "tta"}
    for stats in summary["methods"].values():
        assert {"touched", "changed", "accuracy_before", "accuracy_after", "forward_passes", "backward_passes",
                "seconds", "multiplier"} <= set(stats)
    assert summary["methods"]["tent"]["backward_passes"] > 0
    assert summary["accuracy_after"] > summary["accuracy_before"] + 0.1  # glass blur: adaptation pays off
    answered = frame["refine_method"] != ""
    assert (frame.loc[answered, "final_stage"] == "refine").all() and (frame.loc[~answered, "final_stage"] == "infer").all()
    assert (frame["refined_label"] == frame["label"]).all()
    assert (frame["infer_label"] == scan.frame["infer_label"]).all()  # the infer columns are kept
    assert frame.loc[frame["tta_label"].notna(), "refine_method"].str.contains("tta").all()


def test_disabled_passes_predictions_through(scan, tmp_path):
    frame, summary = refine(scan, tmp_path, enabled=False)
    assert summary == {"status": "disabled"}
    assert (frame["label"] == scan.frame["label"]).all() and frame["refined_label"].isna().all()


def test_file_order_batch_size_and_truth_do_not_change_answers(default_run, scan, tmp_path):
    shuffled = scan.frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    frame, summary = refine(scan, tmp_path, frame=shuffled, batch_size=1, truth=None)
    expected = default_run[0].set_index("path")["refined_label"]
    got = frame.set_index("path").loc[expected.index, "refined_label"]
    assert (got == expected).mean() >= 0.99  # float summation order only
    assert summary["accuracy_before"] is None and summary["methods"]["tent"]["accuracy_after"] is None


def test_collapse_reverts_to_the_source_model_and_says_so(scan, tmp_path):
    frame, summary = refine(scan, tmp_path, methods=("bn-adapt", "tent"), collapse_min_entropy=50.0)
    assert any(r.startswith("bn-adapt: mean prediction entropy fell") for r in summary["reverted"])
    assert (frame["label"] == scan.frame["label"]).all() and summary["methods"] == {}


def test_parity_failure_keeps_the_source_answers(scan, tmp_path):
    frame, summary = refine(scan, tmp_path, methods=("bn-adapt",), parity_max_abs_logit_diff=1e-12)
    assert any("parity failed" in r for r in summary["reverted"])
    assert (frame["label"] == scan.frame["label"]).all()


def test_a_model_without_batchnorm_skips_ttt_with_a_note(scan, plain_onnx, plain_frame, tmp_path):
    adapter, onnx_path = plain_onnx
    _, summary = refine(scan, tmp_path, frame=plain_frame, adapter=adapter, onnx_path=onnx_path)
    assert any("neither BatchNorm nor LayerNorm" in n for n in summary["notes"])
    assert set(summary["methods"]) == {"tta"}


def test_text_models_are_skipped_before_reading_files(scan, tmp_path):
    text = dataclasses.replace(scan.adapter, modality="text")
    _, summary = refine(scan, tmp_path, adapter=text)
    assert summary["status"].startswith("skipped:") and "no text TTA policy" in summary["status"]
    assert "LayerNorm" in summary["status"]


def test_rounds_stop_at_the_compute_budget(scan, tmp_path):
    # the mixture check's pass (1.0) counts: a budget of 1.5 is spent by round 1
    _, summary = refine(scan, tmp_path, methods=("bn-adapt", "tent"), max_multiplier=1.5, threshold=1.0)
    assert summary["rounds"] == 1 and any("compute budget" in n for n in summary["notes"])
    assert summary["mixture"]["multiplier"] == 1.0 and not summary["mixture"]["split"]


def test_a_confident_but_shifted_set_is_still_adapted(scan, tmp_path):
    frame, summary = refine(scan, tmp_path, threshold=0.0, methods=("bn-adapt",))
    assert summary["routed"] == 0 and summary["shift_score"] > 0.05
    assert summary["methods"]["bn-adapt"]["touched"] == len(frame)
    assert summary["accuracy_after"] > summary["accuracy_before"]


def test_an_unshifted_confident_set_is_left_alone(scan, tmp_path):
    frame, summary = refine(scan, tmp_path, threshold=0.0, ttt_min_shift=10.0)
    assert summary["methods"] == {} and (frame["final_stage"] == "infer").all()
    assert any("does not look shifted" in n for n in summary["notes"])
    frame, summary = refine(scan, tmp_path, threshold=0.0, methods=("tta",))
    assert summary["routed"] == 0 and summary["methods"] == {} and (frame["final_stage"] == "infer").all()


def test_a_set_where_every_file_failed_is_skipped_before_reading_files(scan, tmp_path):
    """All rows in error: the label column comes back from Parquet as missing floats, and nothing is refined."""
    failed = scan.frame.assign(status="error", label=np.nan, confidence=np.nan)
    frame, summary = refine(scan, tmp_path, frame=failed)
    assert summary["status"] == "skipped: no successfully inferred rows to refine"
    assert frame["refined_label"].isna().all() and (frame["label"].isna()).all()
