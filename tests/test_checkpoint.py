"""checkpoint: recomputed records give the same gradients and keep less alive."""
import numpy as np
import pytest

import tapegrad as tg

RNG = np.random.default_rng(5)


def lstm_params(D, H, dtype=np.float64):
    make = lambda *s: tg.tensor(RNG.standard_normal(s).astype(dtype) * 0.3, requires_grad=True)  # noqa: E731
    return make(D, 4 * H), make(H, 4 * H), make(4 * H)


def lstm_steps(params, xs, h, c, rng=None):
    """Run LSTM steps over xs (k, B, D); returns (outputs (k, B, H), h, c)."""
    W_x, W_h, b = params
    outs = []
    for x in xs:
        i, f, g, o = tg.split(x @ W_x + h @ W_h + b, 4, axis=-1)
        c = tg.sigmoid(f) * c + tg.sigmoid(i) * tg.tanh(g)
        h = tg.sigmoid(o) * tg.tanh(c)
        if rng is not None:
            h = tg.dropout(h, 0.3, rng)
        outs.append(h)
    return tg.stack(outs), h, c


def loss_of(params, xs, k=None, rng_seed=None):
    B, H = xs.shape[1], params[1].shape[0]
    h = c = tg.tensor(np.zeros((B, H)))
    rng = np.random.default_rng(rng_seed) if rng_seed is not None else None
    outs = []
    for start in range(0, len(xs), k or len(xs)):
        chunk = xs[start:start + (k or len(xs))]
        if k is None:
            o, h, c = lstm_steps(params, chunk, h, c, rng)
        else:
            o, h, c = tg.checkpoint(lambda h, c, chunk=chunk: lstm_steps(params, chunk, h, c, rng), h, c)
        outs.append(o)
    y = tg.concat(outs, axis=0)
    return (y * y).mean() + (h * c).sum()


@pytest.mark.parametrize("rng_seed", [None, 7])
def test_checkpointed_gradients_equal_plain_bptt(rng_seed):
    params = lstm_params(3, 4)
    xs = RNG.standard_normal((12, 2, 3))
    plain = tg.grad(loss_of(params, xs, rng_seed=rng_seed), list(params))
    ckpt = tg.grad(loss_of(params, xs, k=4, rng_seed=rng_seed), list(params))
    for a, b in zip(plain, ckpt):      # equal up to the order in which per-step contributions are summed
        np.testing.assert_allclose(a.data, b.data, rtol=1e-12, atol=1e-15)


def test_checkpoint_gradcheck_and_input_gradients():
    params = lstm_params(2, 3)
    xs = RNG.standard_normal((3, 2, 2))
    h0 = tg.tensor(RNG.standard_normal((2, 3)), requires_grad=True)

    def f(h0, *ps):
        out, h, c = tg.checkpoint(lambda h: lstm_steps(ps, xs, h, h * 0), h0)
        return (out * out).sum() + h.sum()
    assert tg.gradcheck(f, [h0, *params]).ok


def test_checkpoint_keeps_one_record_on_the_tape():
    params = lstm_params(2, 3)
    xs = RNG.standard_normal((5, 1, 2))
    h = tg.tensor(np.zeros((1, 3)))
    with tg.Tape() as tape:
        tg.checkpoint(lambda h: lstm_steps(params, xs, h, h), h)
    assert [r.op for r in tape].count("checkpoint") == 1
    assert "sigmoid" not in [r.op for r in tape]


def test_checkpoint_takes_nested_arguments_and_refuses_captured_computed_tensors():
    W = tg.tensor(RNG.standard_normal((3, 3)), requires_grad=True)
    h = tg.tensor(RNG.standard_normal((2, 3)), requires_grad=True)
    state = (h * 1.0, None)
    out = tg.checkpoint(lambda s: (tg.tanh(s[0] @ W), s[1]), state)
    assert out[1] is None
    out[0].sum().backward()
    expected = tg.grad(tg.tanh((h * 1.0) @ W).sum(), [W])[0].data
    np.testing.assert_allclose(W.grad, expected)
    computed = h * 2.0
    with pytest.raises(tg.GraphError, match="not among its arguments"):
        tg.checkpoint(lambda x: x @ W + computed, h)


def test_checkpointed_per_step_loss_keeps_no_prediction():
    """A step's output layer and loss under checkpoint (one output each): same gradients as plain, and the
    checkpoint records keep only their input h, not the prediction h V + c."""
    V, c = (tg.tensor(RNG.standard_normal(s), requires_grad=True) for s in ((4, 2), (2,)))
    W = tg.tensor(RNG.standard_normal((4, 4)) * 0.5, requires_grad=True)
    xs, ys = RNG.standard_normal((6, 3, 4)), RNG.standard_normal((6, 3, 2))

    def loss(ckpt):
        h, total = tg.tensor(np.zeros((3, 4))), 0.0
        with tg.Tape() as tape:
            for x, y in zip(xs, ys):
                h = tg.tanh(x + h @ W)
                head = lambda h, y=y: tg.mse_loss(h @ V + c, y)     # noqa: E731
                total = total + (tg.checkpoint(head, h) if ckpt else head(h))
        return total, tape
    plain, _ = loss(False)
    ckpt, tape = loss(True)
    assert [r.op for r in tape].count("checkpoint") == 6 and "mse_loss" not in [r.op for r in tape]
    assert all(len(r.saved) == 3 and r.saved[0].shape == (3, 4) for r in tape if r.op == "checkpoint")  # h, V, c
    for a, b in zip(tg.grad(plain, [V, c, W]), tg.grad(ckpt, [V, c, W])):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-12, atol=1e-15)
    assert tg.gradcheck(lambda h: tg.checkpoint(lambda h: tg.tanh(h @ W), h),
                        [tg.tensor(RNG.standard_normal((3, 4)), requires_grad=True)]).ok


def test_checkpoint_returning_a_leaf_leaves_it_writable():
    W = tg.tensor(RNG.standard_normal((2, 2)), requires_grad=True)
    h = tg.tensor(RNG.standard_normal((2, 2)), requires_grad=True)
    for fn in (lambda x: W, lambda x: x):
        out = tg.checkpoint(fn, h)
        (out * out).sum().backward()
    assert W.data.flags.writeable and h.data.flags.writeable
    np.testing.assert_allclose(W.grad, 2 * W.data)
    np.testing.assert_allclose(h.grad, 2 * h.data)


def test_unroll_checkpointed_loss_over_every_output_peaks_at_under_0_30_of_plain():
    """Issue #16: mean(outs * outs) over every output of unroll(checkpoint_every=k). At the peak (the loss's own
    backward) only outs and mul's two input gradients g * outs are alive: mean's gradient is a broadcast view,
    not an array of outs' size, and the second g * outs is added into the first's buffer, not into a third
    array; the segments read their slices of xs (a constant) as they are, not copied. Was 0.38 of plain."""
    import tracemalloc
    T, B, D, H, k = 256, 16, 8, 64, 16

    def step(k):
        cell = tg.nn.LSTMCell(D, H, dtype=np.float64, rng=1)
        xs = tg.tensor(np.random.default_rng(0).standard_normal((T, B, D)))
        tracemalloc.start()
        try:
            outs, _ = tg.nn.unroll(cell, xs, time_major=True, checkpoint_every=k)
            tg.mean(outs * outs).backward()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return peak, [p.grad for p in cell.parameters()]
    plain_peak, plain = step(None)
    ckpt_peak, ckpt = step(k)
    for a, b in zip(plain, ckpt):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15)
    assert ckpt_peak / plain_peak <= 0.30, f"checkpointed peak is {ckpt_peak / plain_peak:.3f} of plain BPTT's"


def test_gradients_a_callback_or_a_leaf_sees_are_not_added_into():
    """The sweep adds x * x's second input gradient into the first only when nothing else holds it: the
    per-edge gradients on_edge keeps stay as they were, and a reduction's broadcast gradient reaches .grad
    as an array of its own."""
    x = tg.tensor(RNG.standard_normal((3, 4)), requires_grad=True)
    seen = []
    (g,) = tg.grad(tg.mean(x * x), [x], on_edge=lambda rec, i, parent, g: seen.append(g) if rec.op == "mul" else None)
    np.testing.assert_allclose(g.data, 2 * x.data / 12)
    assert len(seen) == 2
    for s in seen:
        np.testing.assert_allclose(s, x.data / 12)
    tg.mean(x).backward()
    assert x.grad.flags.writeable and x.grad.base is None and x.grad.shape == (3, 4)
    np.testing.assert_allclose(x.grad, np.full((3, 4), 1 / 12))
