import numpy as np
import pytest
import torch
from torch import nn

from tasks.refine import tent


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5),
                         nn.BatchNorm1d(5)).eval()


def data(n=32):
    return torch.from_numpy(np.random.default_rng(0).normal(size=(n, 1, 8, 8)).astype(np.float32))


def test_only_batchnorm_affine_parameters_are_trained():
    model = tent.configure_model(net())
    params, names = tent.collect_params(model)
    assert names == ["1.weight", "1.bias", "5.weight", "5.bias"]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == names and not model.training


def test_steps_lower_the_entropy_and_reset_undoes_them():
    model = tent.configure_model(net())
    params, _ = tent.collect_params(model)
    opt = torch.optim.Adam(params, lr=1e-2)
    saved = tent.copy_state(model, opt)
    first = tent.forward_and_adapt(model, [data()], opt, max_grad_norm=1.0)
    for _ in range(10):
        last = tent.forward_and_adapt(model, [data()], opt, max_grad_norm=1.0)
    assert last < first
    tent.reset(model, opt, saved)
    torch.testing.assert_close(model[1].weight, net()[1].weight)


def test_a_step_does_not_depend_on_how_items_are_chunked():
    a, b = tent.configure_model(net()), tent.configure_model(net())
    opt_a = torch.optim.Adam(tent.collect_params(a)[0], lr=1e-2)
    opt_b = torch.optim.Adam(tent.collect_params(b)[0], lr=1e-2)
    x = data(12)
    tent.forward_and_adapt(a, [x], opt_a, 1.0)
    tent.forward_and_adapt(b, list(x.split(1)), opt_b, 1.0)  # compute batch size 1
    torch.testing.assert_close(a[1].bias, b[1].bias, rtol=1e-5, atol=1e-6)


def test_nan_loss_raises_before_any_step():
    model = tent.configure_model(net())
    opt = torch.optim.Adam(tent.collect_params(model)[0], lr=1e-2)
    bad = data()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(tent.NonFinite):
        tent.forward_and_adapt(model, [bad], opt, 1.0)
    torch.testing.assert_close(model[1].weight, net()[1].weight)


def test_entropy_limit_can_leave_every_item_out():
    model = tent.configure_model(net())
    opt = torch.optim.Adam(tent.collect_params(model)[0], lr=1e-2)
    tent.forward_and_adapt(model, [data()], opt, 1.0, entropy_limit=1e-9)
    torch.testing.assert_close(model[1].weight, net()[1].weight)


@pytest.mark.parametrize("limit,diversity", [(None, 0.0), (1.2, 0.5)])
def test_large_steps_kept_one_chunk_at_a_time_move_the_parameters_as_one_graph_does(monkeypatch, limit, diversity):
    x = data()
    moved = []
    for graph_bytes in (1 << 30, 0):  # one graph for the step, then one chunk's graph at a time
        monkeypatch.setattr(tent, "GRAPH_BYTES", graph_bytes)
        model = tent.configure_model(net())
        params, _ = tent.collect_params(model)
        opt = torch.optim.Adam(params, lr=1e-2)
        for _ in range(3):
            tent.forward_and_adapt(model, list(x.split(8)), opt, 1.0, limit, diversity)
        moved.append(torch.cat([p.detach().flatten() for p in params]))
    assert torch.allclose(moved[0], moved[1], atol=1e-6), (moved[0] - moved[1]).abs().max()
