"""Keys MLflow rejects (``& + ' ?`` in label and group names, ``a//b``) are encoded on the way into a real MLflow
SQLite store, and the run still finishes."""
from __future__ import annotations

import pytest

from flows.tracking import Tracker, mlflow_key

GROUPS = {"snow&fog": 0.5, "rock+roll": 0.25, "it's": 0.75, "why?": 1.0, "a//b": 0.125, "clean": 0.875}


def test_rejected_characters_are_encoded_and_accepted_keys_kept():
    assert [mlflow_key(k) for k in GROUPS] == ["snow_x26_fog", "rock_x2b_roll", "it_x27_s", "why_x3f_",
                                               "a_x2f__x2f_b", "clean"]
    assert mlflow_key("review.openai/fake-a.cost_usd") == "review.openai/fake-a.cost_usd"
    assert len(mlflow_key("x" * 400)) == 250 and mlflow_key("x" * 400) != mlflow_key("x" * 399 + "y")


def test_labels_mlflow_rejects_reach_a_real_sqlite_store(tmp_path):
    from mlflow.exceptions import MlflowException

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker.start(uri, "keys", tmp_path / "artifacts", {"helios.model": "test"})
    with pytest.raises(MlflowException):  # what the run would have died of without the encoding
        tracker.client.log_metric(tracker.run_id, "accuracy_by_group.snow&fog.infer", 0.5)
    tracker.metrics({"accuracy_by_group": {name: {"infer": value} for name, value in GROUPS.items()}})
    tracker.params({"labels": {name: name for name in GROUPS}})
    tracker.finish()

    run = tracker.client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {f"accuracy_by_group.{mlflow_key(n)}.infer": v for n, v in GROUPS.items()}
    assert run.data.params == {f"labels.{mlflow_key(n)}": n for n in GROUPS}  # the original name is the value
