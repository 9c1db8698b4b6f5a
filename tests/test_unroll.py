"""unroll: the per-step loop, variable lengths, truncated BPTT, stateful streams, StackedRNN, Bidirectional."""
import numpy as np
import pytest

import tapegrad as tg
import tapegrad.nn as nn
from tapegrad import reference

F64 = np.float64
B, T, D, H = 3, 6, 2, 4

CELLS = {
    "rnn": lambda d=D, h=H: nn.RNNCell(d, h, dtype=F64, rng=0),
    "lstm": lambda d=D, h=H: nn.LSTMCell(d, h, dtype=F64, rng=0),
    "gru": lambda d=D, h=H: nn.GRUCell(d, h, dtype=F64, rng=0),
    "gru-reset-after": lambda d=D, h=H: nn.GRUCell(d, h, reset_after=True, dtype=F64, rng=0),
}


def rand(*shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


def leaf(array):
    return tg.tensor(np.array(array, F64), requires_grad=True)


def randomize(cell, seed=1):
    for k, p in enumerate(cell.parameters()):
        p.data[...] = rand(*p.shape, seed=seed + k, scale=0.6)
    return cell


def flat(state):
    """The state's tensors in order: h, or h and c."""
    if state is None:
        return []
    return list(state) if isinstance(state, (tuple, list)) else [state]


def weighted_loss(outputs, state, seed=7):
    """A scalar that reads every output and the final state with fixed random weights."""
    total = (outputs * rand(*outputs.shape, seed=seed)).sum()
    for k, s in enumerate(flat(state)):
        total = total + (s * rand(*s.shape, seed=seed + 1 + k)).sum()
    return total


def grads(loss, inputs):
    return [g.data for g in tg.grad(loss, inputs)]


def assert_all_close(got, want, rtol=1e-10, atol=1e-12):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


# -- the loop -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", CELLS)
def test_projected_path_equals_per_step_path(kind):
    """A tensor xs projects all steps with one matmul; a list xs runs cell(x_t, state). Same values, same grads."""
    cell = randomize(CELLS[kind]())
    X = leaf(rand(B, T, D, seed=3))
    projected = nn.unroll(cell, X)
    per_step = nn.unroll(cell, [X[:, t] for t in range(T)])
    state, manual = None, []
    for t in range(T):                                       # the plain loop, written out
        out, state = cell(X[:, t], state)
        manual.append(out)
    for outputs, final in [per_step, (tg.stack(manual, axis=1), state)]:
        np.testing.assert_allclose(outputs.data, projected[0].data, rtol=1e-12, atol=1e-14)
        assert_all_close([s.data for s in flat(final)], [s.data for s in flat(projected[1])])
    inputs = cell.parameters() + [X]
    want = grads(weighted_loss(*projected), inputs)
    assert_all_close(grads(weighted_loss(*per_step), inputs), want)
    assert_all_close(grads(weighted_loss(tg.stack(manual, axis=1), state), inputs), want)


def test_subclasses_overriding_forward_run_step_by_step():
    class Doubled(nn.RNNCell):                               # a new forward: unroll must call it
        def forward(self, x, h=None):
            return super().forward(x * 2, h)

    class Leaky(nn.RNNCell):                                 # a new recurrence: the projection still applies
        def recurrence(self, xp, state=None):
            (h,) = self._state(state, xp)
            h = 0.5 * h + 0.5 * super().recurrence(xp, h)[0]
            return h, h

    xs = rand(B, T, D, seed=3)
    doubled = nn.unroll(Doubled(D, H, dtype=F64, rng=0), tg.tensor(xs))[0]
    np.testing.assert_allclose(doubled.data, nn.unroll(CELLS["rnn"](), tg.tensor(2 * xs))[0].data, rtol=1e-12)
    leaky = Leaky(D, H, dtype=F64, rng=0)
    with tg.Tape() as tape:
        out = nn.unroll(leaky, tg.tensor(xs))[0]
    assert [r.op for r in tape if r.scope.step is None][:2] == ["matmul", "add"]    # projected before the loop
    np.testing.assert_allclose(out.data, nn.unroll(leaky, list(tg.tensor(xs).transpose(1, 0, 2)))[0].data,
                               rtol=1e-12)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_full_bptt_gradients_match_finite_differences(kind):
    cell = randomize(CELLS[kind]())
    X = leaf(rand(B, T, D, seed=3))
    h0 = [leaf(rand(B, H, seed=4, scale=0.5)), leaf(rand(B, H, seed=5, scale=0.5))]
    state = tuple(h0) if kind == "lstm" else h0[0]
    tg.gradcheck(lambda *_: weighted_loss(*nn.unroll(cell, X, state)), cell.parameters() + [X] + flat(state))


def test_time_major_layout():
    cell = randomize(CELLS["lstm"]())
    xs = rand(B, T, D, seed=3)
    out_b, (h_b, c_b) = nn.unroll(cell, tg.tensor(xs))
    out_t, (h_t, c_t) = nn.unroll(cell, tg.tensor(xs.transpose(1, 0, 2)), time_major=True)
    assert out_b.shape == (B, T, H) and out_t.shape == (T, B, H)
    np.testing.assert_allclose(out_t.data.transpose(1, 0, 2), out_b.data, rtol=1e-12)
    np.testing.assert_allclose(h_t.data, h_b.data, rtol=1e-12)
    out_l, _ = nn.unroll(cell, [tg.tensor(xs[:, t]) for t in range(T)], time_major=True)
    assert out_l.shape == (T, B, H)


def test_every_step_is_scoped_with_the_cell_name_and_time_step():
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__(name="encoder")
            self.cell = nn.GRUCell(D, H)

        def forward(self, xs):
            return nn.unroll(self.cell, xs)

    with tg.Tape() as tape:
        Encoder()(np.ones((B, T, D), np.float32))
    steps = [r.scope.step for r in tape if r.scope is not None and r.scope.step is not None]
    assert sorted(set(steps)) == list(range(T))
    per_step = [steps.count(t) for t in range(T)]
    assert len(set(per_step)) == 1 and per_step[0] > 5       # the same records at every step
    assert {r.scope.path for r in tape} == {"encoder.cell"}
    assert [r.op for r in tape if r.scope.step is None] == ["matmul", "add", "stack"]  # projection; outputs
    assert all(r.scope.parent.name == "cell" for r in tape if r.scope.step is not None)  # cell > t, as scope()


def test_unnamed_cells_and_plain_functions_are_labelled_by_name():
    def elman(x, h):
        h = tg.tanh(x + (0 if h is None else h))
        return h, h
    with tg.Tape() as tape:
        nn.unroll(nn.RNNCell(D, H), np.ones((B, 2, D), np.float32))
        nn.unroll(elman, tg.tensor(np.ones((B, 2, D)), requires_grad=True))
    assert {r.scope.path for r in tape if r.scope is not None} == {"RNNCell", "elman"}


def test_input_validation():
    cell = nn.RNNCell(D, H)
    with pytest.raises(tg.ShapeError, match=r"unroll: xs must be \(batch, T, features\).*got shape \(3, 2\)"):
        nn.unroll(cell, np.zeros((B, D), np.float32))
    with pytest.raises(tg.ShapeError, match="unroll: xs is an empty list"):
        nn.unroll(cell, [])
    with pytest.raises(tg.ShapeError, match=r"one shape \(batch, features\), got shapes \[\(2, 2\), \(3, 2\)\]"):
        nn.unroll(cell, [np.zeros((3, 2)), np.zeros((2, 2))])
    with pytest.raises(tg.ShapeError, match=r"\(T, batch, features\) with T >= 1"):
        nn.unroll(cell, np.zeros((0, B, D)), time_major=True)


# -- cross-check against the hand-derived BPTT of tapegrad.reference --------------------------------------------
class Regressor(nn.Module):
    """The reference's models: a cell, a linear head, loss sum_t 0.5 * |h_t V + c - y_t|^2 / B."""

    def __init__(self, cell):
        super().__init__()
        self.cell = randomize(cell)
        self.head = nn.Linear(cell.hidden_size, 2, dtype=F64)
        randomize(self.head, seed=20)

    def loss(self, xs, ys, state=None, truncate=None):
        hs, final = nn.unroll(self.cell, xs, state, truncate=truncate)
        err = self.head(hs) - ys
        return (err * err).sum() * (0.5 / xs.shape[0]), final


def blocks(W, n):
    return np.split(W, n, axis=-1)


def reference_params(model):
    cell, V, c = model.cell, model.head.W.data, model.head.b.data
    if isinstance(cell, nn.RNNCell):
        return dict(U=cell.W_x.data, W=cell.W_h.data, b=cell.b.data, V=V, c=c)
    if isinstance(cell, nn.LSTMCell):                   # reference: W_k input, U_k recurrent
        p = {}
        for g, wx, wh, b in zip("ifgo", blocks(cell.W_x.data, 4), blocks(cell.W_h.data, 4), blocks(cell.b.data, 4)):
            p.update({f"W_{g}": wx, f"U_{g}": wh, f"b_{g}": b})
        return dict(p, V=V, c=c)
    p = {}                                               # GRU; reference: U_k input, W_k recurrent, gates z r h
    for g, wx, wh, b in zip("rzh", blocks(cell.W_x.data, 3), blocks(cell.W_h.data, 3), blocks(cell.b.data, 3)):
        p.update({f"U_{g}": wx, f"W_{g}": wh, f"b_{g}": b})
    return dict(p, V=V, c=c)


def fused_grads(model, ref):
    """The reference's per-gate gradients in the model's fused layout, in model.parameters() order."""
    cell = model.cell
    if isinstance(cell, nn.RNNCell):
        fused = [ref["U"], ref["W"], ref["b"]]
    else:
        gates, (x, h) = ("ifgo", ("W", "U")) if isinstance(cell, nn.LSTMCell) else ("rzh", ("U", "W"))
        fused = [np.concatenate([ref[f"{k}_{g}"] for g in gates], axis=-1) for k in (x, h, "b")]
    return fused + [ref["V"], ref["c"]]


BPTT = {"rnn": reference.elman_bptt, "lstm": reference.lstm_bptt, "gru": reference.gru_bptt}


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_unroll_gradients_equal_hand_derived_bptt(kind):
    model = Regressor(CELLS[kind]())
    xs, ys = rand(B, T, D, seed=1), rand(B, T, 2, seed=2)
    loss, _ = model.loss(tg.tensor(xs), ys)
    zeros = np.zeros((B, H))
    args = (xs.transpose(1, 0, 2), ys.transpose(1, 0, 2), zeros) + ((zeros,) if kind == "lstm" else ())
    ref_loss, ref_grads, _ = BPTT[kind](*args, reference_params(model))
    assert loss.item() == pytest.approx(ref_loss, rel=1e-12)
    assert_all_close(grads(loss, model.parameters()), fused_grads(model, ref_grads))


# -- truncated BPTT ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 4, 6, 9])
def test_truncated_gradients_equal_hand_derived_chunks(k):
    """truncate=k is full BPTT inside each chunk of k steps, started from the (constant) state reached there:
    the sum over chunks of the reference's BPTT. k >= T is full BPTT."""
    model = Regressor(CELLS["rnn"]())
    xs, ys = rand(B, T, D, seed=1), rand(B, T, 2, seed=2)
    loss, _ = model.loss(tg.tensor(xs), ys, truncate=k)
    full_loss, _ = model.loss(tg.tensor(xs), ys)
    assert loss.item() == full_loss.item()                  # truncation changes gradients, never values
    hs = nn.unroll(model.cell, tg.tensor(xs))[0].data
    params = reference_params(model)
    total = {name: 0 for name in params}
    for start in range(0, T, k):
        h0 = np.zeros((B, H)) if start == 0 else hs[:, start - 1]
        _, g, _ = reference.elman_bptt(xs[:, start:start + k].transpose(1, 0, 2),
                                       ys[:, start:start + k].transpose(1, 0, 2), h0, params)
        total = {name: total[name] + g[name] for name in params}
    got = grads(loss, model.parameters())
    assert_all_close(got, fused_grads(model, total))
    if k >= T:
        assert_all_close(got, grads(full_loss, model.parameters()))


def test_truncate_1_is_elmans_copy_of_the_hidden_state():
    """Elman: c(t) = h(t-1) is a copy, so each step's gradient is local: dW = sum_t c_t^T delta_t."""
    model = Regressor(CELLS["rnn"]())
    xs, ys = rand(B, T, D, seed=1), rand(B, T, 2, seed=2)
    loss, _ = model.loss(tg.tensor(xs), ys, truncate=1)
    U, W, b, V, c = (p.data for p in model.parameters())
    dU, dW, db = np.zeros_like(U), np.zeros_like(W), np.zeros_like(b)
    h = np.zeros((B, H))
    for t in range(T):
        h_new = np.tanh(xs[:, t] @ U + h @ W + b)
        delta = (1 - h_new ** 2) * (((h_new @ V + c - ys[:, t]) / B) @ V.T)
        dU, dW, db = dU + xs[:, t].T @ delta, dW + h.T @ delta, db + delta.sum(0)
        h = h_new
    assert_all_close(grads(loss, [model.cell.W_x, model.cell.W_h, model.cell.b]), [dU, dW, db])


def test_truncate_validation():
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="unroll: truncate must be a positive integer"):
            nn.unroll(nn.RNNCell(D, H), np.zeros((B, T, D), np.float32), truncate=bad)


# -- stateful streams ----------------------------------------------------------------------------------------------
def test_detach_state_keeps_values_and_structure():
    h = tg.tanh(leaf(np.ones((2, 3))))
    c = h * 2
    for state in [h, (h, c), [(h, c), h], None]:
        cut = nn.detach_state(state)
        assert type(cut) is type(state)
        for a, b in zip(flat(cut) if state is not None else [], flat(state) if state is not None else []):
            if isinstance(a, tuple):
                a, b = a[0], b[0]
            assert a.is_leaf and not a.requires_grad and np.array_equal(a.data, b.data)
    (h2, c2), h3 = nn.detach_state([(h, c), h])
    assert h2.is_leaf and c2.is_leaf and h3.is_leaf


def test_stateful_batches_equal_one_truncated_unroll():
    """Carrying the detached final state into the next batch of a stream = one unroll with truncate=chunk."""
    cell = randomize(CELLS["lstm"]())
    stream = rand(B, 12, D, seed=8)
    X = leaf(stream)
    whole, _ = nn.unroll(cell, X, truncate=4)
    want = grads(weighted_loss(whole, None), cell.parameters())

    state, outputs, total = None, [], [0] * len(cell.parameters())
    for start in range(0, 12, 4):
        out, state = nn.unroll(cell, tg.tensor(stream[:, start:start + 4]), nn.detach_state(state))
        outputs.append(out.data)
        w = rand(B, 12, H, seed=7)[:, start:start + 4]       # the same weights weighted_loss puts on these steps
        total = [a + g for a, g in zip(total, grads((out * w).sum(), cell.parameters()))]
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), whole.data, rtol=1e-12)
    assert_all_close(total, want)


# -- variable lengths -------------------------------------------------------------------------------------------------
LENGTHS = np.array([6, 2, 4])


@pytest.mark.parametrize("kind", CELLS)
def test_lengths_equal_running_each_sequence_alone(kind):
    cell = randomize(CELLS[kind]())
    xs = rand(B, T, D, seed=3)
    X = leaf(xs)
    outputs, final = nn.unroll(cell, X, lengths=LENGTHS)
    loss = weighted_loss(outputs, final)
    batched = grads(loss, cell.parameters() + [X])

    alone_total = [0] * len(cell.parameters())
    w_out = rand(B, T, H, seed=7)
    w_state = [rand(B, H, seed=8 + k) for k in range(len(flat(final)))]
    for b, n in enumerate(LENGTHS):
        Xb = leaf(xs[b:b + 1, :n])
        out_b, final_b = nn.unroll(cell, Xb)
        np.testing.assert_allclose(outputs.data[b, :n], out_b.data[0], rtol=1e-12)
        assert np.all(outputs.data[b, n:] == 0)                       # zero past the length
        for s, s_b in zip(flat(final), flat(final_b)):                # final state: the last valid step's
            np.testing.assert_allclose(s.data[b], s_b.data[0], rtol=1e-12)
        loss_b = (out_b * w_out[b:b + 1, :n]).sum()
        for s_b, w in zip(flat(final_b), w_state):
            loss_b = loss_b + (s_b * w[b:b + 1]).sum()
        g = grads(loss_b, cell.parameters() + [Xb])
        alone_total = [a + gi for a, gi in zip(alone_total, g[:-1])]
        np.testing.assert_allclose(batched[-1][b, :n], g[-1][0], rtol=1e-10, atol=1e-12)
        assert np.all(batched[-1][b, n:] == 0)                        # padded steps get no gradient
    assert_all_close(batched[:-1], alone_total)


@pytest.mark.parametrize("kind", ["lstm", "gru-reset-after"])
def test_lengths_gradients_match_finite_differences(kind):
    cell = randomize(CELLS[kind]())
    X = leaf(rand(T, B, D, seed=3))
    tg.gradcheck(lambda *_: weighted_loss(*nn.unroll(cell, X, lengths=LENGTHS, time_major=True)),
                 cell.parameters() + [X])


def test_lengths_with_truncation_and_initial_state():
    cell = randomize(CELLS["gru"]())
    xs, h0 = rand(B, T, D, seed=3), rand(B, H, seed=4)
    out, h = nn.unroll(cell, tg.tensor(xs), tg.tensor(h0), lengths=[3, 6, 1], truncate=2)
    out1, h1 = nn.unroll(cell, tg.tensor(xs[2:, :1]), tg.tensor(h0[2:]))
    np.testing.assert_allclose(h.data[2], h1.data[0], rtol=1e-12)
    assert np.all(out.data[0, 3:] == 0) and np.all(out.data[2, 1:] == 0)


def test_lengths_validation():
    cell, xs = nn.RNNCell(D, H), np.zeros((B, T, D), np.float32)
    with pytest.raises(tg.DTypeError, match="unroll: lengths must be integers, got dtype float64"):
        nn.unroll(cell, xs, lengths=[1.0, 2.0, 3.0])
    with pytest.raises(tg.ShapeError, match=r"unroll: lengths must have shape \(batch,\) = \(3,\), got \(2,\)"):
        nn.unroll(cell, xs, lengths=[1, 2])
    with pytest.raises(ValueError, match=r"unroll: lengths must lie in \[1, T\] = \[1, 6\], got \[0, 2, 7\]"):
        nn.unroll(cell, xs, lengths=[0, 2, 7])


# -- StackedRNN ----------------------------------------------------------------------------------------------------
def stacked():
    return nn.StackedRNN([randomize(nn.LSTMCell(D, 4, dtype=F64, rng=0), 1),
                          randomize(nn.GRUCell(4, 3, dtype=F64, rng=1), 10),
                          randomize(nn.RNNCell(3, 3, dtype=F64, rng=2), 20)], name="deep")


def test_stacked_rnn_is_layer_after_layer():
    deep = stacked()
    X = leaf(rand(B, T, D, seed=3))
    out, finals = deep(X, lengths=LENGTHS)
    assert [n for n, _ in deep.named_parameters()][:4] == ["layers.0.W_x", "layers.0.W_h", "layers.0.b",
                                                          "layers.1.W_x"]
    xs, manual = X, []
    for layer in deep.layers:
        xs, s = nn.unroll(layer, xs, lengths=LENGTHS)
        manual.append(s)
    np.testing.assert_array_equal(out.data, xs.data)
    assert len(finals) == 3 and isinstance(finals[0], tuple)          # one final state per layer
    for got, want in zip(finals, manual):
        assert_all_close([s.data for s in flat(got)], [s.data for s in flat(want)], rtol=0, atol=0)
    tg.gradcheck(lambda *_: weighted_loss(*deep(X, lengths=LENGTHS)[:1], None), deep.parameters() + [X])


def test_stacked_rnn_state_truncation_and_scopes():
    deep = stacked()
    xs = tg.tensor(rand(B, T, D, seed=3))
    out, finals = deep(xs)
    again, _ = deep(xs, state=[None, finals[1], None], truncate=2)
    assert not np.allclose(again.data, out.data)                      # the given layer-1 state was used
    with tg.Tape() as tape:
        deep(xs)
    assert {r.scope.path for r in tape if r.scope.step == 3} == {"deep.layers.0", "deep.layers.1", "deep.layers.2"}
    with pytest.raises(tg.ShapeError, match="StackedRNN inside `deep`: state must be a list of 3 per-layer states"):
        deep(xs, state=[None])
    with pytest.raises(tg.ShapeError, match="StackedRNN: layer 0 outputs 4 features but layer 1 takes input_size 5"):
        nn.StackedRNN([nn.RNNCell(2, 4), nn.RNNCell(5, 3)])


# -- Bidirectional ----------------------------------------------------------------------------------------------------
def test_reverse_sequences():
    x = np.arange(B * T).reshape(B, T, 1)
    r = nn.reverse_sequences(x, LENGTHS)
    assert r[1, :, 0].tolist() == [7, 6, 8, 9, 10, 11]              # reversed within length 2, padding in place
    np.testing.assert_array_equal(nn.reverse_sequences(r, LENGTHS), x)
    np.testing.assert_array_equal(nn.reverse_sequences(x), x[:, ::-1])
    np.testing.assert_array_equal(nn.reverse_sequences(x.transpose(1, 0, 2), LENGTHS, time_major=True),
                                  r.transpose(1, 0, 2))


def test_bidirectional_respects_lengths():
    bi = nn.Bidirectional(randomize(nn.LSTMCell(D, 4, dtype=F64, rng=0)),
                          randomize(nn.GRUCell(D, 3, dtype=F64, rng=1), 9))
    xs = rand(B, T, D, seed=3)
    X = leaf(xs)
    out, (final_f, final_b) = bi(X, lengths=LENGTHS)
    assert out.shape == (B, T, 7)
    fwd, _ = nn.unroll(bi.fwd, tg.tensor(xs), lengths=LENGTHS)
    np.testing.assert_allclose(out.data[..., :4], fwd.data, rtol=1e-12)
    for b, n in enumerate(LENGTHS):                                    # backward half: each sequence reversed, alone
        out_b, h_b = nn.unroll(bi.bwd, tg.tensor(xs[b:b + 1, :n][:, ::-1]))
        np.testing.assert_allclose(out.data[b, :n, 4:], out_b.data[0, ::-1], rtol=1e-12)
        assert np.all(out.data[b, n:] == 0)
        np.testing.assert_allclose(final_b.data[b], h_b.data[0], rtol=1e-12)
    tg.gradcheck(lambda *_: weighted_loss(bi(X, lengths=LENGTHS)[0], None), bi.parameters() + [X])
    listed, _ = bi([tg.tensor(xs[:, t]) for t in range(T)], lengths=LENGTHS)
    np.testing.assert_allclose(listed.data, out.data, rtol=1e-12)
    with pytest.raises(tg.ShapeError, match=r"state must be a pair \(fwd state, bwd state\)"):
        bi(X, state=[None])


@pytest.mark.parametrize("cell_type", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_checkpoint_every_gives_plain_bptt_gradients(cell_type, k):
    make = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[cell_type]
    cell = make(3, 4, dtype=np.float64, rng=0)
    xs = tg.tensor(np.random.default_rng(1).standard_normal((2, 7, 3)), requires_grad=True)
    lengths = np.array([7, 5])

    def loss(**kw):
        out, state = nn.unroll(cell, xs, lengths=lengths, truncate=4, **kw)
        h = state[0] if isinstance(state, tuple) else state
        return (out * out).sum() + h.sum()
    params = [p for _, p in cell.named_parameters()] + [xs]
    plain = tg.grad(loss(), params)
    ckpt = tg.grad(loss(checkpoint_every=k), params)
    for a, b in zip(plain, ckpt):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-12, atol=1e-14)


def test_wrong_width_messages_name_the_layout_and_no_repeated_path():
    import re
    cell = tg.nn.LSTMCell(3, 4)
    with pytest.raises(tg.ShapeError, match=re.escape("LSTMCell: input x has shape (2, 6, 5), expected (batch, T, 3)")):
        tg.nn.unroll(cell, tg.tensor(np.zeros((2, 6, 5))))
    with pytest.raises(tg.ShapeError, match=re.escape("LSTMCell: input x has shape (2, 5), expected (batch, 3)")):
        cell.input_projection(tg.tensor(np.zeros((2, 5))))
    named = tg.nn.LSTMCell(3, 4, name="enc")
    with pytest.raises(tg.ShapeError, match=re.escape("LSTMCell inside `enc`: input x has shape (2, 6, 5), "
                                                      "expected (batch, T, 3)")):
        tg.nn.unroll(named, tg.tensor(np.zeros((2, 6, 5))))


def test_anomaly_names_the_steps_and_rows_of_a_nan_in_the_hoisted_input_projection():
    cell = tg.nn.LSTMCell(3, 4, dtype=np.float64, rng=0)
    xs = np.random.default_rng(0).normal(size=(3, 6, 3))
    xs[1, 2, 0] = xs[2, 4, 1] = np.nan
    with tg.detect_anomaly(), pytest.raises(tg.AnomalyError) as e:
        tg.nn.unroll(cell, tg.tensor(xs))
    assert "the non-finite inputs are at steps t = [2, 4] in batch rows [1, 2] of xs" in str(e.value)
    with tg.detect_anomaly(), pytest.raises(tg.AnomalyError, match=r"steps t = \[2, 4\] in batch rows \[1, 2\]"):
        tg.nn.unroll(cell, tg.tensor(xs.transpose(1, 0, 2).copy()), time_major=True)
    only_step_4 = np.where(np.arange(6)[None, :, None] == 2, 0.0, xs)            # segments of 2: steps 4..5
    located = r"steps 4..5 .* steps t = \[4\] in batch rows \[2\]"
    with tg.detect_anomaly(), pytest.raises(tg.AnomalyError, match=located):
        tg.nn.unroll(cell, tg.tensor(only_step_4), checkpoint_every=2)
    cell.W_x.data[0, 0] = np.inf
    with tg.detect_anomaly(), pytest.raises(tg.AnomalyError, match="xs is finite; the non-finite values are in W_x"):
        tg.nn.unroll(cell, tg.tensor(np.ones((2, 3, 3))))
