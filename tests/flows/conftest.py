"""The built-in digit model exported to ONNX once per session, as the flows' tests hand it to the infer stage."""
from __future__ import annotations

import pytest

from helios.models import ModelConfig, load_model
from tasks.infer.model_ref import ModelRef, make_model_ref
from tasks.prepare.export import export_onnx


@pytest.fixture(scope="session")
def mnist_ref(tmp_path_factory) -> ModelRef:
    model = ModelConfig(name="mnist-cnn")
    return make_model_ref(model, export_onnx(load_model(model), tmp_path_factory.mktemp("onnx"), 17), intra_op_threads=1)
