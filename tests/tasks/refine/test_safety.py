import numpy as np

from tasks.refine.safety import batches, detect_collapse, mixed_order


def test_mixed_order_spreads_a_class_sorted_stream():
    labels = np.repeat(np.arange(10), 30)  # files grouped by class, scanned in name order
    order = mixed_order(labels, np.random.default_rng(0))
    assert sorted(order) == list(range(300))
    for batch in batches(order, 20):
        assert len(np.unique(labels[batch])) >= 8  # never a single-class batch


def test_collapse_is_a_drop_in_class_diversity_or_zero_entropy():
    source = np.repeat(np.arange(10), 10)
    spread = np.full((100, 10), 0.02)
    spread[np.arange(100), source] = 0.82
    assert detect_collapse(source, spread, 10, 0.5, 1e-3) is None
    piled = np.full((100, 10), 0.02)
    piled[:, 3] = 0.82
    assert "degenerated" in detect_collapse(source, piled, 10, 0.5, 1e-3)
    certain = np.eye(10)[source]
    assert "entropy fell" in detect_collapse(source, certain, 10, 0.5, 1e-3)
    assert "NaN" in detect_collapse(source, np.full((100, 10), np.nan), 10, 0.5, 1e-3)


def test_a_confused_source_spreading_out_is_not_collapse():
    source = np.full(100, 8)  # e.g. fog: the source calls everything an 8
    spread = np.full((100, 10), 0.02)
    spread[np.arange(100), np.arange(100) % 10] = 0.82
    assert detect_collapse(source, spread, 10, 0.5, 1e-3) is None
