"""The BPTT-intro seed's tiny RNN with a `step` method: streamed online, trained by BPTT (seed 001).

Model (the seed's Python class, column vectors): state h (H, B); `step(x)` does
h = tanh(W_hh h + W_xh x) and returns y = W_hy h. No biases, as in the seed. H = 16, one input,
one output; W_xh, W_hy ~ N(0, 1/fan_in), W_hh orthogonal times 0.9.

Task: echo with a delay of 2, y_t = x_{t-2} (0 for t < 2), x_t uniform on [-1, 1] i.i.d. The
baseline predicts 0 (MSE = Var x = 1/3).

Training: BPTT over windows of T = 20 steps, batch 32, h = 0 at each window's start;
loss = sum_t 0.5 sum_b (y_t - target_t)^2 / B; Adam (lr 0.01), 400 updates.

What it shows:
1. BPTT sums per-step gradients. `tapegrad.grad(loss, params, on_edge=...)` reports every
   contribution a weight gets from its use at step t; their sum equals the tape's total
   gradient, and each equals the hand-derived per-step gradient of
   `tapegrad.reference.elman_bptt(per_step=True)` (float64; the printed table has the norms).
2. Online use: after training, a test stream of 1,000 values is fed one value at a time with
   `step` (the state carried between calls, no tape: `no_grad`); its outputs equal the unrolled
   batch forward of the whole stream, and after `reset()` the model repeats itself exactly.
   The streamed test MSE is compared with the baseline.
"""
import numpy as np
from common import example_parser, finish, out_dir, plot_lines, write_csv
from tutorial_shared import parse, training_steps

import tapegrad as tg
from tapegrad.nn import Module, Parameter, init
from tapegrad.optim import Adam
from tapegrad.reference import elman_bptt

DELAY = 2


class RNN(Module):
    """The seed's class: `step(x)` updates the state h and returns the output y."""

    def __init__(self, input_size, hidden_size, output_size, rng):
        super().__init__()
        self.W_hh = Parameter(init.orthogonal((hidden_size, hidden_size), rng, gain=0.9, dtype=np.float64))
        self.W_xh = Parameter(rng.standard_normal((hidden_size, input_size)) / np.sqrt(input_size))
        self.W_hy = Parameter(rng.standard_normal((output_size, hidden_size)) / np.sqrt(hidden_size))
        self.h = None

    def reset(self, batch=1):
        """Forget: h = 0 for `batch` parallel streams."""
        self.h = np.zeros((self.W_hh.shape[0], batch))

    def step(self, x):
        """x (input_size, B) -> y (output_size, B); updates the state."""
        self.h = tg.tanh(self.W_hh @ self.h + self.W_xh @ x)
        return self.W_hy @ self.h

    def forward(self, xs):
        """Run a whole sequence from h = 0: xs (T, input_size, B) -> ys (T, output_size, B), one scope per step."""
        self.reset(xs.shape[-1])
        ys = []
        for t in range(len(xs)):
            with tg.scope(t=t):
                ys.append(self.step(xs[t]))
        return tg.stack(ys)


def echo_data(rng, T, batch):
    """x (T, 1, B) uniform on [-1, 1]; target y_t = x_{t-DELAY}."""
    xs = rng.uniform(-1, 1, size=(T, 1, batch))
    ys = np.zeros_like(xs)
    ys[DELAY:] = xs[:-DELAY]
    return xs, ys


def bptt_loss(model, xs, ys):
    """sum_t 0.5 sum_b (y_t - target_t)^2 / B (the reference's loss)."""
    return tg.mse_loss(model(xs), ys, reduction="sum") * (0.5 / xs.shape[-1])


def per_step_gradients(model, xs, ys):
    """Per-step contributions to each weight's gradient, from the tape (on_edge) and by hand.

    Returns (table rows, max |sum of per-step - tape total|, max |tape per-step - hand per-step|).
    """
    names = ("W_hh", "W_xh", "W_hy")
    params = [getattr(model, n) for n in names]
    T = len(xs)
    steps = {n: np.zeros((T,) + p.shape) for n, p in zip(names, params)}
    owner = {id(p): n for n, p in zip(names, params)}

    def on_edge(record, i, parent, grad):
        if id(parent) in owner:
            steps[owner[id(parent)]][record.scope.step] += grad

    totals = dict(zip(names, tg.grad(bptt_loss(model, xs, ys), params, on_edge=on_edge)))
    # The reference's row-vector layout: h_t = tanh(x_t U + h_{t-1} W + b), yhat_t = h_t V + c.
    H = model.W_hh.shape[0]
    ref_params = {"U": model.W_xh.data.T, "W": model.W_hh.data.T, "b": np.zeros(H), "V": model.W_hy.data.T,
                  "c": np.zeros(1)}
    _, _, _, ref = elman_bptt(xs.transpose(0, 2, 1), ys.transpose(0, 2, 1), np.zeros((xs.shape[-1], H)),
                              ref_params, per_step=True)
    ref_names = {"W_hh": "W", "W_xh": "U", "W_hy": "V"}
    sum_diff = max(float(np.abs(steps[n].sum(0) - totals[n].data).max()) for n in names)
    hand_diff = max(float(np.abs(steps[n][t] - ref["dW_steps"][ref_names[n]][t].T).max())
                    for n in names for t in range(T))
    rows = [[t] + [float(np.linalg.norm(steps[n][t])) for n in names] for t in range(T)]
    print("per-step contributions to the gradient (Frobenius norms), from tapegrad.grad(on_edge=...):")
    print("   t   |dW_hh|_t   |dW_xh|_t   |dW_hy|_t")
    for t, *norms in rows:
        print(f"  {t:2d}" + "".join(f"  {v:10.3e}" for v in norms))
    print(" sum" + "".join(f"  {np.linalg.norm(steps[n].sum(0)):10.3e}" for n in names) + "   (sum over t)")
    print("tape" + "".join(f"  {np.linalg.norm(totals[n].data):10.3e}" for n in names) + "   (tape's total)")
    print(f"max |sum over t - tape total| = {sum_diff:.2e};  max |per-step (tape) - per-step (hand BPTT)| = "
          f"{hand_diff:.2e}")
    return rows, sum_diff, hand_diff


def stream(model, xs):
    """Feed xs (T, 1, 1) one value at a time with `step`, the state carried; outputs (T,)."""
    with tg.no_grad():
        return np.array([model.step(x).item() for x in xs])


def main(argv=None):
    parser = example_parser(__doc__, "out/stateful_step")
    parser.add_argument("--hidden", type=int, default=16, help="hidden units (default 16)")
    parser.add_argument("--steps", type=int, default=20, help="BPTT window length (default 20)")
    parser.add_argument("--batch", type=int, default=32, help="windows per update (default 32)")
    parser.add_argument("--iterations", type=int, default=400, help="Adam updates (default 400)")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    parser.add_argument("--stream", type=int, default=1000, help="length of the streamed test sequence")
    args = parse(parser, argv, quick=dict(iterations=150, stream=300))
    out = out_dir(args.out)
    rng = np.random.default_rng(args.seed)
    model = RNN(1, args.hidden, 1, rng)

    rows, sum_diff, hand_diff = per_step_gradients(model, *echo_data(rng, args.steps, args.batch))
    write_csv(out / "per_step_gradients.csv", dict(zip(["t", "norm_dW_hh", "norm_dW_xh", "norm_dW_hy"],
                                                       np.array(rows).T)))

    opt = Adam(model.parameters(), lr=args.lr)
    losses = []
    for _ in training_steps(args.iterations, "iteration", losses):
        opt.zero_grad()
        loss = bptt_loss(model, *echo_data(rng, args.steps, args.batch))
        loss.backward()
        opt.step()
        losses.append(loss.item() / args.steps)

    xs, ys = echo_data(np.random.default_rng(args.seed + 1), args.stream, 1)
    model.reset()
    online = stream(model, xs)
    with tg.no_grad():
        unrolled = model(xs).data.ravel()
    model.reset()
    again = stream(model, xs[:50])
    stream_diff = float(np.abs(online - unrolled).max())
    reset_diff = float(np.abs(again - online[:50]).max())
    test_mse = float(np.mean((online - ys.ravel()) ** 2))
    base_mse = float(np.mean(ys.ravel() ** 2))
    print(f"streamed one value at a time vs unrolled batch forward: max |diff| = {stream_diff:.1e}; "
          f"after reset() the first 50 outputs repeat (max |diff| = {reset_diff:.1e})")
    print(f"test MSE (streamed, {args.stream} steps) {test_mse:.4f} vs predict-0 baseline {base_mse:.4f}")

    write_csv(out / "loss.csv", {"iteration": np.arange(1, len(losses) + 1), "loss_per_step": losses})
    write_csv(out / "stream.csv", {"x": xs.ravel(), "target": ys.ravel(), "streamed": online, "unrolled": unrolled})
    plot_lines(out / "loss.png", {"BPTT loss per step": losses}, title="echo (delay 2)", xlabel="iteration",
               logy=True)
    plot_lines(out / "stream.png", {"target x[t-2]": ys.ravel()[:60], "streamed output": online[:60]},
               title="online inference, one value at a time", xlabel="t")
    results = {"per_step_sum_vs_tape": sum_diff, "per_step_vs_hand_bptt": hand_diff, "stream_vs_unrolled": stream_diff,
               "reset_repeat": reset_diff, "test_mse": test_mse, "baseline_mse": base_mse,
               "iterations": args.iterations}
    return finish(args, results, [
        (sum_diff <= 1e-12, f"per-step gradients sum to the tape's total only within {sum_diff:.1e}"),
        (hand_diff <= 1e-12, f"per-step gradients differ from the hand-derived ones by {hand_diff:.1e}"),
        (stream_diff <= 1e-12 and reset_diff == 0, "streaming does not reproduce the unrolled forward"),
        (test_mse < 0.1 * base_mse, f"test MSE {test_mse:.4f} is not 10x below the baseline {base_mse:.4f}"),
    ])


if __name__ == "__main__":
    main()
