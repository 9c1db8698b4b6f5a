"""Check tapegrad.reference against losses written straight from their definitions.

The forward models here are written again from the equations, independently of the module
under test. Central finite differences of them must match every hand-derived gradient,
every per-step contribution and every dL/dh_t to a relative error of at most 1e-7 (norm-wise).
"""

import ast
import pathlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import tapegrad.reference as reference
from tapegrad.reference import elman_bptt, elman_loss_fun, gru_bptt, lstm_bptt

T, B, D, H, O = 5, 3, 2, 4, 2
EPS = 1e-5
RTOL = 1e-7
MODELS = ["elman_loss_fun", "elman_bptt", "lstm_bptt", "gru_bptt"]


def numeric_grad(f, x, eps=EPS):
    """Return the central finite differences of the scalar f() with respect to x, which is perturbed in place."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        f_plus = f()
        x[idx] = old - eps
        f_minus = f()
        x[idx] = old
        grad[idx] = (f_plus - f_minus) / (2 * eps)
    return grad


def assert_grad_close(analytic, numeric):
    assert analytic.shape == numeric.shape
    scale = max(np.linalg.norm(analytic), np.linalg.norm(numeric))
    assert scale > 0, "a zero gradient would make the comparison vacuous"
    assert np.linalg.norm(analytic - numeric) / scale <= RTOL


# Forward models taken from the equations: a cell maps (x, state, params) to the new state,
# where state[0] is h; a head maps (h, target, params) to the loss term of that step.

def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def seed_cell(x, state, P):
    (h,) = state
    return (np.tanh(P["Wxh"] @ x + P["Whh"] @ h + P["bh"]),)


def elman_cell(x, state, P):
    (h,) = state
    return (np.tanh(x @ P["U"] + h @ P["W"] + P["b"]),)


def lstm_cell(x, state, P):
    h, c = state
    i = sigmoid(x @ P["W_i"] + h @ P["U_i"] + P["b_i"])
    f = sigmoid(x @ P["W_f"] + h @ P["U_f"] + P["b_f"])
    o = sigmoid(x @ P["W_o"] + h @ P["U_o"] + P["b_o"])
    g = np.tanh(x @ P["W_g"] + h @ P["U_g"] + P["b_g"])
    c = f * c + i * g
    return o * np.tanh(c), c


def gru_cell(x, state, P):
    (h,) = state
    z = sigmoid(x @ P["U_z"] + h @ P["W_z"] + P["b_z"])
    r = sigmoid(x @ P["U_r"] + h @ P["W_r"] + P["b_r"])
    h_cand = np.tanh(x @ P["U_h"] + (r * h) @ P["W_h"] + P["b_h"])
    return ((1 - z) * h_cand + z * h,)


def seed_head(h, target, P):
    return np.sum((P["Why"] @ h + P["by"] - target) ** 2) / (2 * T)


def batched_head(h, target, P):
    return 0.5 * np.sum((h @ P["V"] + P["c"] - target) ** 2) / len(h)


def unroll(cell, head, xs, ys, state, P, at=None, inject=None):
    """Return (loss, last state).

    at=(s, name, value): parameter `name` takes `value` at step s only.
    inject=(s, delta): delta is added to h_s as soon as step s has computed it.
    """
    loss = 0.0
    for t in range(len(xs)):
        P_t = {**P, at[1]: at[2]} if at is not None and at[0] == t else P
        state = cell(xs[t], state, P_t)
        if inject is not None and inject[0] == t:
            state = (state[0] + inject[1],) + state[1:]
        loss += head(state[0], ys[t], P_t)
    return loss, state


@dataclass
class Case:
    params: dict  # float64 arrays; numeric_grad perturbs them in place
    run: Callable  # run(**keywords) -> the function under test called on this case's data
    spec: Callable  # spec(at=None, inject=None) -> (loss, last state) from the definition
    state0: tuple  # the initial state, h first


def rand(rng, *shape):
    return rng.normal(scale=0.5, size=shape)


def make_case(model):
    rng = np.random.default_rng(sum(map(ord, model)))
    if model == "elman_loss_fun":
        P = {"Wxh": rand(rng, H, D), "Whh": rand(rng, H, H), "Why": rand(rng, O, H),
             "bh": rand(rng, H, 1), "by": rand(rng, O, 1)}
        xs, ys, h0 = rand(rng, T, D, 1), rand(rng, T, O, 1), rand(rng, H, 1)
        return Case(P, lambda **kw: elman_loss_fun(xs, ys, h0, **P, **kw),
                    lambda **kw: unroll(seed_cell, seed_head, xs, ys, (h0,), P, **kw), (h0,))
    xs, ys, h0 = rand(rng, T, B, D), rand(rng, T, B, O), rand(rng, B, H)
    P = {"V": rand(rng, H, O), "c": rand(rng, O)}
    if model == "elman_bptt":
        P.update(U=rand(rng, D, H), W=rand(rng, H, H), b=rand(rng, H))
        return Case(P, lambda **kw: elman_bptt(xs, ys, h0, P, **kw),
                    lambda **kw: unroll(elman_cell, batched_head, xs, ys, (h0,), P, **kw), (h0,))
    if model == "lstm_bptt":
        for k in "ifog":
            P.update({f"W_{k}": rand(rng, D, H), f"U_{k}": rand(rng, H, H), f"b_{k}": rand(rng, H)})
        c0 = rand(rng, B, H)
        return Case(P, lambda **kw: lstm_bptt(xs, ys, h0, c0, P, **kw),
                    lambda **kw: unroll(lstm_cell, batched_head, xs, ys, (h0, c0), P, **kw), (h0, c0))
    for k in "zrh":
        P.update({f"U_{k}": rand(rng, D, H), f"W_{k}": rand(rng, H, H), f"b_{k}": rand(rng, H)})
    return Case(P, lambda **kw: gru_bptt(xs, ys, h0, P, **kw),
                lambda **kw: unroll(gru_cell, batched_head, xs, ys, (h0,), P, **kw), (h0,))


def as_state(last):
    return last if isinstance(last, tuple) else (last,)


@pytest.mark.parametrize("model", MODELS)
def test_loss_and_last_state_match_definition(model):
    case = make_case(model)
    loss, _, last = case.run(per_step=False)
    spec_loss, spec_state = case.spec()
    assert isinstance(loss, float)
    assert loss == pytest.approx(spec_loss, rel=1e-13)
    for got, want in zip(as_state(last), spec_state, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)


@pytest.mark.parametrize("model", MODELS)
def test_gradients_match_finite_differences(model):
    case = make_case(model)
    _, grads, _ = case.run(per_step=False)
    assert set(grads) == set(case.params)
    for name, value in case.params.items():
        assert grads[name].dtype == np.float64
        assert_grad_close(grads[name], numeric_grad(lambda: case.spec()[0], value))


@pytest.mark.parametrize("model", MODELS)
def test_per_step_contributions_match_finite_differences(model):
    case = make_case(model)
    _, _, _, steps = case.run(per_step=True)
    assert set(steps["dW_steps"]) == set(case.params)
    for name, value in case.params.items():
        assert len(steps["dW_steps"][name]) == T
        for s in range(T):
            copy_at_s = value.copy()
            numeric = numeric_grad(lambda: case.spec(at=(s, name, copy_at_s))[0], copy_at_s)
            assert_grad_close(steps["dW_steps"][name][s], numeric)


@pytest.mark.parametrize("model", MODELS)
def test_per_step_contributions_sum_to_totals(model):
    case = make_case(model)
    loss, grads, _ = case.run(per_step=False)
    loss_ps, grads_ps, _, steps = case.run(per_step=True)
    assert loss_ps == loss
    for name in case.params:
        np.testing.assert_array_equal(grads_ps[name], grads[name])
        np.testing.assert_allclose(sum(steps["dW_steps"][name]), grads[name], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("model", MODELS)
def test_dh_is_total_derivative(model):
    case = make_case(model)
    _, _, _, steps = case.run(per_step=True)
    assert len(steps["dh"]) == T
    for t in range(T):
        delta = np.zeros_like(case.state0[0])
        numeric = numeric_grad(lambda: case.spec(inject=(t, delta))[0], delta)
        assert_grad_close(steps["dh"][t], numeric)


def test_elman_loss_fun_clip():
    case = make_case("elman_loss_fun")
    clip = 0.05
    loss, grads, h_last = case.run()
    loss_c, grads_c, h_last_c, steps = case.run(clip=clip, per_step=True)
    assert loss_c == loss
    np.testing.assert_array_equal(h_last_c, h_last)
    n_clipped = 0
    for name in case.params:
        np.testing.assert_array_equal(grads_c[name], np.clip(grads[name], -clip, clip))
        # the per-step contributions stay unclipped: they add up to the unclipped total
        np.testing.assert_allclose(sum(steps["dW_steps"][name]), grads[name], rtol=1e-12, atol=1e-15)
        n_clipped += np.count_nonzero(np.abs(grads[name]) > clip)
    assert n_clipped > 0, "the threshold must actually cut something"


def seed_lossFun(inputs, targets, hprev, Wxh, Whh, Why, bh, by):
    """Copied from seed 003 (min-char-rnn adapted to cos regression); only the comments were dropped."""
    xs, hs, ys = {}, {}, {}
    hs[-1] = np.copy(hprev)
    loss = 0
    for t in range(len(inputs)):
        xs[t] = inputs[t]
        hs[t] = np.tanh(np.dot(Wxh, xs[t]) + np.dot(Whh, hs[t-1]) + bh)
        ys[t] = np.dot(Why, hs[t]) + by
        loss += np.square(ys[t][0][0]-targets[t])
    loss /= 2*len(inputs)
    dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
    dbh, dby = np.zeros_like(bh), np.zeros_like(by)
    dhnext = np.zeros_like(hs[0])
    for t in reversed(range(len(inputs))):
        dy = np.copy(ys[t])
        dy[0][0] -= targets[t]
        dWhy += np.dot(dy, hs[t].T)
        dby += dy
        dh = np.dot(Why.T, dy) + dhnext
        dhraw = (1 - hs[t] * hs[t]) * dh
        dbh += dhraw
        dWxh += np.dot(dhraw, xs[t].T)
        dWhh += np.dot(dhraw, hs[t-1].T)
        dhnext = np.dot(Whh.T, dhraw)
    for dparam in [dWxh, dWhh, dWhy, dbh, dby]:
        np.clip(dparam, -5, 5, out=dparam)
    return loss, dWxh, dWhh, dWhy, dbh, dby, hs[len(inputs)-1]


def test_elman_loss_fun_agrees_with_seed_on_its_cos_data():
    """On the seed's own data (scalar cos values, D = O = 1) the loss and last state are the seed's.

    The seed's gradients are T times ours because it does not divide dy by T.
    """
    rng = np.random.default_rng(3)
    x = 1.3 + np.arange(T + 1) * 0.01  # data.next_batch: T + 1 points, one resolution apart
    inputs, targets = np.cos(x[:-1]), np.cos(x[1:])
    P = {"Wxh": rand(rng, H, 1), "Whh": rand(rng, H, H), "Why": rand(rng, 1, H),
         "bh": rand(rng, H, 1), "by": rand(rng, 1, 1)}
    hprev = np.zeros((H, 1))
    seed_loss, *seed_grads, seed_h = seed_lossFun(inputs, targets, hprev, *P.values())
    loss, grads, h_last = elman_loss_fun(inputs, targets, hprev, **P)
    assert loss == pytest.approx(seed_loss, rel=1e-14)
    np.testing.assert_allclose(h_last, seed_h, rtol=1e-14)
    for name, seed_grad in zip(P, seed_grads, strict=True):
        assert np.abs(seed_grad).max() < 5  # the seed's clip did not change anything here
        np.testing.assert_allclose(T * grads[name], seed_grad, rtol=1e-12)


def test_gru_keeps_previous_state_when_update_gate_is_one():
    """The seed's convention: h_t = (1 - z) h~ + z h_{t-1}, so z = 1 copies h_{t-1}."""
    case = make_case("gru_bptt")
    case.params["b_z"][:] = 50.0
    _, _, h_last = case.run()
    np.testing.assert_array_equal(h_last, case.state0[0])


def test_module_imports_nothing_but_numpy():
    tree = ast.parse(pathlib.Path(reference.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported == {"numpy"}
