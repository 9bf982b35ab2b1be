"""predictions.parquet between stages: the infer stage's list columns survive refine/review rewrites, unchanged."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.predictions import read_predictions, save_predictions

LABELS = ("a", "b", "c")


def write(path, n: int = 10) -> None:
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=n).astype(np.float32)
    best = [LABELS[i] for i in probs.argmax(axis=1)]
    table = pa.table({
        "path": [f"t.parquet#{i}" for i in range(n)], "label": best, "infer_label": best,
        "infer_probs": pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), 3),
    })
    pq.write_table(table, path, row_group_size=4)  # several row groups: carried over group by group


def test_a_relabelled_row_keeps_the_infer_stages_probabilities(tmp_path):
    path = tmp_path / "predictions.parquet"
    write(path)
    frame = read_predictions(path)
    assert list(frame.columns) == ["path", "label", "infer_label"]  # vectors stay on disk
    frame.loc[3, "label"] = "c" if frame.loc[3, "label"] != "c" else "a"  # what review does
    frame["final_stage"] = "review"
    save_predictions(frame, path)
    table = pq.read_table(path)
    assert table.schema.field("infer_probs").type == pa.list_(pa.float32(), 3)
    probs = np.array(table["infer_probs"].to_pylist())
    assert [LABELS[i] for i in probs.argmax(axis=1)] == table["infer_label"].to_pylist()  # consistent with infer_label
    assert table["label"][3].as_py() != table["infer_label"][3].as_py()
    assert table["final_stage"].to_pylist() == ["review"] * 10


def test_rows_out_of_order_are_refused_not_mismatched(tmp_path):
    path = tmp_path / "predictions.parquet"
    write(path)
    frame = read_predictions(path).iloc[::-1]
    with pytest.raises(RuntimeError, match="changed order"):
        save_predictions(frame.reset_index(drop=True), path)
    with pytest.raises(RuntimeError, match="must keep every row"):
        save_predictions(frame.iloc[:5], path)
    assert pq.read_table(path).num_rows == 10  # the file is left as it was
