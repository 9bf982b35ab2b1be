"""SAR on LayerNorm: which parameters move, reliable-entropy filtering, the two-step SAM update, model recovery; patch
alignment (CORAL folded into the patch embedding) for models that carry source patch statistics."""
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


def digits_like(n=64, seed=0):
    """Sparse strokes on a dark background (correlated pixels, like digits), with a little noise; model-ready."""
    rng = np.random.default_rng(seed)
    x = rng.normal(-0.42, 0.05, (n, 1, 28, 28)).astype(np.float32)
    for k in range(n):
        r, c = rng.integers(4, 20, 2)
        x[k, 0, r:r + 8, c:c + 3] = 2.8
        x[k, 0, r + 3, c - 2:c + 5] = 2.8
    return torch.from_numpy(x)


def vit_with_statistics(source):
    """The test ViT carrying the patch statistics of ``source`` (as mnist-vit carries its training digits')."""
    model = vit()
    mean, cov = sar.patch_moments(model.patch, [source])
    model.patch_statistics = {"layer": "patch", "mean": mean, "cov": cov}
    return model


def embedding_moments(model, x):
    with torch.no_grad():
        tokens = model.patch(x).flatten(2).transpose(1, 2).reshape(-1, model.patch.out_channels).double()
    return tokens.mean(0), torch.cov(tokens.T)


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


def test_a_layernorm_model_with_patch_statistics_is_adapted_by_default_and_not_when_turned_off(
        scan, vit_onnx, vit_frame, tmp_path_factory):
    from tasks.refine.context import RefineContext
    from tasks.refine.core import refine_predictions

    adapter, onnx_path = vit_onnx
    frame = vit_frame

    def refine(**overrides):
        cfg = RefineConfig(tent_epochs=1, max_rounds=1, methods=("tent",), **overrides)
        ctx = RefineContext(cfg, adapter, onnx_path, tmp_path_factory.mktemp("work"), ("CPUExecutionProvider",), 1)
        return refine_predictions(ctx, frame, scan.root, scan.truth)

    _, off = refine(adapt_layernorm=False)
    assert any("refine.adapt_layernorm=false" in n for n in off["notes"]) and not off["methods"], off
    out, default = refine(ttt_min_routed_share=0.0)  # 'auto': mnist-vit carries its training patches' statistics
    assert default["status"] == "done" and "tent" in default["methods"], default
    assert not any("parity" in r for r in default["reverted"])  # the adapted ViT was written back to ONNX
    assert len(out) == len(frame) and set(out["label"]) <= set(adapter.labels)


def test_auto_leaves_a_layernorm_model_without_patch_statistics_alone_and_true_adapts_it():
    from tasks.refine.plan import layernorm_reason

    bare, carrying = vit(), vit_with_statistics(digits_like(16))
    assert "refine.adapt_layernorm=true turns it on" in layernorm_reason(RefineConfig(), bare)
    assert layernorm_reason(RefineConfig(), carrying) is None
    assert "refine.adapt_layernorm=true" in layernorm_reason(RefineConfig(ln_align=False), carrying)
    assert layernorm_reason(RefineConfig(adapt_layernorm=True), bare) is None
    assert "false" in layernorm_reason(RefineConfig(adapt_layernorm=False), carrying)


def test_patch_alignment_gives_the_target_the_source_embedding_moments_and_changes_only_the_embedding():
    source = digits_like(64, 0)
    target = 0.3 * digits_like(64, 1) + 0.9  # low contrast on a bright background (contrast + fog-like)
    model = vit_with_statistics(source)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    want_mean, want_cov = embedding_moments(model, source)
    far_mean, _ = embedding_moments(model, target)
    assert (far_mean - want_mean).abs().max() > 1.0
    assert sar.align_patch_embedding(model, [target[:40], target[40:]], eps=1e-6)
    got_mean, got_cov = embedding_moments(model, target)
    torch.testing.assert_close(got_mean, want_mean, rtol=0, atol=1e-3)
    torch.testing.assert_close(got_cov, want_cov, rtol=1e-2, atol=1e-2)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"patch.weight", "patch.bias"}


def test_aligning_the_source_itself_changes_nothing():
    source = digits_like(64, 0)
    model = vit_with_statistics(source)
    with torch.no_grad():
        expected = model(source)
    assert sar.align_patch_embedding(model, [source], eps=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(model(source), expected, rtol=1e-3, atol=1e-3)


def test_without_usable_statistics_or_with_nan_inputs_alignment_changes_nothing():
    plain = vit()
    assert sar.patch_embedding(plain) is None and not sar.align_patch_embedding(plain, [data()], 1e-3)
    model = vit_with_statistics(digits_like())
    before = [p.detach().clone() for p in model.parameters()]
    nan = digits_like()
    nan[0, 0, 0, 0] = float("nan")
    assert not sar.align_patch_embedding(model, [nan], 1e-3)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    model.patch_statistics = {**model.patch_statistics, "layer": "blocks"}  # names no patchify convolution
    assert sar.patch_embedding(model) is None


def test_run_sar_aligns_first_and_keeps_the_aligned_model_when_sar_steps_are_reverted():
    source, target = digits_like(64, 0), 0.3 * digits_like(64, 1) + 0.9
    model = vit_with_statistics(source)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    labels = model(target).argmax(1).numpy()
    state = ttt.start_adaptation(model, target.numpy(), labels, 10, 64, np.random.default_rng(0))
    cfg = RefineConfig(sar_reset_share=1.0, sar_margin=1.0, sar_lr=0.05, sar_epochs=1, collapse_ratio=0.0)
    ttt.run_tent(state, cfg, 1, np.random.default_rng(0))
    assert "tent" in state.kept and any("SAR model recovery" in r for r in state.reverted), state.reverted
    changed = {n for n, p in state.module.named_parameters() if not torch.equal(p, original[n])}
    assert changed == {"patch.weight", "patch.bias"}  # aligned; SAR's LayerNorm steps undone


def test_alignment_alone_with_zero_sar_epochs_and_nothing_without_statistics():
    target = 0.3 * digits_like(64, 1) + 0.9
    for model, kept in ((vit_with_statistics(digits_like(64, 0)), ["tent"]), (vit(), [])):
        labels = model(target).argmax(1).numpy()
        state = ttt.start_adaptation(model, target.numpy(), labels, 10, 64, np.random.default_rng(0))
        compute = ttt.run_tent(state, RefineConfig(sar_epochs=0, collapse_ratio=0.0), 1, np.random.default_rng(0))
        assert state.kept == kept and compute.backward == 0, state.reverted


def test_an_alignment_that_collapses_the_predictions_is_reverted():
    source, target = digits_like(64, 0), 0.3 * digits_like(64, 1) + 0.9
    model = vit_with_statistics(source)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    labels = np.arange(64) % 10  # the reference spreads over every class; the untrained ViT answers few
    state = ttt.start_adaptation(model, target.numpy(), labels, 10, 64, np.random.default_rng(0))
    ttt.run_tent(state, RefineConfig(sar_epochs=0, collapse_ratio=1.0), 1, np.random.default_rng(0))
    assert not state.kept and any("patch alignment" in r for r in state.reverted), state.reverted
    assert all(torch.equal(p, original[n]) for n, p in state.module.named_parameters())
