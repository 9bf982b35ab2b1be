"""``helios serve``: the ``mlflow models serve`` command it execs, and its errors (served for real in
tests/integration/test_serving.py)."""
import sys

import pytest

from helios.cli.serve import model_uri, serve_command
from helios.errors import UsageError


def test_a_registered_name_means_its_champion_and_uris_pass_through():
    assert model_uri("minilm") == "models:/minilm@champion"
    assert model_uri("models:/minilm@champion-cpu-avx2-2c") == "models:/minilm@champion-cpu-avx2-2c"
    assert model_uri("runs:/abc/model") == "runs:/abc/model"


def test_the_command_is_mlflow_models_serve_in_this_environment_with_the_store(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # creates the store
    command, env = serve_command("runs:/abc/model", 5001, "127.0.0.1", 2, uri)
    assert command == [sys.executable, "-m", "mlflow", "models", "serve", "-m", "runs:/abc/model", "--env-manager",
                       "local", "-h", "127.0.0.1", "-p", "5001", "-w", "2"]
    assert env["MLFLOW_TRACKING_URI"] == uri
    with pytest.raises(UsageError, match=r"models:/minilm@champion is not in the MLflow store .*helios run --model minilm"):
        serve_command("minilm", 5001, "127.0.0.1", 1, uri)


def test_a_missing_store_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(UsageError, match=r"no MLflow store at .*nowhere.db: run `helios run`"):
        serve_command("minilm", 5001, "127.0.0.1", 1, f"sqlite:///{tmp_path / 'nowhere.db'}")
