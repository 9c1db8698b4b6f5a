"""tapegrad.compile(exact=False): the product and elementwise rewrites of tapegrad/fusion.py give eager's
loss and gradients to rounding (float64, 1e-12 of each array's largest entry) on random per-gate cells
(50 per run, `TAPEGRAD_FUZZ_CELLS=1000` for more),
see in-place optimizer updates of the joined parameters, and are bit-identical where only elementwise
work is fused."""
import functools
import operator
import os
import re
import warnings

import numpy as np
import pytest

import tapegrad as tg
from tapegrad.compile import CompileWarning

CELLS = int(os.environ.get("TAPEGRAD_FUZZ_CELLS", "50"))   # random cells per run (more: set the variable)
ACTIVATIONS = {"sigmoid": tg.sigmoid, "tanh": tg.tanh, "exp": lambda a: tg.exp(a * 0.1), "relu": tg.relu,
               "neg": lambda a: -a, "none": lambda a: a}


def _near(a, b, what):
    assert (a is None) == (b is None), what
    if a is None:
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, what
    scale = np.max(np.abs(b), initial=0.0)
    assert np.all(np.abs(a - b) <= 1e-12 * scale + 1e-300), f"{what}: {np.max(np.abs(a - b))} vs scale {scale}"


def random_cell(seed):
    """A recurrent program from ops, drawn at random: G gates, each act_k(x_t U_k + h W_k [+ b_k]), the new
    state mixing gates and the old state, an output layer h_t V + c read by the loss (sunk after the loop)
    or fed back into the next input (not), some gates reading r * h instead of h (a GRU's candidate), and
    sometimes truncation (h detached) and dropout on h."""
    rng = np.random.default_rng(seed)
    B, D, H, T = (int(rng.integers(1, 4)), int(rng.integers(1, 5)), int(rng.integers(1, 5)),
                  int(rng.integers(1, 5)))
    G = int(rng.integers(2, 5))
    acts = [str(a) for a in rng.choice(list(ACTIVATIONS), G)]
    bias = rng.random(G) < 0.7
    reads_rh = rng.random(G) < 0.25
    same_act = rng.random() < 0.5
    if same_act:
        acts = [acts[0]] * G
    p = {}
    for k in range(G):
        p[f"U{k}"] = rng.standard_normal((D, H)) * 0.5
        p[f"W{k}"] = rng.standard_normal((H, H)) * 0.5
        if bias[k]:
            p[f"b{k}"] = rng.standard_normal(H) * 0.1
    p["V"], p["c"] = rng.standard_normal((H, 2)), rng.standard_normal(2)
    feedback = rng.random() < 0.2              # y_t fed into the next step: the output layer cannot sink
    if feedback:
        p["F"] = rng.standard_normal((2, D)) * 0.3
    params = {n: tg.tensor(v, requires_grad=True) for n, v in p.items()}
    mix = [int(m) for m in rng.integers(0, 3, G)]
    detach_at = {int(t) for t in rng.integers(1, T + 1, 2)} if rng.random() < 0.3 else set()   # truncated BPTT
    dropout = tg.nn.Dropout(0.3, rng=np.random.default_rng(seed)) if rng.random() < 0.15 else None

    def step(*xs_ys):
        xs, ys = xs_ys[:T], xs_ys[T:]
        h = tg.tensor(np.zeros((B, H)))
        loss, y_prev = 0, None
        for t, (x, y) in enumerate(zip(xs, ys)):
            if t in detach_at:
                h = h.detach()
            if feedback and y_prev is not None:
                x = x + y_prev @ params["F"]
            gates = []
            for k in range(G):
                left = h * gates[0] if reads_rh[k] and gates else h
                a = x @ params[f"U{k}"] + left @ params[f"W{k}"]
                if bias[k]:
                    a = a + params[f"b{k}"]
                gates.append(ACTIVATIONS[acts[k]](a))
            new = gates[0] * h if mix[0] == 0 else gates[0]
            for k, g in enumerate(gates[1:], 1):
                new = new + g if mix[k] == 0 else new * g if mix[k] == 1 else new - g * h
            h = tg.tanh(new)
            if dropout is not None:
                h = dropout(h)
            y_prev = h @ params["V"] + params["c"]
            loss = loss + tg.mse_loss(y_prev, y)
        loss.backward()
        return loss

    def inputs(i):
        r = np.random.default_rng(1000 * seed + i)
        if dropout is not None:               # the same masks for the eager and the compiled call of round i
            dropout.rng.bit_generator.state = np.random.default_rng(i).bit_generator.state
        return [r.standard_normal((B, D)) for _ in range(T)] + [r.standard_normal((B, 2)) for _ in range(T)]
    return step, params, inputs


def _run(step, params, inputs, calls=3, **kw):
    c = tg.compile(step, exact=False, **kw)
    for i in range(calls):
        args = inputs(i)
        for q in params.values():
            q.grad = None
        ref = step(*[tg.tensor(a) for a in args])
        ref_g = {n: None if q.grad is None else np.array(q.grad) for n, q in params.items()}
        for q in params.values():
            q.grad = None
        args = inputs(i)
        got = c(*args)
        _near(got.data, ref.data, f"loss, call {i}")
        for n, q in params.items():
            _near(q.grad, ref_g[n], f"d{n}, call {i}")
    return c


def test_random_cells_agree_with_eager_to_rounding():
    fused = sunk = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)           # every one of them compiles
        for seed in range(CELLS):
            c = _run(*random_cell(seed))
            assert c.source.count("def step") == 1
            fused += "concat axis=1" in c.source                      # joined gate weights
            sunk += bool(re.search(r"= (f_concat\(v\d+, v|BX\d+\[\d+:\d+\]\s).*concat axis=0", c.source))  # the
            # output layer after the loop, on the stacked states (a copy, or a view of the states' X rows)
    assert fused >= 0.9 * CELLS and sunk >= 0.5 * CELLS, (fused, sunk)


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_cells_from_ops_are_fused_like_careful_handwritten_code(cell):
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
    import bptt
    import handwritten
    B, D, H, T = 2, 3, 4, 5
    p = handwritten.init_params(cell, D, H, D, np.random.default_rng(3), np.float64)
    params = {n: tg.tensor(v, requires_grad=True) for n, v in p.items()}
    step = bptt.ops_train_step(cell, params, tg.tensor(np.zeros((B, H))))
    c = _run(step, params, lambda i: handwritten.make_data(B, D, D, T, np.random.default_rng(i), np.float64))
    src = c.source
    forward = src.split("# backward")[0]
    # per step one product of h (gates and the previous output layer together; the GRU's (r h) W_n apart),
    # plus the hoisted input product and h_0's
    assert forward.count("np.dot(") == (2 * T + 2 if cell == "gru" else T + 2)
    assert "concat axis=0 offsets=(0, 2, 4, 6, 8, 10)" in src                 # the T inputs, stacked once
    assert "all steps' x_t^T g_t as one product" in src
    # the recurrent weight's transpose made contiguous once per call, read by every step's g @ W^T
    assert re.search(r"T_(\w+) = np\.ascontiguousarray\(\1\.T\)", src) and re.search(r"np\.dot\(g_\w+, T_", src)
    # the T per-step losses are one mse over the stacked predictions (targets stacked once), so the output
    # layer's bias c sums one gradient array; a cell's bias sums the G rows of the product its g_t also
    # feeds (no second (T B, H) buffer)
    assert forward.count("mse_loss") == 1 and "mse_loss reduction='sum'" in forward
    sums = re.findall(r"np\.add\.reduce\((BG\d+), axis=0\)", src)
    products = re.findall(r"BX\d+(?:\[:\d+\])?\.T @ (BG\d+)", src)
    ns = next(e for e in c.cache.values() if e.program).program.__globals__
    alone = [a for a in sums if not any(np.shares_memory(ns[a], ns[b]) for b in products)]
    assert len(sums) == (2 if cell == "gru" else 1) and not alone, (sums, products, alone)
    # no step copies its g_t into a G buffer: G is the gates' gathered gradient (or, for the GRU's
    # [W_r W_z] and W_n, a column block of it); the stacked states are a view of the X rows that hold
    # h_0 ... h_T, as careful code keeps one (T + 1, B, H) array
    assert not re.search(r"BG\d+\[\d+:\d+\] = g_", src)
    assert re.search(r"= BX\d+\[2:12\]\s.*concat axis=0 offsets=\(0, 2, 4, 6, 8, 10\) : \(10, 4\)", forward)


def test_in_place_optimizer_updates_of_joined_parameters_are_seen():
    step, params, inputs = random_cell(7)
    opt = tg.optim.SGD(list(params.values()), lr=0.05)
    twin = {n: tg.tensor(q.data.copy(), requires_grad=True) for n, q in params.items()}
    c = tg.compile(step, exact=False)
    losses = []
    for i in range(6):
        for q in params.values():
            q.grad = None
        losses.append(c(*inputs(i)).item())
        opt.step()
    eager_step, eager_params, _ = random_cell(7)
    for n, q in eager_params.items():
        q.data[...] = twin[n].data
    eager_opt = tg.optim.SGD(list(eager_params.values()), lr=0.05)
    for i in range(6):
        for q in eager_params.values():
            q.grad = None
        ref = eager_step(*[tg.tensor(a) for a in inputs(i)]).item()
        eager_opt.step()
        assert abs(losses[i] - ref) <= 1e-12 * abs(ref), (i, losses[i], ref)
    assert len(set(losses)) == len(losses)                   # the parameters did move


def test_fused_elementwise_siblings_alone_are_bit_identical():
    """Four gates sliced from one input, each through its own elementwise ops: only the sibling fusion
    applies (no products), and elementwise work on a wider slice gives the same bits."""
    rng = np.random.default_rng(2)
    b = tg.tensor(rng.standard_normal(12), requires_grad=True)
    bs = [tg.tensor(rng.standard_normal(3), requires_grad=True) for _ in range(4)]
    params = {"b": b, **{f"b{k}": q for k, q in enumerate(bs)}}

    def step(z):
        a = z * b
        gates = [tg.sigmoid(a[:, 3 * k:3 * k + 3] + bs[k]) for k in range(3)] + [tg.tanh(a[:, 9:] + bs[3])]
        loss = (gates[0] * gates[1] + gates[2] * gates[3]).sum()
        loss.backward()
        return loss
    c = tg.compile(step, exact=False)
    for i in range(3):
        z = np.random.default_rng(i).standard_normal((2, 12))
        for q in params.values():
            q.grad = None
        ref = step(tg.tensor(z))
        ref_g = {n: q.grad.copy() for n, q in params.items()}
        for q in params.values():
            q.grad = None
        got = c(z)
        assert got.data.tobytes() == ref.data.tobytes()
        for n, q in params.items():
            assert q.grad.tobytes() == ref_g[n].tobytes(), n
    forward = c.source.split("# backward")[0]
    assert forward.count("sigmoid :") == 1 and "concat axis=0 offsets=(0, 3, 6, 9, 12)" in forward


def test_nn_cells_and_unroll_options_agree_to_rounding():
    rng = np.random.default_rng(4)
    cells = [tg.nn.LSTMCell(3, 4, dtype=np.float64, rng=rng), tg.nn.GRUCell(3, 4, dtype=np.float64, rng=rng),
             tg.nn.RNNCell(3, 4, dtype=np.float64, rng=rng)]
    head = tg.nn.Linear(4, 2, dtype=np.float64, rng=rng)
    params = {f"p{j}": q for j, q in enumerate([q for m in (*cells, head) for q in m.parameters()])}

    def step(xs, ys):
        loss = 0
        for cell, kw in zip(cells, ({"lengths": [5, 3, 1]}, {"truncate": 2}, {})):
            out, _ = tg.nn.unroll(cell, xs, **kw)
            loss = loss + tg.mse_loss(head(out), ys)
        loss.backward()
        return loss
    r = np.random.default_rng
    _run(step, params, lambda i: (r(i).standard_normal((3, 5, 3)), r(i + 9).standard_normal((3, 5, 2))))


def test_inputs_sliced_once_per_gate_are_one_value():
    """xs[t] written in every gate's expression is one slice (common subexpressions), so the gates'
    input products share their operand and fuse: the U's are joined and hoisted over the steps."""
    rng = np.random.default_rng(5)
    D, H, T = 2, 3, 4
    params = {f"{m}{k}": tg.tensor(rng.standard_normal((D if m == "U" else H, H)), requires_grad=True)
              for k in "ifog" for m in "UW"}

    def step(xs):
        h = c = tg.tensor(np.zeros((2, H)))
        loss = 0
        for t in range(T):
            a = {k: xs[t] @ params["U" + k] + h @ params["W" + k] for k in "ifog"}
            c = tg.sigmoid(a["f"]) * c + tg.sigmoid(a["i"]) * tg.tanh(a["g"])
            h = tg.sigmoid(a["o"]) * tg.tanh(c)
            loss = loss + (h * h).sum()
        loss.backward()
        return loss
    c = _run(step, params, lambda i: (np.random.default_rng(i).standard_normal((T, 2, D)),))
    forward = c.source.split("# backward")[0]
    assert forward.count("np.dot(") == T + 1          # one hoisted input product, one h product per step
    assert "concat axis=1 offsets=(0, 3, 6, 9, 12) : (2, 12)" in forward          # the four U's, joined


def test_per_step_losses_become_one_loss_unless_something_else_reads_them():
    """sum over t of mse(h_t V + c, y_t) with the output layer sunk after the loop: the bias add and the
    T losses become one add and one mse over the stacked rows (targets stacked once). A per-step loss the
    step also returns keeps its own mse, and every one of them is eager's to rounding."""
    rng = np.random.default_rng(7)
    B, H, O, T = 2, 3, 2, 5
    params = {"W": tg.tensor(rng.standard_normal((H, H)) * 0.5, requires_grad=True),
              "V": tg.tensor(rng.standard_normal((H, O)), requires_grad=True),
              "c": tg.tensor(rng.standard_normal(O), requires_grad=True)}

    def per_step(xs, ys):
        h, losses = tg.tensor(np.zeros((B, H))), []
        for t in range(T):
            h = tg.tanh(xs[t] + h @ params["W"])
            losses.append(tg.mse_loss(h @ params["V"] + params["c"], ys[t]))
        return losses

    def step(xs, ys):
        losses = per_step(xs, ys)
        loss = functools.reduce(operator.add, losses)
        loss.backward()
        return loss

    def step_and_losses(xs, ys):
        losses = per_step(xs, ys)
        loss = functools.reduce(operator.add, losses)
        loss.backward()
        return loss, losses[2]

    def inputs(i):
        r = np.random.default_rng(i)
        return r.standard_normal((T, B, H)), r.standard_normal((T, B, O))
    forward = _run(step, params, inputs).source.split("# backward")[0]
    assert forward.count("mse_loss") == 1 and f"concat axis=0 offsets=(0, 2, 4, 6, 8, 10) : ({T * B}, {O})" in forward
    c = tg.compile(step_and_losses, exact=False)
    for i in range(3):
        for q in params.values():
            q.grad = None
        ref, ref_t = step_and_losses(*[tg.tensor(a) for a in inputs(i)])
        ref_g = {n: np.array(q.grad) for n, q in params.items()}
        for q in params.values():
            q.grad = None
        got, got_t = c(*inputs(i))
        _near(got.data, ref.data, "loss")
        _near(got_t.data, ref_t.data, "the returned step loss")
        for n, q in params.items():
            _near(q.grad, ref_g[n], f"d{n}")
    assert c.source.split("# backward")[0].count("mse_loss") == T
