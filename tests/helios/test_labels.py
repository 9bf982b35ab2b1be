"""PathLabels: a labels file's path -> label mapping held in Arrow, answering as the dict it replaces."""
import numpy as np
import pandas as pd
import pyarrow as pa

from helios.files import read_labels
from helios.labels import PathLabels, labels_of


def test_it_answers_as_a_dict_would(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,corruption\na.png,3,fog\nb.png,1,\nc.png,2,fog\nb.png,5,\n")
    truth, groups = read_labels(csv)
    assert truth == {"a.png": "3", "b.png": "5", "c.png": "2"}  # a path twice: its last row, as in a dict
    assert groups == {"a.png": "fog", "c.png": "fog"}
    assert "b.png" in truth and "b.png" not in groups and "zz.png" not in truth
    assert truth.get("zz.png") is None and truth["c.png"] == "2" and len(truth) == 3 and len(groups) == 2
    wanted = pd.Series(["c.png", "zz.png", "b.png", "a.png"])
    assert labels_of(truth, wanted).tolist() == ["2", None, "5", "3"]
    assert labels_of(groups, pa.array(wanted)).tolist() == ["fog", None, None, "fog"]
    assert labels_of(dict(truth), wanted).tolist() == ["2", None, "5", "3"]  # any mapping


def test_single_lookups_and_arrow_lookups_agree_with_a_dict_over_many_paths():
    rng = np.random.default_rng(0)
    paths = [f"d{i % 7}/{rng.integers(1 << 40):x}.png" for i in range(5000)]
    codes = rng.integers(-1, 3, len(paths))
    expected = {p: "abc"[c] for p, c in zip(paths, codes) if c >= 0}
    labels = PathLabels(pa.array(paths), codes, ["a", "b", "c"])
    assert labels == expected and all(labels.get(p) == expected.get(p) for p in paths)
    assert labels_of(labels, pd.Series(paths)).tolist() == [expected.get(p) for p in paths]


def test_a_labels_file_without_groups_has_none(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\na.png,3\n")
    truth, groups = read_labels(csv)
    assert truth == {"a.png": "3"} and groups is None
