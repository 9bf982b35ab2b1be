"""Variants as nested MLflow runs and the champion alias per hardware class, on a real MLflow SQLite store."""
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from flows.tracking_models import log_variants, register_champion, registry_name
from helios.models import ModelConfig
from tasks.optimize.result import OptimizeResult, VariantReport


def tiny_onnx(path: Path) -> Path:
    """A real (tiny) ONNX image classifier: 2x2 grey images, three classes."""
    import numpy as np

    w = numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "w")
    nodes = [helper.make_node("Flatten", ["image"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 2, 2])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    path.with_suffix(".json").write_text('{"variant": "%s"}' % path.stem)
    return path


def result(tmp_path: Path, throughput: float, agreement: float = 1.0, accuracy: float | None = None) -> OptimizeResult:
    tmp_path.mkdir(parents=True, exist_ok=True)
    rows = [VariantReport(name, tiny_onnx(tmp_path / f"{name}.onnx"), "classifier", 300, 1.0, 1.5, 2.0, tp, 8, 3.0,
                          agreement=q, accuracy=accuracy, providers=("CPUExecutionProvider",),
                          selected=name == "int8-static",
                          reason="fastest" if name == "int8-static" else "slower", throughput_by_batch={1: 10.0, 8: tp})
            for name, tp, q in (("fp32", throughput / 2, 1.0), ("int8-static", throughput, agreement))]
    table = tmp_path / "optimize.json"
    table.write_text("{}")
    return OptimizeResult(rows[1], rows, table, context={"budget": {"min_gain": 0.05}})


@pytest.fixture
def store(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("helios", artifact_location=(tmp_path / "artifacts").as_uri())
    return uri, client, exp


def parent(client, exp) -> str:
    return client.create_run(exp).info.run_id


def champion(chosen: OptimizeResult, hardware_class: str, store, **settings) -> dict:
    """Register ``chosen`` as a version of ``mnist-cnn``, with the tiny ONNX file as its model."""
    uri, client, exp = store
    return register_champion(chosen, "mnist-cnn", hardware_class, parent(client, exp), uri,
                             ModelConfig(name=str(chosen.selected.path)), **settings)


def alias(client, name: str) -> str:
    return str(client.get_model_version_by_alias("mnist-cnn", name).version)


def test_each_variant_is_a_nested_run_with_its_metrics(store, tmp_path):
    uri, client, exp = store
    run_id = parent(client, exp)
    log_variants(result(tmp_path / "r", 200.0), run_id, uri)
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{run_id}'")
    by_name = {r.data.tags["helios.variant"]: r for r in children}
    assert set(by_name) == {"fp32", "int8-static"}
    chosen = by_name["int8-static"]
    assert chosen.data.metrics["throughput_per_s"] == 200.0 and chosen.data.metrics["selected"] == 1.0
    assert chosen.data.metrics["latency_p99_ms"] == 2.0 and chosen.data.metrics["throughput_batch_8"] == 200.0
    assert chosen.data.tags["helios.selected"] == "true" and chosen.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(chosen.info.run_id)} == {"int8-static.json"}
    assert "optimize.json" in {a.path for a in client.list_artifacts(run_id)}


def test_champion_moves_only_when_beaten_on_the_same_hardware_class(store, tmp_path):
    uri, client, exp = store
    first = champion(result(tmp_path / "a", 200.0), "cpu-avx2-2c", store)
    assert first["promoted"] and first["comparison"]["why"] == "first version for this hardware class"
    assert str(client.get_model_version_by_alias("mnist-cnn", "champion").version) == first["version"]

    slower = champion(result(tmp_path / "b", 205.0), "cpu-avx2-2c", store)
    assert not slower["promoted"] and "not better" in slower["comparison"]["why"]
    assert str(client.get_model_version_by_alias("mnist-cnn", "champion-cpu-avx2-2c").version) == first["version"]
    tags = client.get_model_version("mnist-cnn", slower["version"]).tags
    assert tags["helios.hardware_class"] == "cpu-avx2-2c" and "not better" in tags["helios.champion_comparison"]

    faster = champion(result(tmp_path / "c", 300.0), "cpu-avx2-2c", store)
    assert faster["promoted"] and faster["comparison"]["champion_version"] == first["version"]
    assert str(client.get_model_version_by_alias("mnist-cnn", "champion").version) == faster["version"]

    other = champion(result(tmp_path / "d", 50.0), "cpu-avx512-vnni-8c", store)
    assert other["promoted"]  # first on its own hardware class, though slower than the avx2 champion
    assert alias(client, "champion-cpu-avx2-2c") == faster["version"]
    assert alias(client, "champion-cpu-avx512-vnni-8c") == other["version"]
    # the global alias stays on the serving class (the first class to get a champion), not the latest promotion
    assert alias(client, "champion") == faster["version"] and other["aliases"] == ["champion-cpu-avx512-vnni-8c"]

    better_other = champion(result(tmp_path / "e", 80.0), "cpu-avx512-vnni-8c", store)
    assert better_other["promoted"] and alias(client, "champion") == faster["version"]


def test_champion_class_setting_puts_the_global_alias_on_that_class(store, tmp_path):
    uri, client, exp = store
    avx2 = champion(result(tmp_path / "a", 200.0), "cpu-avx2-2c", store)
    assert alias(client, "champion") == avx2["version"]
    # the deployment runs on the AMX pool: its class's champion becomes the global one, at once
    amx = champion(result(tmp_path / "b", 90.0), "cpu-amx-2c", store, champion_class="cpu-amx-2c")
    assert amx["aliases"] == ["champion", "champion-cpu-amx-2c"] and alias(client, "champion") == amx["version"]
    # a faster avx2 version moves its class alias only, as long as the setting names the AMX class
    faster_avx2 = champion(result(tmp_path / "c", 400.0), "cpu-avx2-2c", store, champion_class="cpu-amx-2c")
    assert faster_avx2["promoted"] and alias(client, "champion-cpu-avx2-2c") == faster_avx2["version"]
    assert alias(client, "champion") == amx["version"]
    # without the setting the global alias keeps the class of the version that holds it
    faster_amx = champion(result(tmp_path / "d", 120.0), "cpu-amx-2c", store)
    assert alias(client, "champion") == faster_amx["version"]


def test_regression_gate_keeps_a_faster_variant_that_lost_accuracy(store, tmp_path):
    uri, client, exp = store
    first = champion(result(tmp_path / "a", 200.0, accuracy=0.980), "cpu-avx2-2c", store)
    worse = champion(result(tmp_path / "b", 400.0, accuracy=0.970), "cpu-avx2-2c", store)  # -1.0 point
    assert not worse["promoted"]
    assert worse["comparison"]["why"].startswith("accuracy regressed: 97.00% vs champion 98.00%")
    assert alias(client, "champion-cpu-avx2-2c") == alias(client, "champion") == first["version"]
    # the same figures pass a looser gate
    loose = champion(result(tmp_path / "c", 400.0, accuracy=0.970), "cpu-avx2-2c", store, max_regression=1.5)
    assert loose["promoted"] and alias(client, "champion") == loose["version"]
    # within the default 0.5 points but not faster: kept out too
    slower = champion(result(tmp_path / "d", 405.0, accuracy=0.972), "cpu-avx2-2c", store)
    assert not slower["promoted"] and "not better" in slower["comparison"]["why"]
    within = champion(result(tmp_path / "e", 500.0, accuracy=0.967), "cpu-avx2-2c", store)  # -0.3 point, faster
    assert within["promoted"] and "accuracy 96.70% vs 97.00%" in within["comparison"]["why"]


def test_the_champion_is_a_pyfunc_that_takes_file_bytes_and_carries_its_card(store, tmp_path):
    import base64
    import io

    import mlflow
    import pandas as pd
    from PIL import Image

    uri, client, exp = store
    chosen = result(tmp_path / "a", 100.0)
    info = register_champion(chosen, "/models/My Model.onnx", "cpu-avx2-2c", parent(client, exp), uri,
                             ModelConfig(name=str(chosen.selected.path), labels=("cat", "dog", "owl")))
    assert info["registered_model"] == registry_name("/models/My Model.onnx") == "My-Model"
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{info['registered_model']}@champion")
    png = io.BytesIO()
    Image.fromarray(np.array([[0, 0], [255, 0]], dtype=np.uint8)).save(png, format="PNG")
    answer = loaded.predict(pd.DataFrame({"content_b64": [base64.b64encode(png.getvalue()).decode(), "bm90IGFuIGltYWdl"]}))
    assert answer.loc[0, "status"] == "ok" and answer.loc[0, "label"] == "owl"  # pixel 3 of 4 -> class 2 (eye(4, 3))
    assert answer.loc[1, "status"] == "error" and answer.loc[1, "error"].startswith("not an image")
    version = client.get_model_version("My-Model", info["version"])
    assert version.tags["helios.labels"] == "cat,dog,owl" and "int8-static" in version.description
    assert loaded.metadata.metadata["hardware_class"] == "cpu-avx2-2c"


def test_logged_model_is_filed_under_the_runs_experiment_not_the_working_directory(store, tmp_path, monkeypatch):
    uri, client, exp = store
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    info = champion(result(tmp_path / "a", 100.0), "cpu-avx2-2c", store)
    model_id = info["model_uri"].removeprefix("models:/")
    assert client.get_logged_model(model_id).experiment_id == exp
    assert list(cwd.iterdir()) == []  # MLflow 3 put it in ./mlruns under the Default experiment before
    assert (tmp_path / "artifacts").is_dir()
