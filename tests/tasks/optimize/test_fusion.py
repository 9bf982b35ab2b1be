"""Attention fusion of an unmasked encoder (ViT): its scores are scaled by a Mul after the QK MatMul."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tasks.optimize.graph import divide_attention_scale, fuse_transformer, transformer_spec
from tasks.prepare.export import export_onnx


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    """A randomly initialised 2-layer ViT (hidden 64, 4 heads, 32x32 images, 8x8 patches) as a Hugging Face dir."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    from helios.models.config import ModelConfig
    from helios.models.hf import load_hf_model

    torch.manual_seed(0)
    model_dir = tmp_path_factory.mktemp("tiny-vit")
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128, id2label={0: "cat", 1: "dog", 2: "bird"})
    ViTForImageClassification(config).eval().save_pretrained(model_dir)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(model_dir)
    return load_hf_model(model_dir, ModelConfig(name=str(model_dir)))


def test_vit_attention_is_fused_and_matches_the_unfused_export(tiny_vit, tmp_path):
    source = export_onnx(tiny_vit, tmp_path / "prepared", 17)
    dst = tmp_path / "fp32-fused.onnx"
    fusion = fuse_transformer(tiny_vit, source, dst, transformer_spec(tiny_vit), 17, skip_layer_norm=False)["fusion"]
    assert fusion["model_type"] == "vit" and fusion["attention_scales_as_div"] == 2
    assert fusion["fused_operators"]["Attention"] == 2
    assert "Softmax" not in {n.op_type for n in onnx.load(str(dst)).graph.node}  # every head is in an Attention
    unfused, fused = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (source, dst))
    rng = np.random.default_rng(0)
    for batch in (1, 4):  # the batch axis stays dynamic
        feed = {"pixel_values": rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)}
        for want, got in zip(unfused.run(None, feed), fused.run(None, feed)):
            assert got.shape == want.shape and np.abs(got - want).max() < 1e-4


def scores_graph(scale: float, head_size: int = 16):
    """Softmax(MatMul(q, k) * scale): the unmasked score path of transformers' eager attention."""
    shape = [1, 2, 5, head_size]
    nodes = [helper.make_node("MatMul", ["q", "k"], ["qk"]), helper.make_node("Mul", ["qk", "scale"], ["scaled"]),
             helper.make_node("Softmax", ["scaled"], ["probs"], axis=-1)]
    inputs = [helper.make_tensor_value_info("q", TensorProto.FLOAT, shape),
              helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, 2, head_size, 5])]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "scores", inputs, outputs,
                              [numpy_helper.from_array(np.array(scale, dtype=np.float32), "scale")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_only_the_default_attention_scale_becomes_a_div():
    """The fused Attention scales by 1/sqrt(head_size) whatever the graph said: other scales must stay unfusable."""
    default, custom = scores_graph(16 ** -0.5), scores_graph(0.5)
    assert divide_attention_scale(default, head_size=16) == 1 and divide_attention_scale(custom, head_size=16) == 0
    assert [n.op_type for n in default.graph.node] == ["MatMul", "Div", "Softmax"]
    assert [n.op_type for n in custom.graph.node] == ["MatMul", "Mul", "Softmax"]
    q, k = np.random.default_rng(0).standard_normal((2, 1, 2, 5, 16), dtype=np.float32)
    feed = {"q": q, "k": k.transpose(0, 1, 3, 2)}
    before = ort.InferenceSession(scores_graph(16 ** -0.5).SerializeToString(), providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(default.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(after.run(None, feed)[0], before.run(None, feed)[0], rtol=1e-6)
