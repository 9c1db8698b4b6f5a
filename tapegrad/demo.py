"""The main demo: `python -m tapegrad.demo`.

Trains an Elman RNN written from tapegrad ops on the min-char-rnn cos-regression seed (predict the
next value of a noisy cos from the values so far), checks its BPTT gradients against finite
differences, prints a two-step tape, and draws the unrolled graph (SVG and PNG, when a Graphviz
backend is found), ending with the paths it wrote.
"""
import argparse
import os
import pathlib
import time
import warnings

import numpy as np

import tapegrad as tg
import tapegrad.viz
from tapegrad.optim import Adagrad


def cos_windows(rng, batch, steps, n_points=1000, noise=0.05):
    """Random windows of steps + 1 consecutive points of cos on [0, 100] plus Gaussian noise (the seed's data,
    sampled 10x more coarsely so that a step moves the curve visibly: dx = 0.1)."""
    x = np.linspace(0, 100, n_points)
    y = np.cos(x) + rng.normal(size=n_points) * noise
    starts = rng.integers(0, n_points - steps - 1, size=batch)
    windows = np.stack([y[s:s + steps + 1] for s in starts])[..., None]
    return windows[:, :-1], windows[:, 1:]          # inputs, next-value targets: (B, T, 1) each


def init_params(rng, hidden, dtype):
    """The Elman RNN's weights, named as they appear on the tape."""
    def p(name, *shape, scale):
        return tg.tensor(rng.standard_normal(shape) * scale, requires_grad=True, dtype=dtype, name=name)
    return {"W_xh": p("W_xh", 1, hidden, scale=1.0), "W_hh": p("W_hh", hidden, hidden, scale=1 / np.sqrt(hidden)),
            "b_h": p("b_h", hidden, scale=0.0), "W_hy": p("W_hy", hidden, 1, scale=1 / np.sqrt(hidden)),
            "b_y": p("b_y", 1, scale=0.0)}


def rnn_loss(params, xs, ys):
    """Unroll h_t = tanh(x_t W_xh + h_{t-1} W_hh + b_h), y_t = h_t W_hy + b_y; loss = sum_t squared error / 2T."""
    W_xh, W_hh, b_h, W_hy, b_y = (params[k] for k in ("W_xh", "W_hh", "b_h", "W_hy", "b_y"))
    T = xs.shape[1]
    h = np.zeros((xs.shape[0], W_hh.shape[0]), W_hh.dtype)
    loss = 0
    for t in range(T):
        with tg.scope("rnn"), tg.scope(t=t):
            h = tg.tanh(xs[:, t] @ W_xh + h @ W_hh + b_h)
            loss = loss + tg.mse_loss(h @ W_hy + b_y, ys[:, t], reduction="sum")
    return loss / (2 * T)


def train(iterations, hidden=32, steps=25, batch=32, lr=0.03, seed=0):
    rng = np.random.default_rng(seed)
    params = init_params(rng, hidden, np.float32)
    opt = Adagrad(params.values(), lr=lr)
    losses = []
    for _ in range(iterations):
        xs, ys = cos_windows(rng, batch, steps)
        loss = rnn_loss(params, xs.astype(np.float32), ys.astype(np.float32))
        opt.zero_grad()
        loss.backward()
        tg.optim.clip_grad_value(params.values(), 5.0)
        opt.step()
        losses.append(loss.item())
    return params, losses, rng


def test_mse(params, rng, steps=25, batch=256):
    """Mean squared next-value error on fresh windows, and the last-value baseline's."""
    xs, ys = cos_windows(rng, batch, steps)
    with tg.no_grad():
        model = 2 * rnn_loss(params, xs.astype(np.float32), ys.astype(np.float32)).item() / batch
    naive = float(np.mean(np.sum((xs - ys) ** 2, axis=1)) / steps)
    return model, naive


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=600, help="training iterations (default 600)")
    parser.add_argument("--out", default="tapegrad-demo", help="folder for the rendered graph")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    print("1. Training an Elman RNN (hidden 32) written from tapegrad ops on the cos-regression seed")
    params, losses, rng = train(args.iterations)
    for i in sorted({0, len(losses) // 4, len(losses) // 2, len(losses) - 1}):
        print(f"   iteration {i + 1:4d}: loss {losses[i]:.5f}")
    model, naive = test_mse(params, rng)
    print(f"   test MSE of the next value: {model:.5f} (predict-the-last-value baseline: {naive:.5f}; "
          f"noise floor: {0.05 ** 2:.5f})")

    print("2. Gradient check of BPTT through 6 steps against central finite differences (float64)")
    small = init_params(rng, 4, np.float64)
    xs, ys = cos_windows(rng, 3, 6)
    names = list(small)
    report = tg.gradcheck(lambda *ps: rnn_loss(dict(zip(names, ps)), xs, ys), [small[k] for k in names])
    print("   " + str(report).replace("\n", "\n   "))

    print("3. The tape of a two-step unroll (a Wengert list; scopes name the module and time step)")
    with tg.Tape() as tape:
        rnn_loss(small, xs[:1, :2], ys[:1, :2])
    print("   " + str(tape).replace("\n", "\n   "))

    print("4. The unrolled graph of a four-step unroll, for slides")
    with tg.Tape() as tape:
        rnn_loss(small, xs[:1, :4], ys[:1, :4])
    written = []
    for name in ("unrolled.svg", "unrolled.png"):
        try:
            written.append(tg.viz.render(tape, pathlib.Path(args.out) / name))
        except tg.TapegradError as e:
            warnings.warn(f"not rendered: {e}", RuntimeWarning, stacklevel=1)
            break
    print(f"Done in {time.perf_counter() - start:.1f} s.")
    if written:
        print("The unrolled graph:\n" + "\n".join(f"  {os.path.abspath(p)}" for p in written))
    else:
        print("No picture: no Graphviz backend was found (see the warning above); the DOT source is in "
              f"{os.path.abspath(pathlib.Path(args.out) / 'unrolled.dot')}")
    return 0


if __name__ == "__main__":
    main()
