"""What the optimize stage skips to stay cheap, on the real mnist-cnn export and real ONNX Runtime: a tiny run and
a single candidate are not timed, a variant known to miss the budget is not rebuilt, the ranking keeps to its
budget and says so in optimize.json."""
import json

from tasks.optimize.config import OptimizeConfig
from tasks.optimize.core import optimize_model
from tasks.optimize.known import KnownFailure, failures_of, merge, skip_known
from tasks.optimize.result import VariantReport

FAST = dict(eval_samples=48, calibration_samples=32, latency_runs=5, batch_sizes=(1, 16))


def test_a_tiny_run_takes_fp32_by_recipe_untimed(mnist, digits, avx2, tmp_path):
    adapter, prepared = mnist
    cfg = OptimizeConfig(variants=("fp32", "int8-dynamic", "int8-static"), **FAST)
    result = optimize_model(cfg, adapter, prepared, digits[0], tmp_path, *avx2, run_items=40)
    assert [v.name for v in result.variants] == ["fp32"] and result.selected.throughput_per_s is None
    assert "tiny run (40 items)" in result.selected.reason
    assert set(result.skipped) == {"int8-dynamic", "int8-static"} and "tiny run" in result.skipped["int8-static"]
    assert not (tmp_path / "int8-dynamic.onnx").exists() and (tmp_path / "fp32.onnx").exists()
    assert result.selected.providers == ("CPUExecutionProvider",)


def test_a_run_with_nothing_to_infer_picks_no_model(mnist, digits, avx2, tmp_path):
    import pytest

    from helios.models import InputError

    adapter, prepared = mnist
    with pytest.raises(InputError, match="no files to infer"):
        optimize_model(OptimizeConfig(**FAST), adapter, prepared, [], tmp_path, *avx2, run_items=0)
    assert not (tmp_path / "optimize.json").exists()


def test_a_single_candidate_is_not_ranked(mnist, digits, avx2, tmp_path):
    adapter, prepared = mnist
    result = optimize_model(OptimizeConfig(variants=("fp32",), **FAST), adapter, prepared, digits[0], tmp_path, *avx2,
                            run_items=5000)
    assert result.selected.name == "fp32" and "only candidate" in result.selected.reason
    assert result.selected.throughput_per_s is None
    labelled = optimize_model(OptimizeConfig(variants=("fp32",), **FAST), adapter, prepared, digits[0],
                              tmp_path / "l", *avx2, truth=digits[1])  # helios optimize --labels: accuracy, untimed
    assert labelled.selected.accuracy > 0.9 and labelled.selected.throughput_per_s is None


def test_a_known_failure_is_not_rebuilt_and_the_ranking_is_recorded(mnist, digits, avx2, tmp_path):
    adapter, prepared = mnist
    cfg = OptimizeConfig(variants=("fp32", "int8-dynamic", "int8-static"), time_budget_s=30, **FAST)
    first = optimize_model(cfg, adapter, prepared, digits[0], tmp_path / "a", *avx2, run_items=5000)
    key = first.context["recipe_keys"]["int8-static"]
    known = [KnownFailure(adapter.name, "cpu-avx2-2c", "int8-static", key, "agreement", 0.9)]
    result = optimize_model(cfg, adapter, prepared, digits[0], tmp_path / "b", *avx2, run_items=5000, known=known)
    table = json.loads(result.table_path.read_text())
    assert [v["name"] for v in table["variants"]] == ["fp32", "int8-dynamic"]
    assert "known to miss the quality budget" in table["skipped"]["int8-static"]
    assert not (tmp_path / "b" / "int8-static.onnx").exists()
    ranking = table["ranking"]
    assert ranking["time_budget_s"] == 30 and ranking["stopped"] in ("ranking clear", "max rounds reached")
    assert table["sample"] == {"eval_items": 48, "calibration_items": 32, "timing_items": 48, "run_items": 5000}
    assert sum(v["selected"] for v in table["variants"]) == 1
    for v in result.variants:
        assert v.throughput_per_s > 0 and set(v.throughput_by_batch) == {1, 16}
    # a looser budget lets the variant compete again
    again, _ = skip_known(["fp32", "int8-static"], known, adapter.name, "cpu-avx2-2c", {"int8-static": key},
                          min_agreement=0.85, min_cosine=0.99)
    assert again == ["fp32", "int8-static"]


def test_failures_are_recorded_for_lossy_variants_only():
    def report(name, cosine):
        return VariantReport(name, None, "embedder", 1, None, None, None, 10.0, 1, None, agreement=1.0, cosine=cosine)

    class Result:
        variants = [report("fp32", 1.0), report("int8-static", 0.92), report("int8-dynamic", 0.995)]

    keys = {"int8-static": "k1", "int8-dynamic": "k2"}
    found = failures_of(Result, "minilm", "cpu-amx-2c", keys, 0.995, 0.99)
    assert found == [KnownFailure("minilm", "cpu-amx-2c", "int8-static", "k1", "cosine", 0.92)]
    newer = KnownFailure("minilm", "cpu-amx-2c", "int8-static", "k1", "cosine", 0.93)
    assert merge(found, [newer]) == [newer]


def test_a_transformer_gets_no_int8_static_unless_asked(tiny_bert, mnist, avx2):
    from tasks.optimize.variants import plan_variants

    build, skipped = plan_variants(OptimizeConfig(), tiny_bert, *avx2)
    assert "int8-static" not in build and "dynamic quantization for transformers" in skipped["int8-static"]
    assert "int8-dynamic" in build and "fp32-fused" in build
    asked = OptimizeConfig(variants=("fp32", "int8-static"))
    assert plan_variants(asked, tiny_bert, *avx2)[0] == ["fp32", "int8-static"]
    assert "int8-static" in plan_variants(OptimizeConfig(), mnist[0], *avx2)[0]  # a CNN keeps it


def test_text_is_timed_at_the_batches_infer_runs_and_fused_is_checked_on_the_timing_items(tiny_bert, texts, avx2,
                                                                                          tmp_path, monkeypatch):
    from tasks.optimize import core
    from tasks.prepare.config import PrepareConfig
    from tasks.prepare.core import prepare_model

    monkeypatch.setattr(core, "TIMING_ITEMS", 16)  # 48 texts in the sample, 16 of them timed
    prepared = prepare_model(PrepareConfig(), tiny_bert, texts, tmp_path / "prep")
    cfg = OptimizeConfig(variants=("fp32", "fp32-fused"), eval_samples=48, latency_runs=5, batch_sizes=(1, 8, 128))
    result = optimize_model(cfg, tiny_bert, prepared, texts, tmp_path, *avx2, run_items=5000)
    table = json.loads(result.table_path.read_text())
    # texts of up to 64 tokens: the infer stage's 1,024-token CPU batches never hold 128 of them
    assert "[128] not timed" in table["sample"]["batch_sizes_not_timed"]
    by_name = {v.name: v for v in result.variants}
    for v in result.variants:
        assert set(v.throughput_by_batch) == {1, 8} and v.throughput_per_s > 0
    assert by_name["fp32"].quality_items == 48 and by_name["fp32-fused"].quality_items == 16
    assert by_name["fp32-fused"].agreement == 1.0 and by_name["fp32-fused"].cosine > 0.9999
    assert table["variants"][1]["quality_items"] == 16


def test_an_unlabelled_embedder_is_judged_on_fewer_files_and_a_labelled_one_on_all(tiny_bert, texts, avx2, tmp_path):
    from tasks.prepare.config import PrepareConfig
    from tasks.prepare.core import prepare_model

    prepared = prepare_model(PrepareConfig(), tiny_bert, texts, tmp_path / "prep")
    cfg = OptimizeConfig(variants=("fp32", "int8-dynamic"), eval_samples=32, embedder_eval_samples=16,
                         calibration_samples=16, latency_runs=5, batch_sizes=(1, 8), min_cosine=0.9)
    result = optimize_model(cfg, tiny_bert, prepared, texts, tmp_path / "a", *avx2, run_items=5000)
    assert result.context["sample"]["eval_items"] == 16
    assert [v.quality_items for v in result.variants] == [16, 16]
    truth = {p.name: tiny_bert.labels[0] for p in texts}  # with labels, accuracy is measured on the whole sample
    labelled = optimize_model(cfg, tiny_bert, prepared, texts, tmp_path / "b", *avx2, truth=truth, run_items=5000)
    assert labelled.context["sample"]["eval_items"] == 32


def test_images_are_timed_only_at_the_batches_infer_runs(mnist, digits, monkeypatch):
    import tasks.infer.engine as engine
    from tasks.optimize.evaluate import run_batch_sizes

    adapter = mnist[0]
    items = [adapter.preprocess(p.read_bytes()) for p in digits[0][:4]]
    assert run_batch_sizes(adapter, items, (1, 8, 32), ("CPUExecutionProvider",)) == ((1, 8, 32), None)
    monkeypatch.setattr(engine, "CPU_MAX_BATCH_BYTES", 10 * 28 * 28 * 4)  # the infer stage runs ten digits at most
    kept, why = run_batch_sizes(adapter, items, (1, 8, 32), ("CPUExecutionProvider",))
    assert kept == (1, 8) and "[32] not timed" in why and "10 of these images" in why
    gpu = ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert run_batch_sizes(adapter, items, (1, 8, 32), gpu) == ((1, 8, 32), None)  # GPUs want large batches
