"""Predict a time series with a GRU network, one value in and one out per step (ANNT seed: "Times series prediction").

Task (the seed's). A series of N values; the last `--predict` values are held out. The remaining ones are cut
into every overlapping training sequence of `--sequence` steps: sequence i has inputs v[i .. i+S-1] and targets
v[i+1 .. i+S] (the next value at each step), i = 0 .. N - P - S - 1. The seed's worked table: values
0 1 4 9 16 25 16 9 4 1, P = 2, S = 4 give the four sequences
0->1->4->9->16, 1->4->9->16->25, 4->9->16->25->16, 9->16->25->16->9.
All sequences form one batch; each starts from a zero state.

Model (the seed's): GRU layers (--hidden 30, or e.g. --hidden 20 10 for two) each followed by tanh ->
Linear 1; MSE; SGD with Nesterov momentum 0.9, lr 0.05, 1000 epochs (one update per epoch). Values are
standardised by the training part's mean and standard deviation (our addition; the seed feeds them raw) and
mapped back for output.

Result (the seed's CSV, `prediction.csv`: original, training fit, prediction): the network is reset and fed
the training values one by one, each output being its fit of the next value; then, without a reset, it is
fed the last training value and predicts the held-out values recursively, each prediction becoming the next
input. Reported: the RMSE on the held-out values beside a naive baseline that repeats the last training
value. Data: 200 values of a built-in noisy sum of two sines (the seed's own series are not bundled), or
`--csv FILE --column NAME_OR_INDEX`. --quick: 300 epochs. Also written: prediction.png, loss.csv, graph.svg
(the tape of the last epoch, rolled; needs Graphviz), results.json.
"""
import csv

import numpy as np
from annt_shared import RecurrentNet, save_graph
from common import example_parser, finish, out_dir, plot_lines, write_csv

import tapegrad as tg
from tapegrad import nn
from tapegrad.optim import SGD


def sine_series(n=200, noise=0.02, seed=0):
    """sin(2 pi t / 50) + 0.5 sin(2 pi t / 20 + 1) + N(0, noise^2), t = 0 .. n-1."""
    t = np.arange(n)
    noise = np.random.default_rng(seed).normal(0, noise, n)
    return np.sin(2 * np.pi * t / 50) + 0.5 * np.sin(2 * np.pi * t / 20 + 1) + noise


def read_series(path, column=0):
    """One numeric column of a CSV file (by header name or 0-based index); a header row and blanks are skipped."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    index = int(column) if str(column).isdigit() else rows[0].index(column)
    values = []
    for r in rows:
        try:
            values.append(float(r[index]))
        except ValueError:
            if r is not rows[0]:
                raise ValueError(f"{path}: non-numeric value {r[index]!r} in column {column}") from None
    return np.array(values)


def training_sequences(series, sequence, predict):
    """(inputs, targets), each (N - predict - sequence, sequence): every overlapping window of the training part."""
    count = len(series) - predict - sequence
    if count < 1:
        raise ValueError(f"{len(series)} values are too few for sequences of {sequence} with {predict} held out")
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(series)[:len(series) - predict], sequence + 1)
    return windows[:count, :-1], windows[:count, 1:]


def fit_and_predict(model, train, predict):
    """Feed the training values one by one (fit[i] predicts train[i+1]), then predict `predict` values recursively."""
    with tg.no_grad():
        fit, state = model(tg.tensor(train[:-1].reshape(1, -1, 1)))
        value, preds = train[-1], []
        for _ in range(predict):
            y, state = model(tg.tensor([[[value]]]), state)
            value = y.item()
            preds.append(value)
    return fit.data.ravel(), np.array(preds)


def main(argv=None):
    parser = example_parser(__doc__, "out/time_series")
    parser.add_argument("--csv", help="CSV file holding the series (default: the built-in noisy sines)")
    parser.add_argument("--column", default="0", help="column of --csv, a header name or 0-based index (default 0)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[30], help="GRU layer sizes (seed: 30)")
    parser.add_argument("--lr", type=float, default=0.05, help="Nesterov SGD learning rate (seed: 0.05)")
    parser.add_argument("--momentum", type=float, default=0.9, help="Nesterov momentum (default 0.9)")
    parser.add_argument("--epochs", type=int, default=1000, help="training epochs, one batch each (seed: 1000)")
    parser.add_argument("--predict", type=int, default=5, help="held-out values predicted at the end (seed: 5)")
    parser.add_argument("--sequence", type=int, default=10, help="steps per training sequence (seed: 10)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = 300
    out = out_dir(args.out)
    series = read_series(args.csv, args.column) if args.csv else sine_series(seed=args.seed)
    train = series[:-args.predict]
    mean, std = train.mean(), train.std()
    scale = lambda v: ((v - mean) / std).astype(np.float32)
    unscale = lambda v: v * std + mean

    inputs, targets = training_sequences(scale(series), args.sequence, args.predict)
    inputs, targets = tg.tensor(inputs[..., None]), targets[..., None]
    print(f"{len(series)} values, {len(inputs)} training sequences of {args.sequence} steps, "
          f"{args.predict} held out; GRU {args.hidden} -> Linear 1")
    rng = np.random.default_rng(args.seed)
    sizes = [1] + args.hidden
    model = RecurrentNet([nn.GRUCell(a, b, rng=rng) for a, b in zip(sizes, sizes[1:])], 1, tanh_after=True, rng=rng)
    opt = SGD(model.parameters(), lr=args.lr, momentum=args.momentum, nesterov=True)
    losses = []
    for epoch in range(1, args.epochs + 1):
        opt.zero_grad()
        loss = tg.mse_loss(model(inputs)[0], targets)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if epoch % 100 == 0 or epoch == args.epochs:
            print(f"epoch {epoch:4d}/{args.epochs}  MSE (standardised) {losses[-1]:.5f}")

    fit, pred = fit_and_predict(model, scale(train), args.predict)
    fit, pred = unscale(fit), unscale(pred)
    held_out = series[-args.predict:]
    rmse = float(np.sqrt(np.mean((pred - held_out) ** 2)))
    naive = float(np.sqrt(np.mean((train[-1] - held_out) ** 2)))
    fit_rmse = float(np.sqrt(np.mean((fit - train[1:]) ** 2)))
    print(f"held-out RMSE {rmse:.4f} vs naive last-value baseline {naive:.4f}; training fit RMSE {fit_rmse:.4f}")

    blank = [""] * len(series)
    fit_col, pred_col = list(blank), list(blank)
    fit_col[1:len(train)] = fit
    pred_col[len(train):] = pred
    write_csv(out / "prediction.csv", {"original": series, "training": fit_col, "prediction": pred_col})
    nan = np.full(len(series), np.nan)
    plot_lines(out / "prediction.png", {"original": series, "training fit": np.r_[nan[:1], fit, nan[:args.predict]],
                                        "prediction": np.r_[nan[:len(train)], pred]},
               title="GRU time-series prediction", xlabel="index")
    write_csv(out / "loss.csv", {"epoch": np.arange(1, args.epochs + 1), "mse_standardised": losses})
    save_graph(loss, out / "graph.svg")
    results = {"heldout_rmse": rmse, "naive_rmse": naive, "fit_rmse": fit_rmse, "final_loss": losses[-1],
               "values": len(series), "sequences": len(inputs), "epochs": args.epochs, "hidden": args.hidden}
    return finish(args, results, [(rmse < naive, f"held-out RMSE {rmse:.4f} does not beat the naive {naive:.4f}")])


if __name__ == "__main__":
    main()
