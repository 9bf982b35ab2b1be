import numpy as np
import torch
from torch import nn

from tasks.refine.bn_adapt import adapt_statistics, batchnorm_layers, has_batchnorm, restore_statistics, snapshot_statistics


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4),
                         nn.BatchNorm1d(4)).eval()


def target():
    return torch.from_numpy(np.random.default_rng(0).normal(2.0, 3.0, size=(48, 1, 8, 8)).astype(np.float32))


def chunks(x, size):
    return [x[i:i + size] for i in range(0, len(x), size)]


def test_statistics_do_not_depend_on_batch_size_or_order():
    x = target()
    a, b, c = net(), net(), net()
    adapt_statistics(a, chunks(x, 48), prior=0)
    adapt_statistics(b, chunks(x, 1), prior=0)  # batch size 1 is defined: the same statistics
    adapt_statistics(c, chunks(x[torch.randperm(48, generator=torch.Generator().manual_seed(1))], 5), prior=0)
    for la, lb, lc in zip(batchnorm_layers(a), batchnorm_layers(b), batchnorm_layers(c)):
        torch.testing.assert_close(la.running_mean, lb.running_mean)
        torch.testing.assert_close(la.running_var, lc.running_var)


def test_first_layer_gets_the_exact_target_moments():
    x = target()
    model = net()
    with torch.no_grad():
        h = model[0](x)
    adapt_statistics(model, chunks(x, 7), prior=0)
    torch.testing.assert_close(model[1].running_mean, h.mean((0, 2, 3)))
    torch.testing.assert_close(model[1].running_var, h.var((0, 2, 3), unbiased=False), rtol=1e-4, atol=1e-5)


def test_prior_keeps_a_single_item_from_taking_over():
    model, source = net(), net()
    adapt_statistics(model, [target()[:1]], prior=16)
    bn1d = batchnorm_layers(model)[-1]
    assert torch.isfinite(bn1d.running_var).all() and (bn1d.running_var > 0).all()
    shift = (bn1d.running_mean - batchnorm_layers(source)[-1].running_mean).abs()
    assert (shift < 1.0 / 17 * 50).all()  # weight 1/17 on the single item


def test_snapshot_and_restore():
    model = net()
    saved = snapshot_statistics(model)
    adapt_statistics(model, [target()], prior=0)
    restore_statistics(model, saved)
    torch.testing.assert_close(model[1].running_mean, torch.zeros(3))
    assert has_batchnorm(model) and not has_batchnorm(nn.Linear(2, 2))
