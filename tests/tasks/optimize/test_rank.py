"""Successive halving over (variant, batch) arms: stops when the ranking is clear, the budget is spent, or rounds run
out; drops the slower half each round but keeps the best lossless arm. Arms time deterministic passes."""
from tasks.optimize.rank import Arm, halve, rank_arms, ranking_clear


def arm(variant, batch, rates, lossless=False):
    """An arm whose successive timed passes return ``rates`` (then the last one again)."""
    seq = list(rates)
    return Arm(variant, batch, lossless, lambda: seq.pop(0) if len(seq) > 1 else seq[0], best=seq.pop(0))


def test_a_clear_leader_is_not_timed_again():
    arms = [arm("fp32", 8, [100, 100], True), arm("int8-dynamic", 8, [300, 300])]
    notes = rank_arms(arms, deadline=float("inf"), max_rounds=3)
    assert notes["stopped"] == "ranking clear" and notes["rounds"] == 1
    assert [a.passes for a in arms] == [1, 1]


def test_close_arms_are_timed_again_and_the_slower_half_dropped():
    arms = [arm("fp32", 1, [90, 95], True), arm("fp32", 8, [100, 104], True),
            arm("int8-dynamic", 1, [95, 99]), arm("int8-dynamic", 8, [105, 125])]
    notes = rank_arms(arms, deadline=float("inf"), max_rounds=3)
    assert all(a.passes >= 2 for a in arms)  # round 2 timed every arm
    assert arms[3].best == 125 and arms[1].best == 104  # the best figure of each arm is kept
    assert arms[0].dropped and arms[2].dropped and not arms[1].dropped  # slower half out, best lossless kept
    assert notes["finalists"] == ["int8-dynamic b8", "fp32 b8"]


def test_the_budget_stops_the_rounds():
    arms = [arm("fp32", 8, [100, 101], True), arm("int8-dynamic", 8, [104, 105])]
    ticks = iter([0.0, 5.0, 5.0, 5.0])
    notes = rank_arms(arms, deadline=1.0, max_rounds=5, clock=lambda: next(ticks))
    assert notes["stopped"] == "time budget spent" and [a.passes for a in arms] == [1, 1]


def test_max_rounds_bounds_the_passes():
    arms = [arm("fp32", 8, [100, 100, 100, 100], True), arm("int8-dynamic", 8, [105, 105, 105, 105])]
    notes = rank_arms(arms, deadline=float("inf"), max_rounds=3)
    assert notes["stopped"] == "max rounds reached" and max(a.passes for a in arms) == 3


def test_halve_keeps_the_best_lossless_arm_and_one_variant_is_clear():
    arms = [arm("int8-dynamic", 8, [300]), arm("int8-dynamic", 32, [290]), arm("fp32", 8, [100], True)]
    assert [a.variant for a in halve(arms)] == ["int8-dynamic", "int8-dynamic", "fp32"]
    assert ranking_clear([arm("fp32", 1, [10], True), arm("fp32", 8, [11], True)])
