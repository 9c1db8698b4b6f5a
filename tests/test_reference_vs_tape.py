"""tapegrad.reference proven against the tape and finite differences, totals and per step.

Hand-derived BPTT (reference), the tape (tapegrad.grad and compare's per-step split) and
fourth-order central differences agree to 1e-9 relative in float64. Elementwise between the two
exact gradients; norm-wise, ||a - b|| / ||b||, against finite differences, whose round-off
(~1e-13 absolute here) is not small relative to the tiniest entries.
"""
import numpy as np
import pytest

import tapegrad as tg
import tapegrad.tape as tape_state
from tapegrad import check
from tapegrad.gradcheck import central_differences
from tapegrad.testing import reference_case

MODELS = ["elman_loss_fun", "elman_bptt", "lstm_bptt", "gru_bptt"]
T = 4
RTOL = 1e-9


def fd4(loss, x, h=1e-3):
    """Richardson-extrapolated central differences of loss() in every entry of the Tensor x: O(h^4)."""
    def value():
        with tg.no_grad():
            return float(loss().data)

    def d(e):
        return np.array([(up - down) / (2 * e) for _, up, down in central_differences(x, e, value)])
    return ((4 * d(h) - d(2 * h)) / 3).reshape(x.shape)


def assert_exact_match(a, b):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-15 * np.abs(b).max())


def assert_norm_close(a, b):
    assert np.linalg.norm(a - b) <= RTOL * np.linalg.norm(b)


class AtStep(dict):
    """Parameters for `model`, except that `name` reads `value` while time step `step` runs."""

    def __init__(self, params, name, step, value):
        super().__init__(params)
        self.name, self.step, self.value = name, step, value

    def __getitem__(self, key):
        scope = tape_state.CURRENT_SCOPE
        if key == self.name and scope is not None and scope.step == self.step:
            return self.value
        return super().__getitem__(key)


@pytest.fixture(params=MODELS)
def case(request):
    return reference_case(request.param, T=T, seed=MODELS.index(request.param))


def test_totals_agree_three_ways(case):
    hand = case.hand()
    tape = dict(zip(case.params, tg.grad(case.loss_fn(), list(case.params.values()))))
    for name, p in case.params.items():
        assert_exact_match(tape[name].data, hand[name])
        assert_norm_close(hand[name], fd4(case.loss_fn, p))


def test_per_step_contributions_agree_three_ways(case):
    """The tape's split of each weight's gradient over the steps that use it is the hand-derived one,
    and each step's contribution is the derivative in a copy of the weight used at that step only."""
    hand = case.hand()
    split = check.compare(case.loss_fn, case.params, hand=hand, per_step=True).tape_steps
    for name, p in case.params.items():
        assert sorted(split[name]) == list(range(T))
        for t in range(T):
            assert_exact_match(split[name][t], hand[f"{name}@steps"][t])
        assert_exact_match(sum(split[name].values()), hand[name])
        for t in range(T):
            copy = tg.tensor(p.data.copy(), requires_grad=True)
            at_t = AtStep(case.params, name, t, copy)
            assert_norm_close(hand[f"{name}@steps"][t], fd4(lambda: case.model(at_t), copy))


def test_state_gradients_agree(case):
    """dL/dh_t of the tensor named "h" at step t is the reference's total derivative dh[t]."""
    hand = case.hand()
    dh = check.compare(case.loss_fn, case.params, hand=hand, per_step=True).tape_steps["h"]
    assert sorted(dh) == list(range(T))
    for t in range(T):
        assert_exact_match(dh[t], hand["h@steps"][t])


def test_compare_report_on_the_reference_is_fine(case):
    report = check.compare(case.loss_fn, case.params, hand=case.hand, per_step=True)
    assert report.ok and report.first_divergent_step is None and not report.notes
    for row in report.rows:
        assert row.band == "fine" and row.max_rel <= RTOL and row.tape_fd_rel < 1e-4
        assert row.signs[0] == row.signs[1] == row.tape.size
    assert {s.name for s in report.steps} == {f"{k}@steps" for k in case.params} | {"h@steps"}
    assert all(max(s.rel.values()) <= RTOL for s in report.steps)
