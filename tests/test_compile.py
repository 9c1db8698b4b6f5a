"""tapegrad.compile: the replayed program computes eager's loss and gradients (float64, to 1e-12), and
refuses (eager fallback, CompileError, retrace) wherever a replay could be wrong."""
import pathlib
import re
import sys
import warnings

import numpy as np
import pytest

import tapegrad as tg
from tapegrad.compile import CompileError, CompileWarning

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import handwritten  # noqa: E402

RTOL = 1e-12


def _grads(params):
    return [None if p.grad is None else np.array(p.grad) for p in params]


def _eager_then_compiled(step, compiled, params, *inputs):
    """(eager result, its grads, compiled result, its grads) of one call on `inputs`, .grad reset before each."""
    for q in params:
        q.grad = None
    ref = step(*[tg.tensor(x) for x in inputs])
    ref_grads = _grads(params)
    for q in params:
        q.grad = None
    got = compiled(*inputs)
    return ref, ref_grads, got, _grads(params)


def _unrolled_square_loss(cell, reduction):
    """step(xs): the cell unrolled over time-major xs, loss = reduction(out * out), backward."""
    def step(xs):
        out, _ = tg.nn.unroll(cell, xs, time_major=True)
        loss = getattr(out * out, reduction)()
        loss.backward()
        return loss
    return step


def _close(a, b, what):
    assert (a is None) == (b is None), what
    if a is not None:
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-300, err_msg=what)


def run_both(step, params, make_inputs, calls=4, keep_grads=False, expect_compiled=True):
    """Call eager `step` and compiled `step` on the same inputs; loss and every .grad must agree.
    keep_grads: do not reset .grad between calls (accumulation into existing .grad)."""
    compiled = tg.compile(step)
    eager_grads = [None] * len(params)
    for i in range(calls):
        inputs = make_inputs(i)
        for p, g in zip(params, eager_grads):
            p.grad = None if g is None or not keep_grads else np.array(g)
        before = _grads(params)
        ref = step(*[tg.tensor(x) if isinstance(x, np.ndarray) else x for x in inputs])
        ref_grads = _grads(params)
        for p, g in zip(params, before):
            p.grad = g
        got = compiled(*inputs)
        got_grads = _grads(params)
        _close(np.asarray(got.data), np.asarray(ref.data), f"loss, call {i}")
        for n, (a, b) in enumerate(zip(got_grads, ref_grads)):
            _close(a, b, f"grad of parameter {n}, call {i}")
        eager_grads = ref_grads
    if expect_compiled:
        assert any(e.program is not None for e in compiled.cache.values()), compiled.warned
    return compiled


def param(*shape, seed=0, scale=1.0, positive=False):
    a = np.random.default_rng(seed).standard_normal(shape) * scale
    return tg.tensor(np.abs(a) + 0.5 if positive else a, requires_grad=True)


def data(i, *shape, positive=False):
    a = np.random.default_rng(100 + i).standard_normal(shape)
    return np.abs(a) + 0.5 if positive else a


UNARY = {
    "exp": tg.exp, "tanh": tg.tanh, "sigmoid": tg.sigmoid, "relu": tg.relu, "abs": tg.abs, "neg": tg.neg,
    "log": lambda x: tg.log(x * x + 1), "sqrt": lambda x: tg.sqrt(x * x + 1),
    "clip": lambda x: tg.clip(x, -0.5, 0.5), "softmax": lambda x: tg.softmax(x, -1),
    "log_softmax": lambda x: tg.log_softmax(x, 0), "logsumexp": lambda x: tg.logsumexp(x, axis=1),
    "sum_axis": lambda x: tg.sum(x, axis=0), "mean": lambda x: tg.mean(x, axis=-1, keepdims=True),
    "max": lambda x: tg.max(x, axis=1), "reshape": lambda x: tg.reshape(x, (4, 3)),
    "transpose": lambda x: tg.transpose(x, -1, -2), "expand_squeeze": lambda x: tg.squeeze(tg.expand_dims(x, 0), 0),
    "broadcast_to": lambda x: tg.broadcast_to(x[:1], (5, 3, 4)), "pow": lambda x: (x * x + 1) ** 1.5,
    "split": lambda x: tg.split(x, 2, axis=-1)[1] * 2, "mT": lambda x: x.mT @ x,
    "getitem_slices": lambda x: x[1:, ::2], "getitem_repeated": lambda x: x[np.array([0, 2, 0, 0])],
    "take_repeated": lambda x: tg.take(x, np.array([[1, 1], [2, 0]]), axis=0),
    "concat": lambda x: tg.concat([x, x * 2, x[:1]], axis=0), "stack": lambda x: tg.stack([x, -x, x], axis=-1),
    "astype": lambda x: tg.astype(x, np.float32).astype(np.float64),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_primitives(name):
    f = UNARY[name]
    W = param(3, 4)

    def step(x):
        loss = (f(W * x) * 1.3).sum()
        loss.backward()
        return loss
    run_both(step, [W], lambda i: (data(i, 3, 4),))


BINARY = {
    "add": tg.add, "sub": tg.sub, "mul": tg.mul, "div": lambda a, b: a / (b * b + 1), "maximum": tg.maximum,
    "minimum": tg.minimum, "pow": lambda a, b: (a * a + 1) ** b, "where": lambda a, b: tg.where(a > b, a, b * 3),
    "matmul": lambda a, b: a @ b.T,
    "mse": lambda a, b: tg.mse_loss(a, tg.broadcast_to(b, (3, 4)), reduction="none") + tg.mse_loss(a, a * b),
}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_primitives_with_broadcasting(name):
    f = BINARY[name]
    A, b = param(3, 4), param(4, seed=1)           # b broadcasts against A (for matmul: (4,) @ (4, 3))

    def step(x):
        y = f(A * x, b) if name != "matmul" else f(b, A * x)
        loss = (y * y).sum()
        loss.backward()
        return loss
    run_both(step, [A, b], lambda i: (data(i, 3, 4),))


def test_batched_matmul_broadcasting_and_accumulation_into_existing_grad():
    W, v = param(4, 5), param(1, 5, seed=2)

    def step(x, y):
        z = tg.tanh(x @ W + v) * y             # (2, 3, 5): batch of rows times one matrix, broadcast bias
        loss = z.sum() + tg.mse_loss(z[:, 0], y[:, 1]) + (v * v).mean()
        loss.backward()
        return loss
    run_both(step, [W, v], lambda i: (data(i, 2, 3, 4), data(i + 7, 2, 3, 5)), keep_grads=True)


def test_cross_entropy_fixed_targets_and_zero_d_parameter():
    W, s = param(4, 3), tg.tensor(np.array(0.7), requires_grad=True)
    targets = np.array([0, 2, 1, 2, 2])

    def step(x):
        loss = tg.cross_entropy((x @ W) * s, targets) * s
        loss.backward()
        return loss
    run_both(step, [W, s], lambda i: (data(i, 5, 4),), keep_grads=True)


def test_input_requiring_grad_gets_its_grad():
    W = param(3, 3)
    c = tg.compile(lambda x: _backward((tg.tanh(x @ W) ** 2).sum()))
    for i in range(4):
        x = tg.tensor(data(i, 2, 3), requires_grad=True)
        xr = tg.tensor(x.data, requires_grad=True)
        W.grad = None
        _backward((tg.tanh(xr @ W) ** 2).sum())
        ref = W.grad.copy()
        W.grad = None
        c(x)
        _close(x.grad, xr.grad, "input grad")
        _close(W.grad, ref, "W grad")


def _backward(loss):
    loss.backward()
    return loss


# -- recurrent cells written with ops, as in benchmarks/bptt.py, and tapegrad.nn -----------------------
@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_cells_from_ops_match_eager_and_handwritten(cell):
    import bptt
    rng = np.random.default_rng(3)
    B, D, H, T = 2, 3, 4, 5
    p = handwritten.init_params(cell, D, H, D, rng, np.float64)
    params = {n: tg.tensor(v, requires_grad=True) for n, v in p.items()}
    step = bptt.ops_train_step(cell, params, tg.tensor(np.zeros((B, H))))
    c = run_both(step, list(params.values()), lambda i: handwritten.make_data(B, D, D, T,
                                                                             np.random.default_rng(i), np.float64))
    xs, ys = handwritten.make_data(B, D, D, T, np.random.default_rng(9), np.float64)
    for q in params.values():
        q.grad = None
    loss = c(xs, ys)
    ref_loss, ref = handwritten.STEPS[cell](p, xs, ys)
    np.testing.assert_allclose(loss.item(), ref_loss, rtol=1e-10)
    for n, g in ref.items():
        np.testing.assert_allclose(params[n].grad, g, rtol=1e-9, atol=1e-12, err_msg=n)


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell", "GRUCell_after"])
@pytest.mark.parametrize("lengths", [None, [5, 3, 1]])
def test_nn_cells_through_unroll(kind, lengths):
    rng = np.random.default_rng(4)
    if kind == "GRUCell_after":
        cell = tg.nn.GRUCell(3, 4, reset_after=True, dtype=np.float64, rng=rng)
    else:
        cell = getattr(tg.nn, kind)(3, 4, dtype=np.float64, rng=rng)
    head = tg.nn.Linear(4, 2, dtype=np.float64, rng=rng)
    params = list(cell.parameters()) + list(head.parameters())

    def step(xs, ys):
        out, state = tg.nn.unroll(cell, xs, lengths=lengths)
        h = state[0] if isinstance(state, tuple) else state
        loss = tg.mse_loss(head(out), ys) + (h * h).mean()
        loss.backward()
        return loss
    run_both(step, params, lambda i: (data(i, 3, 5, 3), data(i + 9, 3, 5, 2)))


def test_unroll_truncated_and_list_inputs_and_stacked():
    rng = np.random.default_rng(5)
    cell = tg.nn.LSTMCell(3, 4, dtype=np.float64, rng=rng)
    deep = tg.nn.StackedRNN([tg.nn.GRUCell(3, 4, dtype=np.float64, rng=rng),
                             tg.nn.RNNCell(4, 4, dtype=np.float64, rng=rng)])
    params = list(cell.parameters()) + list(deep.parameters())

    def step(xs):
        out, _ = tg.nn.unroll(cell, [xs[:, t] for t in range(6)], truncate=2)
        out2, _ = deep(xs)
        loss = (out * out).sum() + out2.mean()
        loss.backward()
        return loss
    run_both(step, params, lambda i: (data(i, 2, 6, 3),))


def test_float32_bit_identical():
    rng = np.random.default_rng(6)
    cell = tg.nn.LSTMCell(3, 8, dtype=np.float32, rng=rng)
    params = list(cell.parameters())
    step = _unrolled_square_loss(cell, "mean")
    c = tg.compile(step)
    for i in range(4):
        ref_loss, ref, loss, got = _eager_then_compiled(step, c, params, data(i, 7, 2, 3).astype(np.float32))
        assert loss.data.tobytes() == ref_loss.data.tobytes()
        for a, b in zip(got, ref):
            assert a.tobytes() == b.tobytes()


# -- fallback, checks, parameters, retracing ---------------------------------------------------------
def test_dropout_redraws_its_mask_from_the_generator():
    W = param(3, 3)
    gen_a, gen_b = np.random.default_rng(0), np.random.default_rng(0)

    def make(gen):
        def step(x):
            loss = (tg.dropout(tg.tanh(x @ W), 0.5, gen) * 1.5).sum()
            loss.backward()
            return loss
        return step
    c, eager = tg.compile(make(gen_a), check_every=4), make(gen_b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i in range(9):
            x = data(i, 4, 3)
            W.grad = None
            ref = eager(tg.tensor(x)).item()
            ref_g = W.grad.copy()
            W.grad = None
            assert c(x).item() == ref                       # the same masks as eager, call after call
            np.testing.assert_array_equal(W.grad, ref_g)
    assert "_draw_mask(" in c.source
    assert gen_a.bit_generator.state == gen_b.bit_generator.state


def test_untraced_random_draw_falls_back_with_one_warning():
    W = param(3)
    gen_a, gen_b = np.random.default_rng(1), np.random.default_rng(1)

    def make(gen):
        def step(x):
            noise = tg.tensor(gen.standard_normal(3))       # numpy's draw: a constant to the trace
            loss = (x * W * noise).sum()
            loss.backward()
            return loss
        return step
    c, eager = tg.compile(make(gen_a)), make(gen_b)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(5):
            x = data(i, 3)
            W.grad = None
            ref = eager(tg.tensor(x)).item()
            ref_g = W.grad.copy()
            W.grad = None
            assert c(x).item() == ref
            np.testing.assert_array_equal(W.grad, ref_g)
    msgs = [str(w.message) for w in caught if issubclass(w.category, CompileWarning)]
    assert len(msgs) == 1 and "constant" in msgs[0], msgs


def test_checkpoint_falls_back_to_eager():
    cell = tg.nn.RNNCell(2, 3, dtype=np.float64, rng=np.random.default_rng(1))

    def step(xs):
        out, _ = tg.nn.unroll(cell, xs, checkpoint_every=2)
        loss = (out * out).sum()
        loss.backward()
        return loss
    with pytest.warns(CompileWarning, match="checkpoint"):
        run_both(step, list(cell.parameters()), lambda i: (data(i, 2, 5, 2),), expect_compiled=False)


def test_constant_computed_outside_ops_from_the_inputs_is_caught():
    W = param(3)

    def step(x):
        scale = tg.tensor(np.abs(x.data).max())     # numpy on .data: invisible to the trace
        loss = (x * W * scale).sum()
        loss.backward()
        return loss
    with pytest.warns(CompileWarning, match="constant"):
        run_both(step, [W], lambda i: (data(i, 3),), expect_compiled=False)


def test_check_catches_a_value_dependent_branch():
    W = param(3)

    def step(x):
        y = x * W
        y = tg.tanh(y) if float(x.data.sum()) > 0 else tg.sigmoid(y)    # baked into the trace
        loss = y.sum()
        loss.backward()
        return loss
    c = tg.compile(step, check=True)
    pos = np.array([1.0, 2.0, 3.0])
    c(pos), c(pos * 2), c(pos * 3)                   # traced twice (same branch), then a checked replay
    W.grad = None
    with pytest.raises(CompileError, match=r"record %1 \(tanh.*sigmoid"):
        c(-pos)
    W.grad = None
    step(tg.tensor(-pos))
    ref = W.grad.copy()
    W.grad = None
    with pytest.raises(CompileError):
        c(-pos)
    np.testing.assert_array_equal(W.grad, ref)       # what the failed call leaves is eager's


def test_check_every():
    W = param(3)
    calls = []

    def step(x):
        calls.append(1)
        loss = (x * W).sum()
        loss.backward()
        return loss
    c = tg.compile(step, check_every=3)
    for i in range(8):
        c(data(i, 3))
    assert len(calls) == 2 + 2                       # two traces, then an eager re-run at replays 3 and 6


def test_optimizer_in_place_update_is_seen_and_training_matches_eager():
    def model(seed):
        rng = np.random.default_rng(seed)
        cell = tg.nn.GRUCell(3, 4, dtype=np.float64, rng=rng)
        head = tg.nn.Linear(4, 1, dtype=np.float64, rng=rng)
        return cell, head, list(cell.parameters()) + list(head.parameters())

    def make_step(cell, head):
        def step(xs, ys):
            out, _ = tg.nn.unroll(cell, xs)
            loss = tg.mse_loss(head(out), ys)
            loss.backward()
            return loss
        return step
    results = []
    for compiled in (False, True):
        cell, head, params = model(7)
        opt = tg.optim.Adam(params, lr=0.05)
        step = make_step(cell, head)
        step = tg.compile(step) if compiled else step
        losses = []
        for i in range(8):
            opt.zero_grad()
            xs, ys = data(i, 2, 4, 3), data(i + 50, 2, 4, 1)
            losses.append(step(xs, ys).item() if compiled else step(tg.tensor(xs), tg.tensor(ys)).item())
            opt.step()
        results.append((losses, [p.data.copy() for p in params]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=RTOL)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=RTOL)
    assert len(set(results[1][0])) == 8              # the loss moves: updates reached the replay


def test_replacing_a_parameter_array_retraces():
    W = param(3)

    def step(x):
        loss = (x * W).sum()
        loss.backward()
        return loss
    c = tg.compile(step)
    x = np.array([1.0, 2.0, 3.0])
    for _ in range(3):
        c(x)
    traces = c.traces
    W.data = np.array([10.0, 20.0, 30.0])            # a new array: the bound one is stale
    assert c(np.array([1.0, 1.0, 1.0])).item() == 60.0
    assert c.traces == traces + 1


def test_new_shapes_retrace_and_cache_is_bounded():
    W = param(1)

    def step(x):
        loss = (x * W).sum()
        loss.backward()
        return loss
    c = tg.compile(step, cache_size=3)
    for n in range(1, 6):
        for rep in range(3):
            W.grad = None
            assert c(np.arange(n, dtype=float) + rep).item() == pytest.approx(W.data[0] * (np.arange(n) + rep).sum())
            assert W.grad[0] == pytest.approx((np.arange(n) + rep).sum())
    assert len(c.cache) == 3 and c.traces == 10


def test_optimizer_step_inside_the_function_falls_back():
    W = param(3)
    opt = tg.optim.SGD([W], lr=0.1)

    def step(x):
        opt.zero_grad()
        loss = (x * W).sum()
        loss.backward()
        opt.step()
        return loss
    c = tg.compile(step)
    with pytest.warns(CompileWarning, match="in-place write"):
        for i in range(4):
            c(data(i, 3))


def test_returning_a_python_number_falls_back():
    W = param(3)

    def step(x):
        loss = (x * W).sum()
        loss.backward()
        return loss.item()
    c = tg.compile(step)
    with pytest.warns(CompileWarning, match="returns a float"):
        assert [c(data(i, 3)) for i in range(3)] == [float((data(i, 3) * W.data).sum()) for i in range(3)]


def test_forward_only_and_index_inputs():
    E = param(6, 3)

    def step(ids, x):
        return (tg.take(E, ids) * x).sum(axis=-1)
    c = tg.compile(step)
    ids = np.array([1, 1, 4])
    for i in range(3):
        np.testing.assert_array_equal(c(ids, data(i, 3, 3)).data, step(tg.tensor(ids), tg.tensor(data(i, 3, 3))).data)
    np.testing.assert_array_equal(c(np.array([0, 5, 5]), data(0, 3, 3)).data,    # new index values: retrace
                                  step(tg.tensor(np.array([0, 5, 5])), tg.tensor(data(0, 3, 3))).data)


def test_source_is_readable_with_scope_comments():
    rng = np.random.default_rng(0)
    W = tg.tensor(rng.standard_normal((3, 3)), requires_grad=True, name="W_hh")

    def step(xs):
        h = tg.tensor(np.zeros((1, 3)))
        for t in range(2):
            with tg.scope("rnn", t=t):
                h = tg.tanh(xs[t] + h @ W)
        loss = (h * h).sum()
        loss.backward()
        return loss
    c = tg.compile(step)
    assert "not compiled yet" in c.source
    for i in range(3):
        c(data(i, 2, 1, 3))
    src = c.source
    assert str(c) == src
    assert "# forward" in src and "# backward" in src
    assert "| rnn t=0" in src and "| rnn t=1" in src
    assert "np.tanh(" in src and "p_W_hh" in src and "_store_grad(" in src
    compile(src, "<check>", "exec")


@pytest.mark.parametrize("exact", [True, False])
def test_fuzzed_programs_compiled_equal_eager(exact):
    """~100 programs of tests/programs.py (the differential fuzzer's generator): the compiled step's loss
    and gradients are eager's, bit for bit (exact=False: to 1e-12 of each array's largest entry), or the
    step falls back to eager (with a warning)."""
    programs = pytest.importorskip("programs")

    def same(a, b, msg):
        if exact:
            np.testing.assert_array_equal(a, b, err_msg=msg)
        else:
            assert np.shape(a) == np.shape(b), msg
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.max(np.abs(b), initial=0) + 1e-300,
                                       err_msg=msg)
    compiled_count = 0
    for seed in range(100 if exact else 50):
        p = programs.generate(seed)
        leaves = programs.leaves_of(p)
        code = compile(p.body(), f"<program {seed}>", "exec")

        def step():
            loss = programs.run_tapegrad(p, leaves, code)[p.loss]
            loss.backward()
            return loss
        ref_loss = step()
        ref = {k: np.array(t.grad) for k, t in leaves.items()}
        c = tg.compile(step, exact=exact)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CompileWarning)
            for call in range(3):
                for t in leaves.values():
                    t.grad = None
                loss = c()
                same(loss.data, ref_loss.data, f"seed {seed} call {call}")
                for k, t in leaves.items():
                    if t.grad is None or ref[k].dtype == object:
                        assert t.grad is None and ref[k].dtype == object, f"seed {seed}: d{k}"
                        continue
                    same(t.grad, ref[k], f"seed {seed} call {call}: d{k}")
        compiled_count += any(e.program is not None for e in c.cache.values())
    assert compiled_count >= (80 if exact else 40), compiled_count


@pytest.mark.parametrize("cell", sorted(handwritten.CAREFUL))
def test_careful_baseline_matches_the_seed_style_handwritten_code(cell):
    rng = np.random.default_rng(11)
    B, D, H, O, T = 3, 4, 5, 2, 6
    p = handwritten.init_params(cell, D, H, O, rng, np.float64)
    step = handwritten.make_careful(cell, p, T, B)
    for i in range(2):                                   # the reused buffers give the same result twice
        xs, ys = handwritten.make_data(B, D, O, T, np.random.default_rng(i), np.float64)
        loss, grads = step(xs, ys)
        ref_loss, ref = handwritten.STEPS[cell](p, xs, ys)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
        assert grads.keys() == ref.keys()
        for n, g in ref.items():
            np.testing.assert_allclose(grads[n], g, rtol=1e-10, atol=1e-14, err_msg=f"{cell} d{n}")


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell"])
def test_batched_weight_gradients_agree_to_rounding(kind):
    rng = np.random.default_rng(12)
    cell = getattr(tg.nn, kind)(3, 5, dtype=np.float64, rng=rng)
    params = list(cell.parameters())

    def step(xs):
        out, _ = tg.nn.unroll(cell, xs)
        loss = (out * out).sum()
        loss.backward()
        return loss
    c = tg.compile(step, batch_weight_grads=True)
    for i in range(4):
        xs = data(i, 2, 7, 3)
        for q in params:
            q.grad = None
        ref_loss = step(tg.tensor(xs)).item()
        ref = _grads(params)
        for q in params:
            q.grad = None
        assert c(xs).item() == ref_loss
        for a, b in zip(_grads(params), ref):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())
    if kind == "LSTMCell":           # (the GRU cell slices its W_h per step: those gradients are indexed)
        assert "all steps' x_t^T g_t as one product" in c.source


def _same_as_eager(c, step, W, i, targets):
    """A compiled call on batch i with `targets` gives eager's loss and W.grad."""
    W.grad = None
    got, got_g = c(data(i, 5, 4), targets).item(), W.grad.copy()
    W.grad = None
    assert got == step(tg.tensor(data(i, 5, 4)), tg.tensor(targets)).item()
    np.testing.assert_array_equal(got_g, W.grad)


def test_integer_targets_that_change_every_call_are_replayed():
    """Class targets are data: two tracing calls with different targets trace the same program, so the
    values are not baked in; every later batch replays (it traced again on every batch before)."""
    W = param(4, 3)

    def step(x, targets):
        loss = tg.cross_entropy(x @ W, targets) + tg.nll_loss(tg.log_softmax(x @ W, -1), targets,
                                                             weight=targets > 0)
        loss.backward()
        return loss
    c = tg.compile(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)
        for i in range(8):
            _same_as_eager(c, step, W, i, np.random.default_rng(i).integers(0, 3, 5))
    assert c.traces == 2 and repr(c).startswith("<tapegrad.compile(step): 1 program(s)")


def test_integer_inputs_the_program_depends_on_get_one_program_per_value():
    """unroll's lengths change the program (which steps each row runs): such a signature is keyed by the
    lengths' values, each value compiled on its own, never one program for all."""
    cell = tg.nn.RNNCell(3, 4, dtype=np.float64, rng=np.random.default_rng(1))
    params = list(cell.parameters())

    def step(xs, lengths):
        out, h = tg.nn.unroll(cell, xs, lengths=lengths)
        loss = (out * out).sum() + (h * h).sum()
        loss.backward()
        return loss
    c = tg.compile(step)
    for i, lengths in enumerate([[5, 3, 1], [5, 3, 2], [5, 3, 1], [5, 3, 2], [5, 3, 1], [5, 3, 2]]):
        ref, ref_g, got, got_g = _eager_then_compiled(step, c, params, data(i, 3, 5, 3), np.array(lengths))
        assert abs(got.item() - ref.item()) <= 1e-12 * abs(ref.item())
        for a, b in zip(got_g, ref_g):
            _close(a, b, f"call {i}")
    assert len(c.by_value) == 1 and sum(e.program is not None for e in c.cache.values()) == 2


def test_unproven_integer_values_are_guarded():
    """The two tracing calls had the same targets, so the program might depend on them: a call with new
    targets traces once more (and, as the program is the same, replays from then on)."""
    W = param(4, 3)

    def step(x, targets):
        loss = tg.cross_entropy(x @ W, targets)
        loss.backward()
        return loss
    c = tg.compile(step)
    same = np.array([0, 1, 2, 1, 0])
    for i in range(3):
        c(data(i, 5, 4), same)
    assert c.traces == 2
    for i in range(3, 6):
        _same_as_eager(c, step, W, i, np.random.default_rng(i).integers(0, 3, 5))
    assert c.traces == 3


def test_a_program_that_changes_every_call_warns_once_and_runs_eagerly():
    W = param(3, 3)

    def step(x):
        loss = (x @ W).sum()
        loss.backward()
        return loss
    c = tg.compile(step, cache_size=2)
    with pytest.warns(CompileWarning, match="keeps changing") as caught:
        for n in range(1, 12):
            W.grad = None
            assert c(data(n, n, 3)).item() == pytest.approx(step(tg.tensor(data(n, n, 3))).item())
    assert len(caught) == 1 and c.traces == 5 and c.gave_up


def test_reused_buffers_are_bit_identical_and_never_returned():
    rng = np.random.default_rng(13)
    cell = tg.nn.LSTMCell(3, 4, dtype=np.float64, rng=rng)
    params = list(cell.parameters())

    def step(xs):
        out, (h, c) = tg.nn.unroll(cell, xs)
        loss = (out * out).sum() + tg.sigmoid(c).mean()
        loss.backward()
        return loss, h, tg.tanh(c)               # h and tanh(c) are elementwise outputs
    compiled = tg.compile(step, reuse_buffers=True)
    kept = []
    for i in range(5):
        ref, ref_g, got, got_g = _eager_then_compiled(step, compiled, params, data(i, 2, 5, 3))
        kept.append((got, ref))
        for a, b in zip(got_g, ref_g):
            np.testing.assert_array_equal(a, b)
    for got, ref in kept:                        # earlier calls' outputs were not overwritten by later ones
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a.data, b.data)
    assert "out=B" in compiled.source


def _lstm_step(T, H=32, B=4, D=8):
    cell = tg.nn.LSTMCell(D, H, dtype=np.float64, rng=np.random.default_rng(0))

    def step(xs):
        out, _ = tg.nn.unroll(cell, xs, time_major=True)
        loss = (out * out).mean()
        loss.backward()
        return loss
    return step, list(cell.parameters()), np.random.default_rng(1).standard_normal((T, B, D))


def test_replay_frees_each_value_after_its_last_use():
    """The program deletes each local after its last use, so a replay holds about what the eager sweep
    holds, not every value and gradient of the step at once (a ratio of two peaks in one run)."""
    import tracemalloc
    step, params, xs = _lstm_step(T=100)
    c = tg.compile(step)
    c(xs), c(xs)
    assert "    del " in c.source

    def peak(f):
        for q in params:
            q.grad = None
        tracemalloc.start()
        f()
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return top
    eager, replay = peak(lambda: step(tg.tensor(xs))), peak(lambda: c(xs))
    assert replay <= 1.2 * eager, (replay, eager)


def test_hoisted_projection_lives_in_its_gradients_buffer(monkeypatch):
    """unroll's input projection (T, B, 4H) is read step by step and never by a rule, so the program
    computes it into the buffer its gradient is gathered into (kept between calls): the end of the forward
    holds one projection less, so the replay's peak drops (to the backward's, here about half a projection
    lower than the same program without it; two peaks in one run), and the gradients are the same bit for bit."""
    import importlib
    import tracemalloc
    compile_module = importlib.import_module("tapegrad.compile")      # the module (tg.compile is the function)
    cell = tg.nn.LSTMCell(8, 32, dtype=np.float64, rng=np.random.default_rng(0))
    params, xs = list(cell.parameters()), np.random.default_rng(1).standard_normal((100, 4, 8))
    projection = xs.shape[0] * xs.shape[1] * 4 * 32 * 8

    def step(xs):                             # a loss on the last output: the peak is the end of the forward
        out, _ = tg.nn.unroll(cell, xs, time_major=True)
        loss = (out[-1] * out[-1]).sum()
        loss.backward()
        return loss

    def replay(program):
        program(xs), program(xs)                 # trace twice, then measure a replay
        for q in params:
            q.grad = None
        tracemalloc.start()
        program(xs)
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return top, [q.grad.copy() for q in params]
    c = tg.compile(step)
    with_buffer, grads = replay(c)
    assert "out=BG" in c.source
    monkeypatch.setattr(compile_module._Gathers, "forward_into", lambda *args: None)
    without, grads_without = replay(tg.compile(step))
    assert with_buffer <= without - 0.4 * projection, (with_buffer, without, projection)
    for a, b in zip(grads, grads_without):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("exact", [True, False])
def test_hoisted_product_goes_into_the_same_buffer_for_any_layout_of_the_input(exact):
    """unroll's x W (before its `+ b`) is computed into that buffer too, as ops.matmul computes it (one 2-d
    product of the rows of a contiguous input): a non-contiguous input (batch-first data transposed to
    time-major) takes ops.matmul itself, so both replays give eager's numbers (bit for bit by default)."""
    cell = tg.nn.LSTMCell(3, 5, dtype=np.float64, rng=np.random.default_rng(0))
    params = list(cell.parameters())
    step = _unrolled_square_loss(cell, "sum")
    c = tg.compile(step, exact=exact)
    rng = np.random.default_rng(1)
    calls = [rng.standard_normal((6, 2, 3)) for _ in range(3)] + [rng.standard_normal((2, 6, 3)).transpose(1, 0, 2)]
    assert not calls[-1].flags.c_contiguous
    for i, xs in enumerate(calls):
        ref_loss, ref, loss, got = _eager_then_compiled(step, c, params, xs)
        for a, b in zip([loss.data] + got, [ref_loss.data] + ref):
            if exact:
                np.testing.assert_array_equal(a, b, err_msg=f"call {i}")
            else:
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.abs(b).max(), err_msg=f"call {i}")
    assert re.search(r"np\.dot\(x0\.reshape\(12, 3\), \w+, out=BG\d+\) if x0\.flags\.c_contiguous", c.source)


def test_generated_program_grows_linearly_with_the_unroll():
    """A concat of T pieces has T edges; each is written in O(1) (the inputs' stand-ins bound once as a
    tuple), so a T-step program is O(T) long (it was O(T^2): all T names in each edge's rule call)."""
    w = param(3)
    sizes = {}
    for T in (50, 200):
        def step(xs):
            loss = (tg.concat([tg.tanh(xs[t] * w) for t in range(T)]) ** 2).sum()
            loss.backward()
            return loss
        c = tg.compile(step)
        xs = data(0, T, 3)
        c(xs), c(xs)
        sizes[T] = len(c.source)
        w.grad = None
    assert sizes[200] / sizes[50] < 4.4, sizes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_cells_from_ops_are_bit_identical(cell, dtype):
    """The default replay runs eager's kernels in eager's order (mse_loss inline, its difference kept for
    the rule): loss and gradients are eager's to the bit, in float32 and float64."""
    import bptt
    B, D, H, T = 2, 3, 4, 5
    p = handwritten.init_params(cell, D, H, D, np.random.default_rng(3), dtype)
    params = {n: tg.tensor(v, requires_grad=True) for n, v in p.items()}
    step = bptt.ops_train_step(cell, params, tg.tensor(np.zeros((B, H), dtype)))
    c = tg.compile(step)
    for i in range(4):
        xs, ys = handwritten.make_data(B, D, D, T, np.random.default_rng(i), dtype)
        ref, ref_g, got, got_g = _eager_then_compiled(step, c, list(params.values()), xs, ys)
        assert got.data.tobytes() == ref.data.tobytes()
        for n, a, b in zip(params, got_g, ref_g):
            assert a.tobytes() == b.tobytes(), n
    assert "d_v" in c.source and "np.vdot(" in c.source
