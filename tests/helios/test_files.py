"""The one atomic writer and the labels reader, on real files."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from helios.catalog import RunCatalog
from helios.errors import UsageError
from helios.files import atomic_path, read_labels, write_frame, write_json


def test_writers_replace_the_file_and_leave_no_temp_files(tmp_path):
    target = tmp_path / "deep" / "report.json"
    write_json({"a": 1}, target)
    write_json({"a": 2}, target)
    assert json.loads(target.read_text()) == {"a": 2}
    write_frame(pd.DataFrame({"path": ["x"]}), tmp_path / "p.parquet")
    assert pd.read_parquet(tmp_path / "p.parquet")["path"].tolist() == ["x"]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["p.parquet", "report.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "config.json"
    write_json({"old": True}, target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half a fi")
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_read_labels(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,corruption\na.png,3,fog\nb.png,1,\n")
    assert read_labels(csv) == ({"a.png": "3", "b.png": "1"}, {"a.png": "fog"})
    assert read_labels(None) == (None, None)
    with pytest.raises(UsageError, match="does not exist"):
        read_labels(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("file,class\na,1\n")
    with pytest.raises(UsageError, match="needs path and label"):
        read_labels(tmp_path / "bad.csv")
    (tmp_path / "header-only.csv").write_text("file,class\n")  # wrong columns are named even without rows
    with pytest.raises(UsageError, match="needs path and label"):
        read_labels(tmp_path / "header-only.csv")


def test_read_labels_keeps_each_distinct_label_once(tmp_path):
    csv = tmp_path / "labels.csv"
    names = ("tabby cat", "sheep dog")  # longer than one character: CPython shares only those by itself
    csv.write_text("path,label,corruption\n" + "".join(f"{i}.png,{names[i % 2]},heavy fog\n" for i in range(6)))
    truth, groups = read_labels(csv)
    assert len({id(v) for v in truth.values()}) == 2 and len({id(v) for v in groups.values()}) == 1
    assert truth == {f"{i}.png": names[i % 2] for i in range(6)}


def test_catalog_names_run_and_work_files(tmp_path):
    catalog = RunCatalog.at(tmp_path / "work" / "run").create()
    assert catalog.run_dir.is_dir() and catalog.work_dir == tmp_path / "work"
    assert catalog.predictions.name == "predictions.parquet" and catalog.mlflow_db.parent == catalog.work_dir
    assert len(set(catalog.tracked)) == len(catalog.tracked)
