"""SAR on LayerNorm: which parameters move, reliable-entropy filtering, the two-step SAM update, model recovery."""
import numpy as np
import torch

from helios.models.mnist_vit import build_network
from tasks.refine import sar, ttt
from tasks.refine.config import RefineConfig


def vit():
    torch.manual_seed(0)
    return build_network().eval()


def data(n=32, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 1, 28, 28)).astype(np.float32))


def test_only_layernorm_affine_parameters_below_the_top_are_trained():
    model = sar.configure_model(vit())
    _, names = sar.collect_params(model)
    assert names == [f"blocks.{b}.norm{k}.{p}" for b in range(4) for k in (1, 2) for p in ("weight", "bias")]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == names and not model.training  # the final norm before the head stays as it is


def test_steps_lower_the_entropy_and_leave_every_other_parameter_alone():
    model = sar.configure_model(vit())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = sar.new_optimizer(model, lr=0.05, rho=0.05)
    x = data()
    first = sar.forward_and_adapt(model, [x], opt, margin=float(np.log(10)))
    for _ in range(15):
        last = sar.forward_and_adapt(model, [x], opt, margin=float(np.log(10)))
    assert last < first
    trained = set(sar.collect_params(model)[1])
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) == (name not in trained), name


def test_with_a_zero_learning_rate_the_sam_perturbation_is_undone_exactly():
    model = sar.configure_model(vit())
    before = [p.detach().clone() for p in sar.collect_params(model)[0]]
    opt = sar.new_optimizer(model, lr=0.0, rho=0.5)
    assert sar.forward_and_adapt(model, [data()], opt, margin=float(np.log(10))) is not None
    for p, b in zip(sar.collect_params(model)[0], before):
        torch.testing.assert_close(p, b, rtol=0, atol=1e-7)


def test_unreliable_items_are_left_out_and_a_step_without_any_changes_nothing():
    model = sar.configure_model(vit())
    before = [p.detach().clone() for p in sar.collect_params(model)[0]]
    opt = sar.new_optimizer(model, lr=0.05, rho=0.05)
    assert sar.forward_and_adapt(model, [data()], opt, margin=1e-9) is None
    assert all(torch.equal(p, b) for p, b in zip(sar.collect_params(model)[0], before))


def test_an_answer_does_not_depend_on_its_batch_mates():
    model = vit()
    x = data(8)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(8)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_model_recovery_restores_the_model_it_started_from():
    model = vit()
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = data(64).numpy()
    labels = model(torch.from_numpy(x)).argmax(1).numpy()
    state = ttt.start_adaptation(model, x, labels, 10, 64, np.random.default_rng(0))
    cfg = RefineConfig(sar_reset_share=1.0, sar_margin=1.0, sar_lr=0.05, tent_epochs=1)  # any loss is below the floor
    compute = ttt.run_tent(state, cfg, 1, np.random.default_rng(0))
    assert any("SAR model recovery" in r for r in state.reverted) and "tent" not in state.kept, state.reverted
    assert compute.forward > 0 and compute.backward > 0
    for name, p in state.module.named_parameters():
        assert torch.equal(p, original[name]), name


def test_a_layernorm_model_is_refined_with_sar_only_when_asked(scan, vit_onnx, vit_frame, tmp_path_factory):
    from tasks.refine.context import RefineContext
    from tasks.refine.core import refine_predictions

    adapter, onnx_path = vit_onnx
    frame = vit_frame

    def refine(**overrides):
        cfg = RefineConfig(tent_epochs=1, max_rounds=1, methods=("tent",), **overrides)
        ctx = RefineContext(cfg, adapter, onnx_path, tmp_path_factory.mktemp("work"), ("CPUExecutionProvider",), 1)
        return refine_predictions(ctx, frame, scan.root, scan.truth)

    _, default = refine()
    assert any("refine.adapt_layernorm=true" in n for n in default["notes"]) and not default["methods"]
    out, asked = refine(adapt_layernorm=True, ttt_min_routed_share=0.0)
    assert asked["status"] == "done" and "tent" in asked["methods"], asked
    assert not any("parity" in r for r in asked["reverted"])  # the adapted ViT was written back to ONNX
    assert len(out) == len(frame) and set(out["label"]) <= set(adapter.labels)
