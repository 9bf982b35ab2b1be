"""Sessions: an offline-optimized file is opened without re-optimization only on the providers it was saved for."""
import json

import numpy as np

from helios.models.mnist_cnn import load_mnist_cnn
from tasks.optimize.runtime import save_optimized
from tasks.prepare.export import export_onnx, write_recipe
from tasks.session import open_session, saved_optimized_for

CPU = ("CPUExecutionProvider",)


def test_saved_optimized_for_reads_the_recipe(tmp_path):
    source = export_onnx(load_mnist_cnn(), tmp_path / "src", 17)
    assert not saved_optimized_for(source, CPU)  # the export recipe says nothing about offline optimization
    dst = save_optimized(source, tmp_path / "fp32.onnx", CPU, 1)
    write_recipe(dst, {"graph_optimization": {"saved_offline": True, "optimized_for_providers": list(CPU)}})
    assert saved_optimized_for(dst, CPU)
    assert not saved_optimized_for(dst, ("CUDAExecutionProvider", "CPUExecutionProvider"))
    (tmp_path / "fp32.json").write_text("{not json")
    assert not saved_optimized_for(dst, CPU)

    x = np.random.default_rng(0).normal(size=(4, 1, 28, 28)).astype(np.float32)
    plain = open_session(source, CPU, 1).run({"image": x})[0]
    offline = open_session(dst, CPU, 1, optimized=True).run({"image": x})[0]
    np.testing.assert_allclose(offline, plain, atol=1e-4)
    assert json.loads((tmp_path / "src" / "model.json").read_text())  # export wrote its recipe beside the model
