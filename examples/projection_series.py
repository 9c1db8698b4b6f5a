"""Time-series prediction with an output projection shared by every step (TensorFlow tutorial seed 004, #8).

Task (the tutorial's; its code listing, which the seed's text omits, follows Geron, Hands-On
Machine Learning, ch. 14): the series f(t) = t sin(t) / 3 + 2 sin(5 t) on t in [0, 30] sampled
every 0.1. A training instance is 21 consecutive samples from a uniformly random start
t0 in [0, 30 - 20 * 0.1); input = the first 20, target = the last 20 (each value's next one).

Model: 20 steps, one input, a layer of 100 recurrent neurons (RNNCell, ReLU as in the listing),
and one Linear(100, 1) applied to the outputs of every step with the same weights (TensorFlow's
OutputProjectionWrapper). Loss: MSE over all 20 steps of a batch of 50; Adam, lr 0.001;
1,000 iterations (the tutorial's figure is after 1,000).

Result: the MSE on 500 held-out random instances (a separate random stream) beside the naive
baseline that predicts each next value to equal the current one; the prediction on the
tutorial's test instance (the 21 samples from t = 12.2) is written and plotted.
"""
import numpy as np
from common import example_parser, finish, out_dir, plot_lines, write_csv
from tutorial_shared import parse, training_steps

import tapegrad as tg
from tapegrad.nn import Linear, Module, RNNCell, unroll
from tapegrad.optim import Adam

T_MIN, T_MAX, RESOLUTION = 0.0, 30.0, 0.1


def time_series(t):
    return t * np.sin(t) / 3 + 2 * np.sin(t * 5)


def next_batch(rng, batch_size, n_steps):
    """(inputs, targets), each (batch, n_steps, 1) float32: windows of n_steps + 1 samples from random starts."""
    t0 = rng.random((batch_size, 1)) * (T_MAX - T_MIN - n_steps * RESOLUTION)
    ys = time_series(t0 + np.arange(n_steps + 1) * RESOLUTION).astype(np.float32)
    return ys[:, :-1, None], ys[:, 1:, None]


class ProjectedRNN(Module):
    """RNNCell(1, H) unrolled, then one Linear(H, 1) shared by all steps: (B, T, 1) -> (B, T, 1)."""

    def __init__(self, hidden_size, rng):
        super().__init__()
        self.cell = RNNCell(1, hidden_size, nonlinearity="relu", rng=rng)
        self.projection = Linear(hidden_size, 1, rng=rng)

    def forward(self, xs):
        outputs, _ = unroll(self.cell, xs)
        return self.projection(outputs)


def main(argv=None):
    parser = example_parser(__doc__, "out/projection_series")
    parser.add_argument("--iterations", type=int, default=1000, help="Adam updates (tutorial: 1000)")
    parser.add_argument("--steps", type=int, default=20, help="time steps per instance (tutorial: 20)")
    parser.add_argument("--hidden", type=int, default=100, help="recurrent neurons (tutorial: 100)")
    parser.add_argument("--batch", type=int, default=50, help="instances per batch (tutorial: 50)")
    parser.add_argument("--lr", type=float, default=0.001, help="Adam learning rate (tutorial: 0.001)")
    args = parse(parser, argv, quick=dict(iterations=250))
    out = out_dir(args.out)
    rng = np.random.default_rng(args.seed)
    model = ProjectedRNN(args.hidden, rng)
    opt = Adam(model.parameters(), lr=args.lr)

    losses = []
    for _ in training_steps(args.iterations, "iteration", losses):
        xs, ys = next_batch(rng, args.batch, args.steps)
        opt.zero_grad()
        loss = tg.mse_loss(model(xs), ys)
        loss.backward()
        opt.step()
        losses.append(loss.item())

    xs, ys = next_batch(np.random.default_rng(args.seed + 1), 500, args.steps)
    t_instance = np.linspace(12.2, 12.2 + RESOLUTION * args.steps, args.steps + 1)
    instance = time_series(t_instance).astype(np.float32)[None, :, None]
    with tg.no_grad():
        test_mse = float(tg.mse_loss(model(xs), ys).item())
        pred = model(instance[:, :-1]).data.ravel()
    base_mse = float(np.mean((xs - ys) ** 2))
    print(f"test MSE {test_mse:.4f} vs naive (next = current) baseline {base_mse:.4f} on 500 instances")

    write_csv(out / "loss.csv", {"iteration": np.arange(1, len(losses) + 1), "mse": losses})
    write_csv(out / "test_instance.csv", {"t": t_instance[1:], "target": instance[0, 1:, 0], "prediction": pred})
    plot_lines(out / "loss.png", {"training MSE": losses}, title="time series, OutputProjection", xlabel="iteration",
               logy=True)
    plot_lines(out / "test_instance.png", {"target (next value)": instance[0, 1:, 0], "prediction": pred},
               title="the tutorial's test instance (t = 12.2 ...)", xlabel="step")
    results = {"test_mse": test_mse, "baseline_mse": base_mse, "final_train_mse": float(np.mean(losses[-50:])),
               "iterations": args.iterations}
    return finish(args, results, [
        (test_mse < 0.5 * base_mse, f"test MSE {test_mse:.4f} is not half the naive baseline {base_mse:.4f}"),
    ])


if __name__ == "__main__":
    main()
