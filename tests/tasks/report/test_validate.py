"""validate_outputs with real Great Expectations: good outputs pass, each kind of bad output is named with rows."""
from __future__ import annotations

import pandas as pd
import pytest

from tasks.report.config import ReportConfig
from tasks.report.validate import ValidationFailed, validate_outputs

FAIL = ReportConfig(validation="fail")


def write_predictions(run_dir, frame: pd.DataFrame) -> None:
    frame.to_parquet(run_dir / "predictions.parquet", index=False)


def failed(result) -> dict[tuple[str, str | None], dict]:
    return {(f["expectation"], f["column"]): f for f in result.failures}


def test_good_outputs_pass_and_data_docs_are_built(run_dir, labels):
    result = validate_outputs(FAIL, run_dir, labels)

    assert result.success, result.failures
    assert result.docs_path == run_dir / "data_docs" / "index.html" and result.docs_path.is_file()
    assert list((run_dir / "data_docs" / "validations").rglob("*.html"))


def test_bad_predictions_are_listed_with_sample_rows(run_dir, labels, make_predictions):
    frame = make_predictions()
    frame.loc[1, "confidence"] = 1.5
    frame.loc[2, "label"] = "cat"
    frame.loc[3, "path"] = frame.loc[0, "path"]  # a duplicate, and digits/3.png has no row
    write_predictions(run_dir, frame)

    result = validate_outputs(FAIL, run_dir, labels)

    assert not result.success
    failures = failed(result)
    assert failures[("expect_column_values_to_be_between", "confidence")]["sample_rows"][0]["confidence"] == 1.5
    assert failures[("expect_column_values_to_be_in_set", "label")]["sample_rows"][0]["label"] == "cat"
    duplicates = failures[("expect_column_values_to_be_unique", "path")]["sample_rows"]
    assert [r["path"] for r in duplicates] == ["digits/0.png", "digits/0.png"]
    message = str(ValidationFailed(result))
    assert "expect_column_values_to_be_between(confidence)" in message and '"confidence": 1.5' in message
    assert "report.validation=warn" in message


def test_row_count_must_match_the_manifest(run_dir, labels, make_predictions):
    write_predictions(run_dir, make_predictions().drop(index=[4]))

    result = validate_outputs(FAIL, run_dir, labels)

    failure = failed(result)[("expect_table_row_count_to_equal", None)]
    assert failure["details"].startswith("7 rows, expected 8")
    assert failure["sample_rows"] == [{"path": "digits/4.png", "size_bytes": 124, "content_hash": f"sha256:{4:064x}"}]


def test_rows_outside_the_manifest_and_bad_status(run_dir, labels, make_predictions):
    frame = make_predictions()
    frame.loc[0, "path"] = "not/in/manifest.png"
    frame.loc[1, "status"] = "maybe"
    write_predictions(run_dir, frame)

    failures = failed(validate_outputs(FAIL, run_dir, labels))

    assert failures[("expect_column_values_to_be_in_set", "path_in_manifest")]["sample_rows"][0]["path"] == "not/in/manifest.png"
    assert failures[("expect_column_values_to_be_in_set", "status")]["sample_rows"][0]["status"] == "maybe"


def test_manifest_suite_and_missing_columns(run_dir, labels, make_predictions):
    manifest = pd.read_parquet(run_dir / "manifest.parquet")
    manifest.loc[0, "size_bytes"] = -1
    manifest.loc[1, "content_hash"] = None
    manifest.to_parquet(run_dir / "manifest.parquet", index=False)
    write_predictions(run_dir, make_predictions().drop(columns=["confidence"]))

    failures = failed(validate_outputs(FAIL, run_dir, labels))

    assert failures[("expect_column_values_to_be_between", "size_bytes")]["sample_rows"][0]["size_bytes"] == -1
    assert failures[("expect_column_values_to_not_be_null", "content_hash")]["sample_rows"][0]["path"] == "digits/1.png"
    assert "'confidence' is missing" in failures[("expect_column_to_exist", "confidence")]["details"]


def test_off_skips_great_expectations(run_dir, labels, make_predictions):
    write_predictions(run_dir, make_predictions().assign(confidence=2.0))
    result = validate_outputs(ReportConfig(validation="off"), run_dir, labels)
    assert result.success and result.docs_path is None


@pytest.mark.parametrize("mode", ["fail", "warn"])
def test_missing_predictions_is_a_failure_not_a_crash(tmp_path, mode, labels):
    result = validate_outputs(ReportConfig(validation=mode), tmp_path, labels)
    assert not result.success and result.failures[0]["expectation"] == "file_exists"


def test_unchanged_outputs_reuse_the_last_result_and_changed_ones_are_validated_again(run_dir, labels,
                                                                                       make_predictions):
    frame = make_predictions()
    frame.loc[1, "confidence"] = 1.5
    write_predictions(run_dir, frame)
    first = validate_outputs(FAIL, run_dir, labels)
    again = validate_outputs(FAIL, run_dir, labels)
    assert not first.reused and again.reused and not again.success
    assert again.failures == first.failures and again.docs_path.is_file()
    assert not validate_outputs(FAIL, run_dir, labels + ("extra",)).reused  # another label set: another suite

    write_predictions(run_dir, make_predictions())
    fixed = validate_outputs(FAIL, run_dir, labels)
    assert fixed.success and not fixed.reused
