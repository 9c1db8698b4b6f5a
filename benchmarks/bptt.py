"""Benchmark of one BPTT training step: tapegrad against a hand-written numpy BPTT, in the same run.

One step = forward over T steps of an Elman RNN, an LSTM or a GRU (h_0 = c_0 = 0), output y_t = h_t V + c,
loss = sum over t of mean((y_t - target_t)**2), backward to every parameter. The math and the
parameter layout are those of `handwritten.py`; every contender computes the same loss and
gradients, checked against hand-numpy (float32, rtol 1e-3) before it is timed.

Method:
  * single thread: OMP/OPENBLAS/MKL_NUM_THREADS=1 are set before numpy is imported, and
    torch.set_num_threads(1), so the numbers compare the frameworks' overhead, not the BLAS threading;
  * interleaved rounds: in each round every contender runs `repeat` steps and keeps their median;
    the contenders' order rotates from round to round, so a slow phase of the machine hits them all;
  * final time = the minimum over rounds of those medians (the least disturbed round);
  * `--memory SIZE` instead reports what each contender keeps allocated after its warm-up step plus
    the tracemalloc peak of one more step above that (tracemalloc sees numpy's array buffers but not
    PyTorch's allocator: printed as n/a).

Contenders are a dict name -> factory(cell, params, xs, ys) returning a no-argument step function
that returns (loss, grads as numpy arrays); a factory raising ImportError is shown as n/a.

    python benchmarks/bptt.py [--sizes tiny,small,large] [--rounds N] [--repeat M] [--memory SIZE]
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import operator  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402

_HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]      # handwritten.py, and tapegrad when not installed
import handwritten  # noqa: E402
import minimal_tape  # noqa: E402

SIZES = {
    "tiny": dict(B=1, D=10, H=20, T=10),
    "small": dict(B=32, D=32, H=128, T=50),
    "large": dict(B=64, D=256, H=512, T=100),
}
CELLS = ("elman", "lstm", "gru")
BASELINE = "hand-numpy"           # the seed-style hand-written code (per-gate products inside the loop)
CAREFUL = "hand-careful"          # the careful hand-written code; ratios are against it where it exists
UNTRACED = {"pytorch"}           # allocations tracemalloc cannot see
_SKIPPED = set()                 # contenders already reported as not importable


def framework_loss(ops, cell, p, xs, ys, h0, head_loss=None):
    """The cell written with a framework's ops, step by step, as a user would; sum of per-step MSE.
    head_loss(h, y), if given, computes a step's loss mse(h V + c, y) instead."""
    h = c = h0
    losses = []
    for x, y in zip(xs, ys):
        if cell == "elman":
            h = ops.tanh(x @ p["U"] + h @ p["W"] + p["b"])
        elif cell == "gru":
            r = ops.sigmoid(x @ p["Ur"] + h @ p["Wr"] + p["br"])
            z = ops.sigmoid(x @ p["Uz"] + h @ p["Wz"] + p["bz"])
            n = ops.tanh(x @ p["Un"] + (r * h) @ p["Wn"] + p["bn"])
            h = (1 - z) * n + z * h
        else:
            a = {k: x @ p["U" + k] + h @ p["W" + k] + p["b" + k] for k in handwritten.GATES["lstm"]}
            c = ops.sigmoid(a["f"]) * c + ops.sigmoid(a["i"]) * ops.tanh(a["g"])
            h = ops.sigmoid(a["o"]) * ops.tanh(c)
        losses.append(head_loss(h, y) if head_loss else ops.mse(h @ p["V"] + p["c"], y))
    return functools.reduce(operator.add, losses)


def _h0(p, xs):
    return np.zeros((xs.shape[1], p["V"].shape[0]), xs.dtype)


def hand_numpy(cell, p, xs, ys):
    step = handwritten.STEPS[cell]
    return lambda: step(p, xs, ys)


def _eager_step(params, loss_fn, to_numpy):
    """Step of a define-by-run framework whose leaves accumulate into .grad (tapegrad, PyTorch)."""
    def step():
        for q in params.values():
            q.grad = None
        loss = loss_fn(params)
        loss.backward()
        return loss.item(), {n: to_numpy(q.grad) for n, q in params.items()}
    return step


def _taped_step(ops, leaf, param, cell, p, xs, ys):
    """framework_loss on a tape whose parameters are param(array) and data leaf(array)."""
    params = {n: param(v) for n, v in p.items()}
    xs_, ys_, h0 = [leaf(x) for x in xs], [leaf(y) for y in ys], leaf(_h0(p, xs))
    return _eager_step(params, lambda q: framework_loss(ops, cell, q, xs_, ys_, h0), np.asarray)


def tapegrad(cell, p, xs, ys):
    from tapegrad import mse_loss, sigmoid, tanh, tensor
    ops = SimpleNamespace(tanh=tanh, sigmoid=sigmoid, mse=mse_loss)
    return _taped_step(ops, tensor, lambda v: tensor(v, requires_grad=True), cell, p, xs, ys)


def minimal(cell, p, xs, ys):
    """The same cell code on minimal_tape.py: the least Python an eager tape does per op (a floor)."""
    ops = SimpleNamespace(tanh=minimal_tape.tanh, sigmoid=minimal_tape.sigmoid, mse=minimal_tape.mse)
    return _taped_step(ops, minimal_tape.Var, minimal_tape.Var, cell, p, xs, ys)


def tapegrad_checkpointed(cell, p, xs, ys):
    """tapegrad as above, with each step's output layer and loss under `tapegrad.checkpoint`: recomputed
    in backward, as the hand-written code does, instead of keeping the prediction h V + c."""
    from tapegrad import checkpoint, mse_loss, sigmoid, tanh, tensor
    ops = SimpleNamespace(tanh=tanh, sigmoid=sigmoid)
    params = {n: tensor(v, requires_grad=True) for n, v in p.items()}
    xs_, ys_, h0 = [tensor(x) for x in xs], [tensor(y) for y in ys], tensor(_h0(p, xs))

    def head_loss(h, y):
        return checkpoint(lambda h: mse_loss(h @ params["V"] + params["c"], y), h)
    return _eager_step(params, lambda q: framework_loss(ops, cell, q, xs_, ys_, h0, head_loss), np.asarray)


def pytorch(cell, p, xs, ys):
    import torch
    torch.set_num_threads(1)
    ops = SimpleNamespace(tanh=torch.tanh, sigmoid=torch.sigmoid, mse=torch.nn.functional.mse_loss)
    params = {n: torch.tensor(v, requires_grad=True) for n, v in p.items()}
    xs_, ys_, h0 = torch.from_numpy(xs), torch.from_numpy(ys), torch.from_numpy(_h0(p, xs))
    return _eager_step(params, lambda q: framework_loss(ops, cell, q, xs_, ys_, h0), lambda g: g.numpy())


def hips_autograd(cell, p, xs, ys):
    import autograd
    import autograd.numpy as anp
    ops = SimpleNamespace(tanh=anp.tanh, sigmoid=lambda a: 1.0 / (1.0 + anp.exp(-a)),
                          mse=lambda a, b: anp.mean((a - b) ** 2))
    h0 = _h0(p, xs)
    value_and_grad = autograd.value_and_grad(lambda q: framework_loss(ops, cell, q, xs, ys, h0))
    return lambda: value_and_grad(p)


def tapegrad_builtin(cell, p, xs, ys, compiled=False):
    """tapegrad.nn's built-in cell through `unroll` (fused gate weights, inputs projected before the
    loop) and one output projection for all steps; the same loss: sum over t of mean((y_t - target_t)**2)."""
    import tapegrad as tg
    T, B, D = xs.shape
    H, O = p["V"].shape
    net = {"elman": tg.nn.RNNCell, "lstm": tg.nn.LSTMCell, "gru": tg.nn.GRUCell}[cell](D, H)
    blocks = {"elman": [""], "lstm": list("ifgo"), "gru": list("rzn")}[cell]     # the cells' gate orders
    for name, hand in (("W_x", "U"), ("W_h", "W"), ("b", "b")):
        getattr(net, name).data[...] = np.concatenate([p[hand + k] for k in blocks], axis=-1)
    V, c = tg.tensor(p["V"], requires_grad=True), tg.tensor(p["c"], requires_grad=True)
    xs_, ys_ = tg.tensor(xs), tg.tensor(ys)

    def train(xs_, ys_):
        out, _ = tg.nn.unroll(net, xs_, time_major=True)
        loss = tg.mse_loss(out @ V + c, ys_, reduction="sum") / (B * O)
        loss.backward()
        return loss
    train = tg.compile(train, exact=compiled != "fast") if compiled else train

    def grads():                       # the fused gradients under the hand-written names (for the check)
        out = {"V": V.grad, "c": c.grad}
        for name, hand in (("W_x", "U"), ("W_h", "W"), ("b", "b")):
            for k, g in zip(blocks, np.split(getattr(net, name).grad, len(blocks), axis=-1)):
                out[hand + k] = g
        return out

    def step():
        for q in (*net.parameters(), V, c):
            q.grad = None
        return train(xs_, ys_).item(), grads       # grads: a function, called only by the check
    step.params = [*net.parameters(), V, c]          # for benchmarks/optimizer_step.py
    return step


def hand_careful(cell, p, xs, ys):
    """The careful hand-written baseline (handwritten.CarefulLSTM / CarefulElman / CarefulGRU): fused gates,
    hoisted input and output products, preallocated buffers, in-place updates, one product per weight gradient."""
    if cell not in handwritten.CAREFUL:
        raise ImportError(f"no careful hand-written {cell}")
    step = handwritten.make_careful(cell, p, xs.shape[0], xs.shape[1])
    return lambda: step(xs, ys)


def ops_train_step(cell, params, h0):
    """train(xs, ys): the cell written as tapegrad ops (framework_loss) from h0, backward; the loss."""
    import tapegrad as tg
    ops = SimpleNamespace(tanh=tg.tanh, sigmoid=tg.sigmoid, mse=tg.mse_loss)

    def train(xs, ys):
        loss = framework_loss(ops, cell, params, list(xs), list(ys), h0)
        loss.backward()
        return loss
    return train


def tapegrad_compiled(cell, p, xs, ys, fast=False):
    """The `tapegrad` contender's step (the cell written as ops) under `tapegrad.compile`."""
    import tapegrad as tg
    params = {n: tg.tensor(v, requires_grad=True) for n, v in p.items()}
    xs_, ys_, h0 = [tg.tensor(x) for x in xs], [tg.tensor(y) for y in ys], tg.tensor(_h0(p, xs))
    compiled = tg.compile(ops_train_step(cell, params, h0), exact=not fast)

    def step():
        for q in params.values():
            q.grad = None
        loss = compiled(xs_, ys_)                # backward ran inside
        return loss.item(), {n: q.grad for n, q in params.items()}
    step()                                   # the first of the two tracing calls (make_steps makes the second)
    step.params = list(params.values())
    return step


def tapegrad_nn_compiled(cell, p, xs, ys, fast=False):
    """The `tapegrad-nn` contender's step (built-in cell through unroll) under `tapegrad.compile`."""
    builtin = tapegrad_builtin(cell, p, xs, ys, compiled="fast" if fast else True)
    builtin()
    return builtin


CONTENDERS = {BASELINE: hand_numpy, CAREFUL: hand_careful, "tapegrad": tapegrad, "tapegrad-ckpt": tapegrad_checkpointed,
              "tapegrad-nn": tapegrad_builtin, "tapegrad-compiled": tapegrad_compiled,
              "tapegrad-nn-compiled": tapegrad_nn_compiled,
              "tapegrad-compiled-fast": functools.partial(tapegrad_compiled, fast=True),
              "tapegrad-nn-compiled-fast": functools.partial(tapegrad_nn_compiled, fast=True),
              "minimal-tape": minimal, "pytorch": pytorch, "autograd": hips_autograd}


def make_steps(names, cell, size, seed=0, held=None):
    """name -> step function (None where the framework is not importable), each checked against hand-numpy.
    size: a key of SIZES, or a dict with B, D, H, T. held: a dict to fill with the bytes each contender
    keeps allocated after its warm-up step (its parameters, preallocated or compiled buffers)."""
    rng = np.random.default_rng(seed)
    s = SIZES[size] if isinstance(size, str) else size
    p = handwritten.init_params(cell, s["D"], s["H"], s["D"], rng)      # output size O = D
    xs, ys = handwritten.make_data(s["B"], s["D"], s["D"], s["T"], rng)
    ref_loss, ref = handwritten.STEPS[cell](p, xs, ys)
    steps = {}
    for name in names:
        if held is not None:
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
        try:
            steps[name] = CONTENDERS[name](cell, p, xs, ys)
        except ImportError as e:
            steps[name] = None
            if held is not None:
                tracemalloc.stop()
            if name not in _SKIPPED:
                _SKIPPED.add(name)
                print(f"({name}: n/a, {e})", file=sys.stderr)
            continue
        loss, grads = steps[name]()                                     # also the warm-up step
        grads = named_grads(grads)
        assert np.isclose(loss, ref_loss, rtol=1e-4), f"{name} {size} {cell}: loss {loss} != {ref_loss}"
        for n, g in ref.items():
            np.testing.assert_allclose(np.asarray(grads[n]), g, rtol=1e-3, atol=1e-3 * np.abs(g).max(),
                                       err_msg=f"{name} {size} {cell}: d{n} differs from hand-numpy")
        del grads
        if held is not None:
            held[name] = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
    return steps


def named_grads(grads):
    """A step's gradients by hand-written name: a dict, or a function giving one (so that a contender
    whose gradients need renaming does not pay for it inside the timed step)."""
    return grads() if callable(grads) else grads


def time_steps(steps, rounds, repeat):
    """Interleaved rounds; per round the median of `repeat` steps; the min over rounds, in ms."""
    live = [n for n, f in steps.items() if f is not None]
    best = dict.fromkeys(live, float("inf"))
    for r in range(rounds):
        for name in live[r % len(live):] + live[:r % len(live)]:
            gc.collect()
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                steps[name]()
                times.append(time.perf_counter() - t0)
            best[name] = min(best[name], statistics.median(times))
    return {n: best[n] * 1e3 if n in best else None for n in steps}


def peak_memory(step):
    """tracemalloc peak (bytes) of one step, above what was allocated before it."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - before


def print_header(title, unit, names):
    print(title)
    print(f"ratios: to {CAREFUL} (the 'base' column names the baseline of each row)")
    cols = ["size", "cell"] + [f"{n} {unit}" for n in names] + ["base"] + \
        [f"{n}/base" for n in names if n != _base_name({CAREFUL: 1})]
    print("  ".join(f"{c:>14}" for c in cols))


def _base_name(v):
    return CAREFUL if v.get(CAREFUL) is not None else BASELINE


def print_row(size, cell, v, names):
    """v: name -> value or None; prints each contender's value, then its ratio to the baseline."""
    base = _base_name(v)
    vals = [f"{v[n]:.3f}" if v.get(n) is not None else "n/a" for n in names]
    ratios = [f"{v[n] / v[base]:.2f}" if v.get(n) is not None else "n/a" for n in names if n != CAREFUL]
    print("  ".join(f"{c:>14}" for c in [size, cell] + vals + [base] + ratios), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="tiny,small", help=f"comma list of {', '.join(SIZES)}")
    ap.add_argument("--cells", default=",".join(CELLS), help=f"comma list of {', '.join(CELLS)}")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--contenders", default=",".join(CONTENDERS), help="comma list (hand-numpy is always run)")
    ap.add_argument("--memory", metavar="SIZE", choices=SIZES, help="report peak memory of one step at SIZE instead")
    args = ap.parse_args(argv)
    names = [BASELINE] + [n for n in args.contenders.split(",") if n and n != BASELINE]
    names = [n for n in names if n != CAREFUL]
    names.insert(1, CAREFUL)
    print(f"numpy {np.__version__}, python {sys.version.split()[0]}, single thread")
    if args.memory:
        print_header("memory of one step: what the contender keeps allocated between steps (parameters, "
                     "preallocated or compiled buffers) + the step's tracemalloc peak above it; n/a for pytorch, "
                     "whose allocator tracemalloc cannot see", "MiB", names)
        for cell in CELLS:
            held = {}
            steps = make_steps(names, cell, args.memory, held=held)
            print_row(args.memory, cell, {n: (held[n] + peak_memory(f)) / 2**20 if f and n not in UNTRACED
                                          else None for n, f in steps.items()}, names)
        return
    print_header(f"one BPTT step, min over {args.rounds} rounds of the median of {args.repeat}", "ms", names)
    for size in args.sizes.split(","):
        for cell in args.cells.split(","):
            print_row(size, cell, time_steps(make_steps(names, cell, size), args.rounds, args.repeat), names)

if __name__ == "__main__":
    main()
