"""The reverse sweep's accumulation and shape checks: 0-d values, strict unbroadcasting, variadic ops."""
import time

import numpy as np
import pytest

import tapegrad as tg
from tapegrad.autodiff import unbroadcast


def _scalar(value=-0.66):
    return tg.tensor(np.array(value), requires_grad=True)


@pytest.mark.parametrize("uses", [2, 3, 4, 7])
def test_0d_value_used_many_times_gets_every_contribution(uses):
    x = _scalar()
    y = x * 1.0
    total = y
    for _ in range(uses - 1):
        total = total + y
    (gx,) = tg.grad(total, [x], retain_graph=True)
    assert gx.item() == pytest.approx(uses)
    total.backward()
    assert x.grad.shape == () and x.grad.item() == pytest.approx(uses)


def test_0d_gradient_accumulates_into_grad_across_backwards():
    x = _scalar()
    for k in range(1, 4):
        y = x * 2.0
        (y + y + y).backward()
        assert x.grad.item() == pytest.approx(6.0 * k)
        assert type(x.grad) is np.ndarray


def test_0d_higher_order_with_many_uses():
    x = _scalar(0.3)
    y = x * x
    (g,) = tg.grad(y + y + y, [x], create_graph=True)      # 6x
    (h,) = tg.grad(g, [x])
    assert g.item() == pytest.approx(6 * 0.3) and h.item() == pytest.approx(6.0)


def test_scalar_gain_shared_over_time_steps_matches_finite_differences():
    """A learnable scalar gain used at every step: the BPTT sum over steps lands in one 0-d gradient."""
    rng = np.random.default_rng(0)
    W = tg.tensor(rng.standard_normal((4, 4)) * 0.4, requires_grad=True)
    gain = tg.tensor(np.array(0.8), requires_grad=True)
    xs = rng.standard_normal((5, 2, 4))

    def loss(W, gain):
        h = tg.tensor(np.zeros((2, 4)))
        for x in xs:
            h = tg.tanh(gain * (x + h @ W))
        return (h * h).sum()

    assert tg.gradcheck(loss, [W, gain]).ok


def test_0d_indexed_gradient_and_reuse():
    x = _scalar(1.5)
    v = tg.tensor(np.arange(3.0), requires_grad=True)
    y = x * v[1] + x * v[1] + x[()] * 2.0
    y.backward()
    assert x.grad.item() == pytest.approx(2 * 1.0 + 2.0)
    assert v.grad.tolist() == pytest.approx([0.0, 3.0, 0.0])


@pytest.mark.parametrize("make", [lambda ps: tg.optim.SGD(ps, lr=0.1),
                                  lambda ps: tg.optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: tg.optim.Adam(ps, lr=0.1), lambda ps: tg.optim.RMSprop(ps, lr=0.1),
                                  lambda ps: tg.optim.Adagrad(ps, lr=0.1)])
def test_optimizers_update_0d_parameters_in_place(make):
    x = _scalar(1.0)
    array = x.data
    opt = make([x])
    for _ in range(3):
        opt.zero_grad()
        (x * x + x * x + x * x).backward()      # three contributions to a 0-d gradient
        opt.step()
    assert x.data is array and x.data.shape == ()
    assert x.data.item() < 1.0


def test_transpose_negative_axes_gradient():
    x = tg.tensor(np.random.default_rng(1).standard_normal((2, 3, 4)), requires_grad=True)
    for axes in [(0, -1, 1), (-3, -1, -2), (2, 0, 1), (-1, 0, 1)]:
        perm = [a % 3 for a in axes]
        w = np.random.default_rng(2).standard_normal(np.transpose(x.data, perm).shape)
        (gx,) = tg.grad((tg.transpose(x, axes) * w).sum(), [x])
        np.testing.assert_array_equal(gx.data, np.transpose(w, np.argsort(perm)))
        assert tg.gradcheck(lambda x: (tg.transpose(x, axes) ** 2 * w).sum(), [x]).ok


def test_transpose_refuses_a_non_permutation():
    x = tg.tensor(np.zeros((2, 3)), requires_grad=True)
    with pytest.raises(tg.ShapeError, match="permutation"):
        tg.transpose(x, (0, 0))
    with pytest.raises(tg.ShapeError, match="out of range"):
        tg.transpose(x, (0, 2))


def test_unbroadcast_accepts_only_what_broadcasting_produces():
    g = np.ones((5, 2, 3))
    assert unbroadcast(g, (2, 3)).shape == (2, 3)
    np.testing.assert_array_equal(unbroadcast(g, (1, 3)), np.full((1, 3), 10.0))
    assert unbroadcast(np.ones((1, 6)), (6,)).shape == (6,)
    for wrong in [(3, 2), (6,), (2, 3, 5), (30,)]:
        with pytest.raises(tg.GraphError, match="broadcasting cannot produce"):
            unbroadcast(g, wrong)


def test_a_rule_returning_the_wrong_shape_is_refused_not_reshaped():
    flip = tg.defop("bad_flip", lambda x: x.T.copy(), lambda g, ans, x: g)   # a rule that forgot to transpose back
    x = tg.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    with pytest.raises(tg.GraphError, match=r"bad_flip .*input 0.*\(3, 2\).*\(2, 3\)"):
        flip(x).sum().backward()


@pytest.mark.parametrize("join", ["concat", "stack"])
def test_variadic_ops_name_the_missing_list(join):
    a = tg.tensor(np.zeros((2, 3)), requires_grad=True)
    with pytest.raises(tg.ArgumentError, match=f"{join} takes a list of tensors"):
        getattr(tg, join)(a, a)


@pytest.mark.parametrize("join", [tg.stack, tg.concat])
def test_variadic_backward_is_linear_in_the_number_of_inputs(join):
    """The per-input cost of stack's/concat's backward must not grow with T (it was O(T^2))."""
    def per_input(T):
        xs = [tg.tensor(np.ones(3), requires_grad=True) for _ in range(T)]
        best = float("inf")
        for _ in range(3):
            out = join(xs).sum()
            start = time.perf_counter()
            out.backward()
            best = min(best, time.perf_counter() - start)
        return best / T

    small, large = per_input(500), per_input(8000)
    assert large < 3 * small, f"per-input backward cost grew {large / small:.1f}x from T=500 to T=8000"


@pytest.mark.parametrize("axis", [0, 1, -1, -2])
def test_concat_and_stack_gradients_with_negative_axes(axis):
    rng = np.random.default_rng(3)
    xs = [tg.tensor(rng.standard_normal((2, n)), requires_grad=True) for n in (1, 3, 2)]
    if axis in (0, -2):
        xs = [tg.tensor(rng.standard_normal((n, 3)), requires_grad=True) for n in (1, 3, 2)]
    assert tg.gradcheck(lambda *xs: (tg.concat(list(xs), axis=axis) ** 2).sum(), xs).ok
    same = [tg.tensor(rng.standard_normal((2, 3)), requires_grad=True) for _ in range(3)]
    w = rng.standard_normal(tg.stack(same, axis=axis).shape)
    assert tg.gradcheck(lambda *xs: (tg.stack(list(xs), axis=axis) ** 2 * w).sum(), same).ok


def test_unroll_and_backward_pause_the_cyclic_collector_and_restore_it():
    import gc

    seen = []

    def cell(x, h):
        seen.append(gc.isenabled())
        h = tg.tanh(x + h)
        return h, h

    xs = tg.tensor(np.ones((1, 3, 2)), requires_grad=True)
    out, _ = tg.nn.unroll(cell, xs, tg.tensor(np.zeros((1, 2))))
    out.sum().backward()
    assert seen == [False] * 3 and gc.isenabled()

    def failing(x, h):
        raise ValueError("boom")

    with pytest.raises(ValueError):
        tg.nn.unroll(failing, xs, tg.tensor(np.zeros((1, 2))))
    assert gc.isenabled()
    gc.disable()
    try:
        tg.nn.unroll(cell, xs, tg.tensor(np.zeros((1, 2))))[0].sum().backward()
        assert not gc.isenabled()              # a user's own choice stays as it was
    finally:
        gc.enable()
