"""What a worker checks before a deployment's run: where Helios is, and parameters that would run code on it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows.deployments import (CODE_OPT_IN, check_deployment_parameters, enter_helios_home, helios_home,
                               home_problem)
from helios.errors import UsageError
from helios.models import ModelConfig

REPO = Path(__file__).resolve().parents[2]


def test_helios_home_falls_back_to_the_checkout_helios_runs_from(monkeypatch):
    monkeypatch.delenv("HELIOS_HOME", raising=False)
    assert helios_home() == REPO and home_problem(REPO) is None


def test_a_wrong_helios_home_is_one_line_naming_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HELIOS_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match=rf"HELIOS_HOME={tmp_path} does not hold Helios.*export HELIOS_HOME="):
        enter_helios_home()


def test_the_pull_step_enters_helios_home(monkeypatch):
    monkeypatch.setenv("HELIOS_HOME", str(REPO))
    monkeypatch.chdir("/")
    assert enter_helios_home() == {"directory": str(REPO)} and Path(os.getcwd()) == REPO


@pytest.mark.parametrize("model", [ModelConfig(name="mynets.small:build"), ModelConfig(allow_pickle=True)])
def test_deployment_parameters_that_run_code_need_the_workers_opt_in(monkeypatch, model):
    monkeypatch.delenv(CODE_OPT_IN, raising=False)
    with pytest.raises(UsageError, match=f"set {CODE_OPT_IN}=1"):
        check_deployment_parameters(model, deployment_id="d3b07384")
    check_deployment_parameters(model, deployment_id=None)  # the CLI: the user's own code on the user's machine
    monkeypatch.setenv(CODE_OPT_IN, "1")
    check_deployment_parameters(model, deployment_id="d3b07384")


def test_safe_parameters_pass_without_opt_in(monkeypatch):
    monkeypatch.delenv(CODE_OPT_IN, raising=False)
    check_deployment_parameters(ModelConfig(name="minilm"), deployment_id="d3b07384")


@pytest.mark.parametrize("model", [ModelConfig(name="mynets.small:build"), ModelConfig(allow_pickle=True)])
def test_the_gpu_deployments_infer_flow_refuses_code_without_opt_in(monkeypatch, model):
    """flows/infer.py's infer_flow is the helios-infer-gpu deployment's entry point: the same guard applies to its
    own ``model`` parameter (tests/integration/test_prefect_deployments.py runs it on a real worker)."""
    from flows.infer import refuse_deployment_code
    from tasks.infer.model_ref import ModelRef

    ref = ModelRef(model=model, onnx_path="model.onnx", variant="fp32", identity="0" * 32)
    monkeypatch.delenv(CODE_OPT_IN, raising=False)
    with pytest.raises(UsageError, match=f"set {CODE_OPT_IN}=1 in the worker's environment"):
        refuse_deployment_code(ref, lambda: "d3b07384")
    refuse_deployment_code(ref, lambda: None)  # not from a deployment: the pipeline's own subflow, the CLI
    monkeypatch.setenv(CODE_OPT_IN, "1")
    refuse_deployment_code(ref, lambda: "d3b07384")


def test_a_safe_infer_model_never_asks_which_deployment_runs_it(monkeypatch):
    from flows.infer import refuse_deployment_code
    from tasks.infer.model_ref import ModelRef

    def no_lookup() -> str:
        raise AssertionError("the deployment was looked up for a model that runs no code")

    monkeypatch.delenv(CODE_OPT_IN, raising=False)
    refuse_deployment_code(ModelRef(model=ModelConfig(name="minilm"), onnx_path="m.onnx", variant="fp32",
                                    identity="0" * 32), no_lookup)
