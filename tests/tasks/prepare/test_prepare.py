"""prepare_model: real export with dynamic axes, the recipe beside the file, and a parity gate that must fail."""
import json

import numpy as np
import onnx
import pytest

from tasks.prepare.config import PrepareConfig
from tasks.prepare.core import prepare_model
from tasks.prepare.parity import ParityError
from tasks.session import open_session


def test_export_has_dynamic_batch_a_recipe_and_passes_the_gate_on_real_inputs(make_tiny, samples, tmp_path):
    prepared = prepare_model(PrepareConfig(), make_tiny(), samples, tmp_path / "model")
    assert prepared.exported and prepared.onnx_path == tmp_path / "model" / "model.onnx"
    assert prepared.parity["samples"] == 20 and prepared.parity["top1_agreement"] == 1.0
    assert prepared.parity["max_abs_logit_diff"] < 1e-5
    recipe = json.loads((tmp_path / "model" / "model.json").read_text())
    assert recipe["opset"] == 17 and recipe["dynamic_axes"]["x"] == {"0": "batch"}
    assert {"torch", "onnx", "python"} <= set(recipe["versions"]) and recipe["source"] == {"model": "tiny"}
    model = onnx.load(str(prepared.onnx_path))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = open_session(prepared.onnx_path)
    for batch in (1, 7):
        assert session.run({"x": np.zeros((batch, 4), np.float32)})[0].shape == (batch, 3)


def test_classifier_gate_fails_naming_the_measured_value_and_the_tolerance(make_tiny, samples, tmp_path):
    with pytest.raises(ParityError, match=r"max \|Δlogit\| 0\.2 > prepare\.max_abs_logit_diff=0\.001 on 20 inputs"):
        prepare_model(PrepareConfig(), make_tiny(drift=0.1), samples, tmp_path / "model")


def test_classifier_gate_checks_top1_agreement(make_tiny, samples, tmp_path):
    cfg = PrepareConfig(max_abs_logit_diff=100.0)
    with pytest.raises(ParityError, match=r"top-1 agreement 0\.\d+ < prepare\.min_top1_agreement=1\.0"):
        prepare_model(cfg, make_tiny(drift=10.0), samples, tmp_path / "model")


def test_embedder_gate_uses_cosine(make_tiny, samples, tmp_path):
    with pytest.raises(ParityError, match=r"min cosine to PyTorch -?0\.\d+ < prepare\.min_cosine=0\.999"):
        prepare_model(PrepareConfig(), make_tiny("embedder", drift=3.0), samples, tmp_path / "model")
    ok = prepare_model(PrepareConfig(), make_tiny("embedder"), samples, tmp_path / "ok")
    assert ok.parity["min_cosine"] > 0.9999


def test_user_onnx_skips_export_but_is_run_on_real_inputs(make_tiny, samples, tmp_path):
    exported = prepare_model(PrepareConfig(), make_tiny(), samples, tmp_path / "exported").onnx_path
    prepared = prepare_model(PrepareConfig(), make_tiny(onnx_path=exported), samples, tmp_path / "user")
    assert not prepared.exported and prepared.parity == {"samples": 20, "validated": True}
    assert json.loads((tmp_path / "user" / "model.json").read_text())["variant"] == "user-onnx"


def test_user_onnx_with_the_wrong_output_width_is_rejected(make_tiny, samples, tmp_path):
    exported = prepare_model(PrepareConfig(), make_tiny(), samples, tmp_path / "exported").onnx_path
    wrong = make_tiny(onnx_path=exported)
    wrong.labels = ("a", "b")
    with pytest.raises(ParityError, match="width other than 2 labels"):
        prepare_model(PrepareConfig(), wrong, samples, tmp_path / "user")
