"""Task runners and the thread budget per session."""
from __future__ import annotations

import pytest

from tasks.infer.config import InferConfig
from flows.runners import make_task_runner, split_threads


def test_local_runner_runs_one_shard_per_core(mnist_ref):
    cfg = InferConfig(workers=2)
    assert make_task_runner(cfg)._max_workers == 2
    assert split_threads(cfg, mnist_ref.model_copy(update={"intra_op_threads": 4})).intra_op_threads == 2
    assert split_threads(InferConfig(workers=4), mnist_ref).intra_op_threads == 1  # never below one


def test_remote_cluster_keeps_the_threads_it_was_given(mnist_ref):
    cfg = InferConfig(runner="dask", runner_address="tcp://10.0.0.1:8786", workers=8)
    assert split_threads(cfg, mnist_ref.model_copy(update={"intra_op_threads": 6})).intra_op_threads == 6


@pytest.mark.parametrize("runner", ["ray", "dask"])
def test_scale_out_runners_are_built_lazily(runner):
    built = make_task_runner(InferConfig(runner=runner, workers=2))
    assert type(built).__name__ == {"ray": "RayTaskRunner", "dask": "DaskTaskRunner"}[runner]


@pytest.mark.parametrize("runner,module", [("ray", "prefect_ray"), ("dask", "prefect_dask")])
def test_missing_extra_is_a_usage_error(monkeypatch, runner, module):
    import sys

    from helios.errors import UsageError

    monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
    with pytest.raises(UsageError, match=r"pip install 'helios\[scale\]'"):
        make_task_runner(InferConfig(runner=runner))
