"""No silent wrong gradients: saved arrays cannot change behind the tape's back."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tapegrad as tg
from tapegrad.tape import mark_written


def test_op_outputs_are_read_only():
    x = tg.tensor(np.ones(3), requires_grad=True)
    h = tg.tanh(x)
    with pytest.raises(ValueError, match="read-only"):
        h.data[0] = 5.0


def test_in_place_update_of_saved_parameter_is_refused_at_backward():
    W = tg.tensor(np.eye(2), requires_grad=True, name="W_hh")
    with tg.scope("rnn", t=4):
        loss = (tg.tensor(np.ones((1, 2))) @ W @ W).sum()
    W.data -= 0.1                      # an optimizer step before backward
    mark_written(W)
    with pytest.raises(tg.GraphError, match=r"W_hh.*modified in place") as info:
        loss.backward()
    assert "matmul" in str(info.value) and "t = 4" in str(info.value)


def test_optimizer_steps_after_backward_are_fine():
    W = tg.tensor(np.eye(2), requires_grad=True)
    opt = tg.optim.SGD([W], lr=0.1)
    for _ in range(3):
        loss = (W @ W).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert np.isfinite(W.data).all()


def test_requires_grad_leaf_from_read_only_array_is_writable():
    h = tg.tanh(tg.tensor(np.ones(2), requires_grad=True))
    p = tg.tensor(h.data, requires_grad=True)
    p.data -= 1.0
    np.testing.assert_allclose(p.data, np.tanh(1.0) - 1.0)


def test_optimizer_step_between_forward_and_backward_is_refused():
    W = tg.tensor(np.eye(2), requires_grad=True, name="W")
    opt = tg.optim.SGD([W], lr=0.1)
    loss = (W @ W).sum()
    W.grad = np.ones((2, 2))
    opt.step()
    with pytest.raises(tg.GraphError, match="modified in place"):
        loss.backward()


UNARY = [tg.exp, tg.tanh, tg.sigmoid, tg.relu, tg.abs, lambda x: -x, lambda x: x * 2.0, lambda x: x.sum(axis=0),
         lambda x: x.mean(), lambda x: tg.softmax(x), lambda x: x.reshape(-1), lambda x: x.T, lambda x: x[0],
         lambda x: tg.concat([x, x]), lambda x: tg.stack([x, x]), lambda x: tg.broadcast_to(x, (2,) + x.shape)]
BINARY = [tg.add, tg.sub, tg.mul, tg.maximum, lambda a, b: a @ b.T]


@settings(max_examples=40, deadline=None)
@given(shape=hnp.array_shapes(min_dims=2, max_dims=2, max_side=4), dtype=st.sampled_from([np.float32, np.float64]),
       data=st.data())
def test_no_primitive_mutates_inputs_or_aliases_them_in_gradients(shape, dtype, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    a_np, b_np = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    a, b = tg.tensor(a_np.copy(), requires_grad=True), tg.tensor(b_np.copy(), requires_grad=True)
    if data.draw(st.booleans()):
        fn = data.draw(st.sampled_from(UNARY))
        out = fn(a)
    else:
        fn = data.draw(st.sampled_from(BINARY))
        out = fn(a, b)
    upstream = rng.standard_normal(out.shape).astype(dtype)
    upstream_copy = upstream.copy()
    out.backward(upstream)
    np.testing.assert_array_equal(a.data, a_np)
    np.testing.assert_array_equal(b.data, b_np)
    np.testing.assert_array_equal(upstream, upstream_copy)
    for t in (a, b):
        if t.grad is not None:
            assert t.grad.dtype == dtype
            assert not any(np.shares_memory(t.grad, x) for x in (a.data, b.data, upstream, out.data))
    if a.grad is not None and b.grad is not None:
        assert not np.shares_memory(a.grad, b.grad)


def test_verification_toolkit_never_reports_success_on_nan():
    from tapegrad import check
    W = tg.tensor(np.array([[4.0, -1.0]]), requires_grad=True)
    with np.errstate(all="ignore"):
        report = check.compare(lambda: tg.sqrt(W).sum(), {"W": W}, hand={"W": 0.5 / np.sqrt(np.abs(W.data))})
        assert not report.ok
        assert not tg.gradcheck(lambda w: tg.sqrt(w).sum(), [W], raise_exception=False).ok


def test_anomaly_mode_catches_a_raw_numpy_write_into_a_saved_leaf():
    W = tg.tensor(np.eye(2), requires_grad=True, name="W")
    x = tg.tensor(np.ones((1, 2)))
    with tg.detect_anomaly():
        loss = (x @ W).sum()
        x.data[0, 0] = 5.0                 # behind the tape's back
        with pytest.raises(tg.AnomalyError, match="changed in place"):
            loss.backward()
