"""Where refine's torch work runs (``refine.device``): the CPU unless the stage runs on a GPU that torch sees; on a
GPU the answers match the CPU's. The GPU test is skipped without one (none was lent while this was written). On a
CPU stage ``auto`` is the CPU, so every other refine test checks the CPU answers under the default setting."""
import numpy as np
import pytest
import torch

from helios.data.corruptions import apply_corruption
from helios.models.base import softmax
from helios.models.mnist_cnn import normalize
from helios.models.mnist_data import load_split
from tasks.refine.config import RefineConfig
from tasks.refine.context import RefineContext
from tasks.refine.ttt import torch_device
from tasks.refine.work import refine_arrays
from tasks.session import open_session

CUDA = ("CUDAExecutionProvider", "CPUExecutionProvider")
CPU = ("CPUExecutionProvider",)


def test_the_device_follows_the_stage_and_what_torch_sees():
    assert torch_device("cpu", CUDA) == "cpu"
    assert torch_device("auto", CPU) == "cpu"  # the stage runs on the CPU: so does torch, GPU or not
    assert torch_device("auto", CUDA) == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="refine.device=cuda but torch sees no CUDA device"):
            torch_device("cuda", CUDA)


def fog_set(onnx_path, n=256):
    _, _, x, y = load_split()
    images = np.concatenate([x[:n // 2], apply_corruption("fog", x[n // 2:n], np.random.default_rng(0))])
    batch = normalize(images)
    probs = softmax(open_session(onnx_path).run({"image": batch})[0].astype(np.float64))
    return batch, probs.argmax(1), probs.max(1), y[:n]


def refine_on(device, providers, mnist_onnx, tmp_path):
    adapter, onnx_path = mnist_onnx
    x, label, conf, y = fog_set(onnx_path)
    ctx = RefineContext(RefineConfig(device=device, methods=["bn-adapt", "tent"]), adapter, onnx_path,
                        tmp_path / device, providers, 2)
    return refine_arrays(ctx, x, label, conf, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU path of refine's torch work is "
                                                          "untested here")
def test_on_a_gpu_torch_work_runs_there_and_the_answers_match_the_cpu(mnist_onnx, tmp_path):
    torch.cuda.reset_peak_memory_stats()
    gpu = refine_on("cuda", CUDA, mnist_onnx, tmp_path)
    assert torch.cuda.max_memory_allocated() > 0  # the module and the sample were on the GPU
    cpu = refine_on("cpu", CPU, mnist_onnx, tmp_path)
    assert (gpu.label == cpu.label).mean() >= 0.99
    assert gpu.summary["accuracy_after"] == pytest.approx(cpu.summary["accuracy_after"], abs=0.01)
