"""Tape invariants, accumulation through time, long chains, memory, higher order, gradcheck itself."""
import gc
import tracemalloc

import numpy as np
import pytest

import tapegrad as tg
from tapegrad.errors import DTypeError, GraphError
from tapegrad.gradcheck import GradcheckError

RNG = np.random.default_rng(1)


def param(*shape, name=None, scale=0.5):
    return tg.tensor(RNG.standard_normal(shape) * scale, requires_grad=True, name=name)


def test_records_in_order_with_scopes():
    W, x = param(3, 3, name="W"), tg.tensor(np.ones((2, 3)))
    with tg.Tape() as tape:
        h = x
        for t in range(3):
            with tg.scope("cell"), tg.scope(t=t):
                h = tg.tanh(h @ W)
    assert [r.op for r in tape.records] == ["matmul", "tanh"] * 3
    assert [r.scope.step for r in tape.records] == [0, 0, 1, 1, 2, 2]
    assert all(r.scope.path == "cell" for r in tape)
    indices = [r.index for r in tape.records]
    assert indices == sorted(indices) and len(tape) == 6
    assert tape.records[1].inputs[0] is tape.records[0].output()
    assert tape.records[2].inputs[1] is W
    assert "matmul(%" in str(tape) and "cell t=2" in str(tape)


def test_nested_scopes_compose():
    with tg.scope("encoder"), tg.scope("cell"), tg.scope(t=4):
        y = param(2) * 2
    assert y.record.scope.path == "encoder.cell" and y.record.scope.step == 4


def test_weight_used_at_50_steps_gets_sum_of_contributions():
    T = 50
    W, x = param(4, 4), param(3, 4)
    with tg.Tape():
        h, hs = x, []
        for _ in range(T):
            h = tg.tanh(h @ W)
            hs.append(h)
        loss = tg.stack(hs).sum()
    contributions = []
    tg.grad(loss, [W], retain_graph=True,
            on_edge=lambda rec, i, parent, g: contributions.append(g) if parent is W else None)
    assert len(contributions) == T
    loss.backward()
    np.testing.assert_allclose(W.grad, np.sum(contributions, axis=0), rtol=1e-12)


def test_retain_grad_gives_dl_dh():
    W, h0 = param(3, 3), param(2, 3)
    h1 = tg.tanh(h0 @ W).retain_grad()
    h2 = tg.tanh(h1 @ W)
    loss = (h2 * h2).sum()
    loss.backward()
    expected = ((2 * h2.data) * (1 - h2.data ** 2)) @ W.data.T
    np.testing.assert_allclose(h1.grad, expected)
    assert h2.grad is None


def test_no_grad_and_detach():
    W = param(2, 2)
    with tg.no_grad():
        y = W * 2
    assert not y.requires_grad and y.record is None
    d = W.detach()
    assert not d.requires_grad and d.data is W.data
    z = (d * W).sum()
    z.backward()
    np.testing.assert_allclose(W.grad, W.data)


def test_freed_graph_and_non_scalar_errors():
    W = param(2, 2)
    loss = (W * W).sum()
    loss.backward()
    with pytest.raises(GraphError, match="second time"):
        loss.backward()
    y = W * 3
    with pytest.raises(GraphError, match="shape"):
        y.backward()
    y.backward(np.ones((2, 2)), retain_graph=True)
    y.backward(np.ones((2, 2)))
    np.testing.assert_allclose(W.grad, 2 * W.data + 6)


def test_grads_accumulate_across_backward_calls_and_never_alias():
    a, b = param(3), param(3)
    (a + b).sum().backward()
    assert a.grad is not b.grad
    a.grad *= 10
    np.testing.assert_array_equal(b.grad, np.ones(3))


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(DTypeError, match="int64"):
        tg.tensor([1, 2], requires_grad=True)


def test_default_dtype_and_float64_preserved():
    assert tg.tensor([1.0]).dtype == np.float32
    assert tg.tensor(np.ones(2)).dtype == np.float64
    tg.set_default_dtype(np.float64)
    try:
        assert tg.tensor(1.5).dtype == np.float64
    finally:
        tg.set_default_dtype(np.float32)


def test_mixing_precisions_is_an_error():
    with pytest.raises(DTypeError, match="float32 and .* float64|float64"):
        tg.tensor([1.0]) + tg.tensor(np.ones(1))


def test_numpy_on_the_left_records():
    W = param(3, 2)
    y = np.ones((4, 3)) @ W
    z = np.float64(2.0) * y + np.ones(2)
    assert isinstance(z, tg.Tensor) and z.record.op == "add"
    z.sum().backward()
    np.testing.assert_allclose(W.grad, np.full((3, 2), 8.0))


def test_comparisons_are_constant():
    x = param(3)
    m = x > 0
    assert m.dtype == bool and not m.requires_grad


def test_ten_thousand_step_chain():
    T = 10_000
    w = tg.tensor(np.array([0.9999]), requires_grad=True)
    h = tg.tensor(np.array([1.0]))
    for _ in range(T):
        h = h * w
    h.sum().backward()
    np.testing.assert_allclose(w.grad, T * 0.9999 ** (T - 1))


def _train_step(W, U, xs):
    h = tg.tensor(np.zeros((2, 8)))
    loss = 0
    for x in xs:
        h = tg.tanh(x @ U + h @ W)
        loss = loss + tg.mse_loss(h, np.zeros((2, 8)))
    loss.backward()
    W.data -= 0.01 * W.grad
    U.data -= 0.01 * U.grad
    W.grad = U.grad = None


def test_memory_flat_over_5000_iterations():
    W, U = param(8, 8), param(4, 8)
    xs = [RNG.standard_normal((2, 4)) for _ in range(5)]
    tracemalloc.start()
    try:
        for i in range(5000):
            _train_step(W, U, xs)
            if i == 500:
                gc.collect()
                early = tracemalloc.get_traced_memory()[0]
        gc.collect()
        late = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert late - early < 50_000, (early, late)


def test_hessian_vector_product_through_20_step_rnn():
    T, H = 20, 4
    W0 = RNG.standard_normal((H, H)) * 0.5
    xs = RNG.standard_normal((T, 2, H))
    v = RNG.standard_normal((H, H))

    def loss_of(W):
        h = tg.tensor(np.zeros((2, H)))
        for x in xs:
            h = tg.tanh(x + h @ W)
        return (h * h).sum()

    def gradient(w_array):
        W = tg.tensor(w_array, requires_grad=True)
        return tg.grad(loss_of(W), [W])[0].data

    W = tg.tensor(W0, requires_grad=True)
    (g,) = tg.grad(loss_of(W), [W], create_graph=True)
    (hvp,) = tg.grad((g * v).sum(), [W])
    eps = 1e-5
    numeric = (gradient(W0 + eps * v) - gradient(W0 - eps * v)) / (2 * eps)
    np.testing.assert_allclose(hvp.data, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("fn, shapes", [
    (tg.tanh, [(2, 3)]), (tg.sigmoid, [(2, 3)]), (lambda a, b: a @ b, [(2, 3), (3, 4)]),
    (lambda a, b: tg.tanh(a @ b), [(4, 2, 3), (3, 5)]),
    (lambda x: tg.softmax(x, axis=-1), [(2, 4)]), (lambda x: tg.log_softmax(x, axis=0), [(3, 2)]),
    (lambda x: x[np.array([0, 0, 1])] ** 3, [(2, 2)]), (lambda x: tg.logsumexp(x, axis=1), [(2, 3)]),
    (lambda a, b: a / b, [(3,), (3,)]), (lambda x: tg.exp(x).max(axis=0), [(3, 2)])])
def test_gradgradcheck(fn, shapes):
    inputs = [tg.tensor(RNG.uniform(0.5, 1.5, s), requires_grad=True) for s in shapes]
    assert tg.gradgradcheck(fn, inputs, atol=1e-5, rtol=1e-4).ok


def test_gradcheck_fails_with_useful_report_on_wrong_rule():
    bad_square = tg.defop("bad_square", np.square, lambda g, ans, x: g * x)   # should be 2 g x
    x = tg.tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True, name="x")
    with pytest.raises(GradcheckError) as info:
        tg.gradcheck(lambda x: bad_square(x).sum(), [x])
    text = str(info.value)
    assert "FAIL" in text and "x" in text and "(2,)" in text
    report = info.value.report
    assert not report.ok and report.rows[0].worst == (2,)
    np.testing.assert_allclose(report.rows[0].numeric, 6.0, rtol=1e-6)
    np.testing.assert_allclose(report.rows[0].analytic, 3.0)


def test_gradcheck_handles_zero_gradients_and_random_mode():
    x = tg.tensor(np.zeros(3), requires_grad=True)
    report = tg.gradcheck(lambda x: tg.relu(x - 1).sum(), [x])
    assert report.ok and report.rows[0].max_rel == 0
    big = tg.tensor(RNG.standard_normal(5000), requires_grad=True)
    report = tg.gradcheck(lambda x: (tg.tanh(x) ** 2).sum(), [big])
    assert report.ok and report.mode == "auto" and report.rows[0].worst[0].startswith("dir")


def test_gradcheck_never_passes_nan():
    x = tg.tensor(np.array([-1.0, 2.0]), requires_grad=True)
    with pytest.warns(RuntimeWarning):
        report = tg.gradcheck(lambda x: tg.sqrt(x).sum(), [x], raise_exception=False)
    assert not report.ok


def test_gradcheck_warns_on_float32():
    x = tg.tensor(np.ones(2, np.float32), requires_grad=True)
    with pytest.warns(UserWarning, match="float64"):
        tg.gradcheck(lambda x: (x * x).sum(), [x], eps=1e-2, atol=1e-2, rtol=1e-2)


def test_grad_of_intermediate_and_unused_inputs():
    W, x = param(3, 3), param(2, 3)
    h = tg.tanh(x @ W)
    y = (h * h).sum()
    unused = param(4)
    gh, gW, gu = tg.grad(y, [h, W, unused])
    np.testing.assert_allclose(gh.data, 2 * h.data)
    np.testing.assert_allclose(gW.data, x.data.T @ (2 * h.data * (1 - h.data ** 2)))
    np.testing.assert_array_equal(gu.data, np.zeros(4))
    assert W.grad is None


def test_shape_error_names_op_shapes_and_scope():
    a, b = param(32, 10), param(20, 40)
    with tg.scope("lstm"), tg.scope(t=3):
        with pytest.raises(tg.ShapeError) as info:
            a @ b
    message = str(info.value)
    assert "matmul" in message and "(32, 10)" in message and "(20, 40)" in message
    assert "`lstm`" in message and "t = 3" in message


def test_anomaly_mode_names_the_record_and_line():
    x = tg.tensor(np.array([1.0, -1.0]), requires_grad=True)
    with tg.detect_anomaly(), tg.scope("cell", t=2):
        with pytest.raises(tg.AnomalyError) as info, np.errstate(invalid="ignore"):
            tg.log(x)
    message = str(info.value)
    assert "NaN" in message and "log" in message and "t = 2" in message and "test_tape.py" in message


def test_anomaly_mode_catches_backward_inf():
    x = tg.tensor(np.array([0.0, 1.0]), requires_grad=True)
    with tg.detect_anomaly():
        y = tg.sqrt(x).sum()
        with pytest.raises(tg.AnomalyError, match="gradient that sqrt"), np.errstate(divide="ignore"):
            y.backward()


def test_backward_errors_name_the_record_and_in_anomaly_mode_its_forward_line():
    broken = tg.defop("broken", np.negative, lambda g, ans, x: g @ np.ones((7, 7)), keep="none")
    x = tg.tensor(np.ones(3), requires_grad=True)
    with tg.scope("cell", t=1):
        y = broken(x).sum()
    with pytest.raises(GraphError, match=r"backward of broken .*t = 1.*failed"):
        y.backward()
    with tg.detect_anomaly():
        y = broken(x).sum()
        with pytest.raises(GraphError, match=r"(?s)recorded at:.*test_tape.py"):
            y.backward()


def test_slicing_a_long_sequence_accumulates_in_one_buffer():
    xs = tg.tensor(RNG.standard_normal((4, 300, 3)), requires_grad=True)
    total = 0
    for t in range(300):
        total = total + (xs[:, t] * (t + 1)).sum()
    total.backward()
    np.testing.assert_allclose(xs.grad, np.broadcast_to(np.arange(1, 301)[None, :, None], xs.shape))
