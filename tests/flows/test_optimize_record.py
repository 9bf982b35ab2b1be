"""The work directory's record of variants known to miss the quality budget: written after a run, read by the next."""
from pathlib import Path

from flows.optimize import read_known, remember_failures, run_size
from tasks.optimize.config import OptimizeConfig
from tasks.optimize.known import KnownFailure
from tasks.optimize.result import OptimizeResult, VariantReport


def result_with(cosine: float) -> OptimizeResult:
    fp32 = VariantReport("fp32", Path("fp32.onnx"), "embedder", 1, None, None, None, 50.0, 8, None, cosine=1.0)
    static = VariantReport("int8-static", Path("s.onnx"), "embedder", 1, None, None, None, 90.0, 8, None, cosine=cosine)
    return OptimizeResult(fp32, [fp32, static], Path("optimize.json"), {},
                          {"hardware_class": "cpu-amx-2c", "recipe_keys": {"int8-static": "abc"}})


def test_a_miss_is_recorded_and_read_back(tmp_path):
    record = tmp_path / "optimize-known-failures.json"
    remember_failures(record, result_with(0.93), "minilm", OptimizeConfig())
    assert read_known(record) == [KnownFailure("minilm", "cpu-amx-2c", "int8-static", "abc", "cosine", 0.93)]
    remember_failures(record, result_with(0.999), "minilm", OptimizeConfig())  # within budget: nothing new
    assert len(read_known(record)) == 1


def test_no_record_or_a_broken_one_means_no_known_failures(tmp_path):
    assert read_known(tmp_path / "missing.json") == []
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert read_known(broken) == []
    remember_failures(broken, result_with(0.999), "minilm", OptimizeConfig())
    assert broken.read_text() == "{not json"  # nothing to add: the file is left alone


def test_run_size_reads_the_manifest_rows(tmp_path):
    import pandas as pd

    pd.DataFrame({"path": ["a", "b", "c"], "size_bytes": [1, 2, 0]}).to_parquet(tmp_path / "m.parquet")
    assert run_size(tmp_path / "m.parquet") == 3
