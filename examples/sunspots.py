"""Sunspots: the lecture's time-delay network against recurrent nets trained four ways.

Task (the lecture's). Predict the yearly mean sunspot number x(t) of year t from earlier years only
(one step ahead). Data: the yearly series 1700-2008 bundled with the optional statsmodels package, or
`--csv FILE` with columns year,value (a header row is skipped).

Split and scaling (the lecture states none; this is the classic benchmark split of Weigend, Huberman and
Rumelhart, 1990): the training targets are the years up to 1920, the test periods 1921-1955 and
1956-1979. Every model trains for a fixed number of epochs (no early stopping). Values are standardised
with the mean and standard deviation of the years up to 1920. NMSE = mean squared error / variance of the
targets of the same period (1 = predicting that period's mean).

Models, each with one linear output:
  persistence  x(t) predicted as x(t-1); the baseline every model must beat.
  tdnn         the lecture's time-delay MLP: x(t-1), x(t-2), x(t-3), x(t-6), x(t-12) -> 4 tanh -> 1
               (29 weights), trained on all training patterns (targets from 1712) at once with Adam.
  elman        RNNCell(1, 5) -> 1 (41 weights) reading x(t-1) at step t: the state is a detached copy of
               h(t-1) (truncate = 1) and the weights are updated after every year, in order (the lecture's
               online procedure; a pass over the training years is one epoch).
  bptt         the same RNN, the gradient through all training years, one update per epoch.
  tbptt        the same RNN, truncated BPTT: chunks of --chunk years, the state preserved (detached)
               between chunks, one update per chunk.
  lstm         LSTMCell(1, 5) -> 1 (146 weights), trained as tbptt.
The recurrent nets are evaluated by running them over the whole record from 1700 with a zero initial
state; the TDNN on every year with its 12 earlier years known.
"""
import csv
import importlib.util
import pathlib

import numpy as np
from common import example_parser, finish, out_dir, plot_lines, progress, write_csv
from lecture_shared import RecurrentHead, chunk_step, stateful_epoch

import tapegrad as tg
from tapegrad import nn
from tapegrad.optim import SGD, Adam

LAGS = (1, 2, 3, 6, 12)
TRAIN_END, TESTS = 1920, ((1921, 1955), (1956, 1979))          # the last fitting year, the test periods
RECURRENT = ("elman", "bptt", "tbptt", "lstm")


def load_series(path=None):
    """(years, values) from `path` (CSV year,value) or from statsmodels' bundled sunspots.csv."""
    if path is None:
        spec = importlib.util.find_spec("statsmodels")
        if spec is None:
            raise SystemExit("sunspots: no data. Install the optional statsmodels package (its bundled yearly "
                             "sunspot numbers are used) or pass --csv FILE with columns year,value.")
        path = pathlib.Path(spec.origin).parent / "datasets" / "sunspots" / "sunspots.csv"
    rows = []
    with open(path, newline="") as f:
        for row in csv.reader(f):
            try:
                rows.append((float(row[0]), float(row[1])))
            except (ValueError, IndexError):
                if rows:
                    raise ValueError(f"{path}: bad row {row!r} (expected year,value)") from None
    years, values = np.array(rows).T
    return years.astype(int), values


def nmse(pred, target):
    return float(np.mean((pred - target) ** 2) / np.var(target))


def delay_patterns(x, targets):
    """TDNN inputs (len(targets), 5): the lagged values x(t - lag) for each target index t."""
    return np.stack([x[targets - lag] for lag in LAGS], axis=1)


class TDNN(nn.Module):
    """The lecture's MLP: 5 delayed inputs -> 4 tanh units -> 1 linear output."""

    def __init__(self, rng):
        super().__init__()
        self.hidden = nn.Linear(len(LAGS), 4, rng=rng)
        self.out = nn.Linear(4, 1, rng=rng)

    def forward(self, x):
        return self.out(tg.tanh(self.hidden(x)))


def tdnn_predictions(model, x):
    """Entry t predicts x(t) from its delayed values (NaN for the first max(LAGS) years)."""
    with tg.no_grad():
        y = model(delay_patterns(x, np.arange(max(LAGS), len(x)))).data.ravel()
    return np.r_[np.full(max(LAGS), np.nan), y]


def train_tdnn(x, train_idx, args, rng):
    """The TDNN trained on all patterns with targets train_idx at once; returns (model, losses)."""
    model = TDNN(rng)
    inputs, targets = delay_patterns(x, train_idx), x[train_idx, None]
    opt = Adam(model.parameters(), lr=args.lr)
    losses = []
    for _ in progress(range(args.tdnn_epochs), "tdnn epochs", every=max(1, args.tdnn_epochs // 5)):
        opt.zero_grad()
        loss = tg.mse_loss(model(inputs), targets)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses


def train_recurrent(kind, x, n_train, args, rng):
    """Train one recurrent model on the stream x[0 .. n_train] (input x(t-1), target x(t)); returns (model, losses)."""
    cell = nn.LSTMCell(1, 5, rng=rng) if kind == "lstm" else nn.RNNCell(1, 5, rng=rng)
    model = RecurrentHead([cell], 1, rng=rng)
    inputs, targets = x[None, :n_train, None], x[None, 1:n_train + 1, None]
    chunk = {"elman": 1, "bptt": n_train}.get(kind, args.chunk)
    if kind == "elman":
        opt, epochs = SGD(model.parameters(), lr=args.elman_lr), args.elman_epochs
    else:
        opt, epochs = Adam(model.parameters(), lr=args.lr), args.epochs
    step = chunk_step(model, tg.mse_loss)
    losses = [stateful_epoch(step, inputs, targets, chunk, opt)
              for _ in progress(range(epochs), f"{kind} epochs", every=max(1, epochs // 5))]
    return model, losses


def recurrent_predictions(model, x):
    """One-step predictions over the whole record: entry t predicts x(t) from x(0 .. t-1) (entry 0 is NaN)."""
    with tg.no_grad():
        y, _ = model(x[None, :-1, None])
    return np.r_[np.nan, y.data.ravel()]


def main(argv=None):
    parser = example_parser(__doc__, "out/sunspots")
    parser.add_argument("--csv", help="CSV file of year,value rows (default: statsmodels' bundled series)")
    parser.add_argument("--tdnn-epochs", type=int, default=1500, help="full-batch epochs of the TDNN (default 1500)")
    parser.add_argument("--epochs", type=int, default=1500, help="epochs of bptt, tbptt and lstm (default 1500)")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    parser.add_argument("--elman-epochs", type=int, default=200, help="online passes of the Elman net (default 200)")
    parser.add_argument("--elman-lr", type=float, default=0.01, help="Elman SGD learning rate (default 0.01)")
    parser.add_argument("--chunk", type=int, default=20, help="years per truncated-BPTT chunk (default 20)")
    args = parser.parse_args(argv)
    if args.quick:
        args.tdnn_epochs, args.epochs, args.elman_epochs = 1000, 60, 6
    out = out_dir(args.out)
    rng = np.random.default_rng(args.seed)

    years, raw = load_series(args.csv)
    n_train = int(np.searchsorted(years, TRAIN_END, side="right")) - 1     # index of the last training target
    mean, std = raw[:n_train + 1].mean(), raw[:n_train + 1].std()
    x = ((raw - mean) / std).astype(np.float32)
    periods = {"train": (years[max(LAGS)], TRAIN_END), **{f"{a}-{b}": (a, b) for a, b in TESTS}}
    masks = {name: (years >= a) & (years <= b) for name, (a, b) in periods.items()}
    print(f"{len(years)} years {years[0]}-{years[-1]}; training targets up to {TRAIN_END}, test "
          + ", ".join(f"{a}-{b}" for a, b in TESTS))

    preds, curves, weights = {"persistence": np.r_[np.nan, x[:-1]]}, {}, {"persistence": 0}
    model, curves["tdnn"] = train_tdnn(x, np.arange(max(LAGS), n_train + 1), args, rng)
    preds["tdnn"], weights["tdnn"] = tdnn_predictions(model, x), model.num_parameters()
    for kind in RECURRENT:
        model, curves[kind] = train_recurrent(kind, x, n_train, args, rng)
        preds[kind], weights[kind] = recurrent_predictions(model, x), model.num_parameters()

    table = {name: {"weights": weights[name], **{k: nmse(p[m], x[m]) for k, m in masks.items()}}
             for name, p in preds.items()}
    print(f"{'model':12s} {'weights':>7s} " + " ".join(f"{k:>10s}" for k in periods) + "  (NMSE)")
    for name, row in table.items():
        print(f"{name:12s} {row['weights']:7d} " + " ".join(f"{row[k]:10.4f}" for k in periods))

    predictions = {name: p * std + mean for name, p in preds.items()}
    write_csv(out / "predictions.csv", {"year": years, "sunspots": raw, **predictions})
    write_csv(out / "nmse.csv", {"model": list(table), **{k: [r[k] for r in table.values()] for k in table["tdnn"]}})
    test_from = int(np.searchsorted(years, TESTS[0][0])) - 20
    shown = {"sunspots": raw, **{k: v for k, v in predictions.items() if k != "persistence"}}
    plot_lines(out / "predictions.png", {k: v[test_from:] for k, v in shown.items()},
               title=f"one-step predictions (test from {TESTS[0][0]})", xlabel=f"years since {years[test_from]}")
    plot_lines(out / "loss.png", curves, title="training loss (standardised MSE)", xlabel="epoch", logy=True)

    first = f"{TESTS[0][0]}-{TESTS[0][1]}"
    base = table["persistence"][first]
    results = {"nmse": table, "years": len(years), "tdnn_epochs": args.tdnn_epochs,
               "epochs": args.epochs, "elman_epochs": args.elman_epochs, "chunk": args.chunk}
    checks = [(row[first] < base, f"{name}: NMSE {first} {row[first]:.3f} does not beat persistence {base:.3f}")
              for name, row in table.items() if name != "persistence"]
    return finish(args, results, checks)


if __name__ == "__main__":
    main()
