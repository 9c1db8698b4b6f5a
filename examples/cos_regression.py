"""Predict the next value of cos(x) with an Elman RNN (seed 003: min-char-rnn adapted to regression).

Task (the seed's). Data: x = linspace(0, 100, 10000) (resolution 0.01) and y_true = cos(x) +
N(0, 0.05^2) noise (written to training_data.csv and plotted, as the seed shows it). A training
example is the seed's `next_batch(steps)`: a random start x0 in [0, 100 - (steps+1)*0.01), the
steps + 1 values cos(x0 + 0.01 k) (the seed evaluates the smooth cos here; its noisy y_true is only
plotted), input = the first `steps` values, target = the last `steps` (each input's next value).

Model (the seed's, column vectors, float64): h_t = tanh(Wxh x_t + Whh h_{t-1} + bh),
y_t = Why h_t + by, hidden 100, input and output 1, weights N(0, 0.01^2), biases 0, h_{-1} = 0 for
every window (windows are independent random positions). Loss = sum_t (y_t - target_t)^2 / (2T).
Gradients come from the tape; Adagrad (lr 0.001, eps 1e-8 inside the root, as min-char-rnn),
every gradient clipped to [-5, 5]; 100,000 updates of one window of 50 steps (the seed's
training_steps and step_size).

Check: on the first batch the tape's gradients are compared with the seed's hand-written
`lossFun` BPTT (`tapegrad.reference.elman_loss_fun`). That one returns the exact gradient of the
loss; the seed's own lossFun omits the 1/(2T) factor's derivative 1/T (its gradients are T times
these), which Adagrad's per-parameter normalisation almost cancels.

Result: the test MSE of the predictions on 200 smooth cos windows of `steps` values at random
positions (a held-out random stream), beside the last-value baseline (predict y_{t+1} = y_t), over
all steps and over steps >= 5 (the first predictions of a window start from h = 0 and see only a
value or two; test_mse_per_step.csv has every step); the prediction on one test window is plotted.

--quick: 1,500 updates of 25-step windows at lr 0.01 on a 1,000-point grid (resolution 0.1). At
the seed's resolution 0.01 consecutive values differ by at most 0.01, so the last-value baseline
has MSE 5e-5, which even the seed's full 100,000 updates do not reach (docs/results/tutorial.md).
"""
import numpy as np
from common import example_parser, finish, out_dir, plot_lines, write_csv
from tutorial_shared import parse, training_steps

import tapegrad as tg
from tapegrad.nn import Module, Parameter
from tapegrad.optim import Adagrad, clip_grad_value
from tapegrad.reference import elman_loss_fun

WARMUP = 5      # the first steps of a window, predicted from h = 0 and few values, also reported apart


class CosData:
    """The seed's `data` class: noisy cos on a grid, and random smooth windows of steps + 1 points."""

    def __init__(self, x_min, x_max, num_points, rng, noise=0.05):
        self.xmin, self.xmax, self.rng = x_min, x_max, rng
        self.resolution = (x_max - x_min) / num_points
        self.x_data = np.linspace(x_min, x_max, num_points)
        self.y_true = np.cos(self.x_data) + rng.normal(size=self.x_data.shape) * noise

    def next_batch(self, steps):
        """(inputs, targets, x) of one window: cos at steps + 1 points from a random start."""
        start = self.rng.random() * (self.xmax - self.xmin - (steps + 1) * self.resolution)
        x = start + np.arange(steps + 1) * self.resolution
        y = np.cos(x)
        return y[:-1], y[1:], x


class ElmanRegressor(Module):
    """The seed's parameters and step, in its column-vector layout: Wxh (H, 1), Whh (H, H), Why (1, H), bh, by."""

    def __init__(self, hidden_size, rng):
        super().__init__()
        self.Wxh = Parameter(rng.standard_normal((hidden_size, 1)) * 0.01)
        self.Whh = Parameter(rng.standard_normal((hidden_size, hidden_size)) * 0.01)
        self.Why = Parameter(rng.standard_normal((1, hidden_size)) * 0.01)
        self.bh = Parameter(np.zeros((hidden_size, 1)))
        self.by = Parameter(np.zeros((1, 1)))

    def forward(self, inputs):
        """inputs (T,) -> predictions (T,), from h_{-1} = 0."""
        h = np.zeros((self.Whh.shape[0], 1))
        ys = []
        for t, x in enumerate(inputs):
            with tg.scope(t=t):
                h = tg.tanh(self.Wxh * x + self.Whh @ h + self.bh)
                ys.append(self.Why @ h + self.by)
        return tg.concat(ys, axis=0).reshape(-1)


def seed_loss(pred, targets):
    """sum_t (y_t - target_t)^2 / (2T)."""
    return tg.mse_loss(pred, targets, reduction="sum") / (2 * len(targets))


def gradient_agreement(model, inputs, targets):
    """Max over parameters of max|tape - hand| / max|hand| for one batch (no clipping on either side)."""
    loss = seed_loss(model(inputs), targets)
    names = ["Wxh", "Whh", "Why", "bh", "by"]
    tape = dict(zip(names, tg.grad(loss, [getattr(model, n) for n in names])))
    ref_loss, ref, _ = elman_loss_fun(inputs, targets, np.zeros((model.Whh.shape[0], 1)),
                                      *(getattr(model, n).data for n in names))
    rel = {n: float(np.abs(tape[n].data - ref[n]).max() / np.abs(ref[n]).max()) for n in names}
    print(f"first batch: tape loss {loss.item():.12g}, hand-written lossFun loss {ref_loss:.12g}")
    print("max |tape - lossFun| / max |lossFun| per gradient: "
          + ", ".join(f"d{n} {r:.2e}" for n, r in rel.items()))
    return max(rel.values())


def main(argv=None):
    parser = example_parser(__doc__, "out/cos_regression")
    parser.add_argument("--iterations", type=int, default=100_000, help="Adagrad updates (seed: 100000)")
    parser.add_argument("--steps", type=int, default=50, help="time steps per window (seed: 50)")
    parser.add_argument("--points", type=int, default=10_000, help="grid points on [0, 100] (seed: 10000)")
    parser.add_argument("--hidden", type=int, default=100, help="hidden units (seed: 100)")
    parser.add_argument("--lr", type=float, default=0.001, help="Adagrad learning rate (seed: 0.001)")
    parser.add_argument("--test-windows", type=int, default=200, help="smooth cos windows for the test MSE")
    args = parse(parser, argv, quick=dict(iterations=1500, steps=25, lr=0.01, points=1000))
    out = out_dir(args.out)
    rng = np.random.default_rng(args.seed)
    data = CosData(0, 100, args.points, rng)
    model = ElmanRegressor(args.hidden, rng)

    inputs, targets, _ = data.next_batch(args.steps)
    max_rel = gradient_agreement(model, inputs, targets)

    opt = Adagrad(model.parameters(), lr=args.lr)
    losses = []
    for _ in training_steps(args.iterations, "iteration", losses):
        inputs, targets, _ = data.next_batch(args.steps)
        opt.zero_grad()
        loss = seed_loss(model(inputs), targets)
        loss.backward()
        clip_grad_value(model.parameters(), 5.0)
        opt.step()
        losses.append(loss.item())

    test = CosData(0, 100, args.points, np.random.default_rng(args.seed + 1))
    sq_err, sq_base = [], []
    with tg.no_grad():
        for k in range(args.test_windows):
            inputs, targets, x = test.next_batch(args.steps)
            pred = model(inputs).data
            sq_err.append((pred - targets) ** 2)
            sq_base.append((inputs - targets) ** 2)
            if k == 0:
                write_csv(out / "test_window.csv", {"x": x[1:], "target": targets, "prediction": pred})
                plot_lines(out / "test_window.png", {"cos (target)": targets, "RNN prediction": pred},
                           title="next-value prediction on a smooth cos window", xlabel="step")
    per_step, per_step_base = np.mean(sq_err, axis=0), np.mean(sq_base, axis=0)
    test_mse, base_mse = float(per_step.mean()), float(per_step_base.mean())
    warm_mse, warm_base = float(per_step[WARMUP:].mean()), float(per_step_base[WARMUP:].mean())
    write_csv(out / "test_mse_per_step.csv", {"step": np.arange(args.steps), "rnn": per_step,
                                              "last_value": per_step_base})

    window = max(1, len(losses) // 1000)
    curve = np.convolve(losses, np.ones(window) / window, mode="valid")[::window]
    write_csv(out / "loss.csv", {"iteration": np.arange(len(curve)) * window + window, "loss": curve})
    write_csv(out / "training_data.csv", {"x": data.x_data, "y_true": data.y_true})
    plot_lines(out / "loss.png", {f"training loss (mean of {window})": curve}, title="cos regression",
               xlabel=f"iteration / {window}", logy=True)
    plot_lines(out / "training_data.png", {"cos(x) + noise": data.y_true}, title="training data", xlabel="index")

    print(f"test MSE {test_mse:.3e} vs last-value baseline {base_mse:.3e} ({args.test_windows} windows); "
          f"steps >= {WARMUP} only: {warm_mse:.3e} vs {warm_base:.3e}")
    results = {"grad_max_rel_diff": max_rel, "test_mse": test_mse, "baseline_mse": base_mse,
               "test_mse_after_warmup": warm_mse, "baseline_mse_after_warmup": warm_base,
               "final_train_loss": float(np.mean(losses[-max(1, len(losses) // 20):])),
               "iterations": args.iterations, "steps": args.steps, "hidden": args.hidden, "lr": args.lr}
    return finish(args, results, [
        (max_rel <= 1e-9, f"tape and hand-written gradients differ by {max_rel:.2e} > 1e-9"),
        (test_mse < base_mse, f"test MSE {test_mse:.3e} does not beat the last-value baseline {base_mse:.3e}"),
    ])


if __name__ == "__main__":
    main()
