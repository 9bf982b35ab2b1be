"""Accuracy after each stage, overall and per group, against a row-by-row count."""
import pandas as pd

from tasks.report.accuracy import corruption_errors, group_accuracy, stage_accuracy


def frame():
    return pd.DataFrame({
        "path": ["a", "b", "c", "d", "e", "f"],
        "status": ["ok", "ok", "ok", "ok", "error", "ok"],
        "infer_label": ["1", "2", "3", "4", None, "6"],
        "refined_label": [None, "7", "3", None, None, "6"],
        "label": ["1", "7", "3", "9", None, "6"],
    })


TRUTH = {"a": "1", "b": "7", "c": "0", "d": "4", "e": "5"}  # f has no true label
GROUPS = {"a": "clean", "b": "fog", "c": "fog", "d": "clean", "e": "fog", "f": "fog"}


def test_each_stage_counts_labelled_rows_and_error_rows_are_wrong():
    got = stage_accuracy(frame(), TRUTH)
    # infer: a right, b wrong, c wrong, d right, e error -> 2/5; refine: b fixed -> 3/5; review: d broken -> 2/5
    assert got == {"infer": 0.4, "refine": 0.6, "review": 0.4}
    assert stage_accuracy(frame(), None) == {} and stage_accuracy(frame(), {"zz": "1"}) == {}


def test_per_group_and_the_corruption_table():
    per = group_accuracy(frame(), TRUTH, GROUPS)
    assert per == {"clean": {"infer": 1.0, "refine": 1.0, "review": 0.5},
                   "fog": {"infer": 0.0, "refine": 1 / 3, "review": 1 / 3}}
    assert corruption_errors(per)["fog"] == {"infer": 1.0, "refine": round(1 - 1 / 3, 4)}
    assert group_accuracy(frame(), TRUTH, None) is None
