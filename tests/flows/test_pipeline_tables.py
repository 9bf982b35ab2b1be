"""The whole pipeline on a Parquet table: helios run --input t.parquet with infer.column, ids as paths, accuracy
from a labels CSV keyed by id, and the infer stage's probabilities carried through refine and review."""
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helios.cli.config_file import load_config
from helios.errors import UsageError


def test_text_table_runs_every_stage_with_probabilities(prefect_harness, tmp_path):
    from flows.pipeline import helios_pipeline
    from helios.data.demo import write_demo

    labels_csv = write_demo("text", 90, tmp_path / "demo")
    truth = pd.read_csv(labels_csv)
    texts = [(tmp_path / "demo" / "files" / p).read_text(encoding="utf-8") for p in truth["path"]]
    pq.write_table(pa.table({"doc": truth["path"].tolist(), "body": texts}), tmp_path / "t.parquet")
    cfg = load_config(None, [f"out={tmp_path / 'run'}", f"input={tmp_path / 't.parquet'}", f"labels={labels_csv}",
                             "model.name=minilm", "infer.column=body", "infer.id_column=doc",
                             "infer.outputs=[label,probs,topk]", "infer.top_k=2", "optimize.enabled=false",
                             "tracking.enabled=false"])
    result = helios_pipeline(cfg)
    run_dir = tmp_path / "run"
    table = pq.read_table(run_dir / "predictions.parquet")
    assert sorted(table["path"].to_pylist()) == sorted(truth["path"]) and result["counts"]["ok"] == 90
    assert result["accuracy"]["infer"] > 0.9  # ids match the labels CSV's paths
    assert "refined_label" in table.column_names and "review_status" in table.column_names  # rewritten twice
    probs = np.array(table["infer_probs"].to_pylist())
    from helios.models import ModelConfig, load_model

    labels = load_model(ModelConfig(name="minilm")).labels
    assert probs.shape == (90, len(labels))
    assert [row[0] for row in table["infer_topk_labels"].to_pylist()] == table["infer_label"].to_pylist()
    report = json.loads((run_dir / "report.json").read_text())
    assert report["outputs"]["columns"] == {"infer_probs": len(labels), "infer_topk_labels": 2, "infer_topk_probs": 2}
    rest = json.dumps({k: v for k, v in report.items() if k != "outputs"})
    assert "infer_probs" not in rest and "infer_topk" not in rest  # the report holds the summary, not the vectors


def test_a_table_without_its_column_fails_in_the_first_second(tmp_path):
    from helios.cli.run import preflight

    pq.write_table(pa.table({"id": ["a"], "body": ["x"]}), tmp_path / "t.parquet")
    (tmp_path / "notes.bin").write_bytes(b"x")
    with pytest.raises(UsageError, match=r"is a table, and its rows are the items: name the column to read with "
                                         r"--set infer.column=NAME \(its columns: id, body\)"):
        preflight(load_config(None, [f"input={tmp_path / 't.parquet'}"]))
    with pytest.raises(UsageError, match=r"table t.parquet has no column 'text' \(its columns: id, body\): set "
                                         r"infer.column to one of them"):
        preflight(load_config(None, [f"input={tmp_path / 't.parquet'}", "infer.column=text"]))
    with pytest.raises(UsageError, match=r"is a file Helios cannot read as a table: pass a directory, or a table"):
        preflight(load_config(None, [f"input={tmp_path / 'notes.bin'}"]))
    with pytest.raises(UsageError, match=r"input directory .*missing does not exist"):
        preflight(load_config(None, [f"input={tmp_path / 'missing'}"]))
