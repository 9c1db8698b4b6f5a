"""Pulse converter: the lecture's recurrent nets (RNN 5, LSTM 5, RNN 10, LSTM 5-3, GRU 5-3, and LSTM 25 on the
inverse problem), each with one linear output, their trainable weights counted and their test errors compared.

Task (the lecture shows only pictures, so the details are ours). Sequences of T = --length steps, zero except
for pulses separated by gaps of 3 to 9 zero steps (the first starts within 10 steps). Pulse widths are
w = 8, 16, 24 or 32 steps (= --max-width * k / 4, k = 1 .. 4, equally likely), and a width is coded as the
height w / --max-width.
  converter (width -> height): the input is a unit-height pulse of width w; the target is zero except on
            the step right after the pulse ends, where it is w / 32. The net has to measure each width.
  inverse   (height -> width): the input is a one-step pulse of height w / 32; the target is a unit pulse
            of width w starting at the same step. The net has to hold the height and count it down, which
            is harder (the lecture: "the inverse problem is more difficult", solved with LSTM 25).
Every training step draws a fresh batch of --batch sequences; the test error is the NMSE (mean squared
error / variance of the target) on --test held-out sequences: 1 is what predicting the mean scores.

Networks (the lecture's, plus LSTM 5 on the inverse problem to measure how much harder it is): recurrent
layers of the given sizes (`RNNCell`, tanh; `LSTMCell`; `GRUCell` with the lecture's reset-before-matmul
formula), a single input and one linear output on every step, so the weight counts are the lecture's 41,
146, 131, 252, 190 and 2726. Each is trained for --steps Adam updates with full BPTT through the T steps.
--quick trains RNN 5 and LSTM 5 only, on a smaller version of the converter (widths up to 16, T = 60).
"""
import numpy as np
from common import example_parser, finish, out_dir, plot_lines, progress, write_csv
from lecture_shared import RecurrentHead

import tapegrad as tg
from tapegrad import nn
from tapegrad.optim import Adam

CELLS = {"RNN": nn.RNNCell, "LSTM": nn.LSTMCell, "GRU": nn.GRUCell}
# name: (task, cell, layer sizes, the lecture's trainable weights and test error; None: not in the lecture)
NETWORKS = {
    "RNN 5": ("converter", "RNN", (5,), 41, 0.47),
    "LSTM 5": ("converter", "LSTM", (5,), 146, 0.08),
    "RNN 10": ("converter", "RNN", (10,), 131, 0.27),
    "LSTM 5-3": ("converter", "LSTM", (5, 3), 252, 0.04),
    "GRU 5-3": ("converter", "GRU", (5, 3), 190, 0.03),
    "LSTM 25 (inverse)": ("inverse", "LSTM", (25,), 2726, 0.07),
    "LSTM 5 (inverse)": ("inverse", "LSTM", (5,), None, None),     # ours: how much harder the inverse is
}


def pulses(rng, batch, length, max_width, task):
    """(inputs, targets), each (batch, length, 1) float32, for task "converter" or "inverse" (see the docstring)."""
    wide, coded = np.zeros((2, batch, length), np.float32)
    for b in range(batch):
        t = rng.integers(0, 10)
        while t < length:
            w = max_width // 4 * rng.integers(1, 5)
            wide[b, t:t + w] = 1
            at = t + w if task == "converter" else t          # where the height-coded pulse goes
            if at < length:
                coded[b, at] = w / max_width
            t += w + rng.integers(3, 10)
    inputs, targets = (wide, coded) if task == "converter" else (coded, wide)
    return inputs[..., None], targets[..., None]


def build(kind, sizes, rng):
    ins = (1,) + sizes
    return RecurrentHead([CELLS[kind](i, h, rng=rng) for i, h in zip(ins, sizes)], 1, rng=rng)


def nmse(pred, target):
    return float(np.mean((pred - target) ** 2) / np.var(target))


def main(argv=None):
    parser = example_parser(__doc__, "out/pulse_converter")
    parser.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS), metavar="NAME",
                        help="networks to train (default all): " + ", ".join(repr(n) for n in NETWORKS))
    parser.add_argument("--steps", type=int, default=1500, help="Adam updates per network (default 1500)")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    parser.add_argument("--batch", type=int, default=32, help="sequences per update (default 32)")
    parser.add_argument("--length", type=int, default=150, help="steps per sequence (default 150)")
    parser.add_argument("--max-width", type=int, default=32, help="the widest pulse (default 32)")
    parser.add_argument("--test", type=int, default=256, help="held-out sequences (default 256)")
    args = parser.parse_args(argv)
    if args.quick:
        args.networks, args.steps, args.length, args.max_width, args.test = ["RNN 5", "LSTM 5"], 200, 60, 16, 128
    out = out_dir(args.out)
    rng = np.random.default_rng(args.seed)

    weights = {name: build(kind, sizes, np.random.default_rng()).num_parameters()     # counted, not trained
               for name, (_, kind, sizes, _, _) in NETWORKS.items()}
    errors, curves = {}, {}
    for name in args.networks:
        task, kind, sizes, _, _ = NETWORKS[name]
        model = build(kind, sizes, rng)
        test_in, test_target = pulses(np.random.default_rng(args.seed + 1), args.test, args.length,
                                      args.max_width, task)
        opt = Adam(model.parameters(), lr=args.lr)
        curves[name] = []
        for _ in progress(range(args.steps), f"{name} steps", every=max(1, args.steps // 5)):
            inputs, targets = pulses(rng, args.batch, args.length, args.max_width, task)
            opt.zero_grad()
            loss = tg.mse_loss(model(inputs)[0], targets)
            loss.backward()
            opt.step()
            curves[name].append(loss.item())
        with tg.no_grad():
            output = model(test_in)[0].data
        errors[name] = nmse(output, test_target)
        series = {"input": test_in[0, :, 0], "target": test_target[0, :, 0], "output": output[0, :, 0]}
        stem = name.lower().replace(" ", "_").replace("(", "").replace(")", "")
        write_csv(out / f"{stem}.csv", {"step": np.arange(args.length), **series})
        title = f"{name}{'' if task == 'inverse' else ' (converter)'}: test NMSE {errors[name]:.4f}"
        plot_lines(out / f"{stem}.png", series, title=title, xlabel="step")
        print(f"{name:18s} {task:9s} {weights[name]:5d} weights  test NMSE {errors[name]:.4f}")

    print(f"\n{'network':18s} {'weights':>7s} {'lecture':>7s} {'test NMSE':>9s} {'lecture':>7s}")
    for name, (_, _, _, lecture_weights, lecture_error) in NETWORKS.items():
        ours = f"{errors[name]:9.4f}" if name in errors else f"{'-':>9s}"
        lecture = (f"{lecture_weights:7d}", f"{lecture_error:7.2f}") if lecture_weights else (f"{'-':>7s}",) * 2
        print(f"{name:18s} {weights[name]:7d} {lecture[0]} {ours} {lecture[1]}")
    write_csv(out / "loss.csv", {"step": np.arange(1, args.steps + 1), **curves})
    plot_lines(out / "loss.png", curves, title="training MSE", xlabel="step", logy=True)

    results = {"weights": weights, "test_nmse": errors, "steps": args.steps, "length": args.length,
               "max_width": args.max_width}
    checks = [(weights[n] == NETWORKS[n][3], f"{n} has {weights[n]} weights, the lecture {NETWORKS[n][3]}")
              for n in NETWORKS if NETWORKS[n][3]]
    checks += [(e < 1, f"{n}: test NMSE {e:.3f} does not beat predicting the mean (1)") for n, e in errors.items()]
    if "RNN 5" in errors:
        checks += [(errors[n] < errors["RNN 5"] / 2, f"{n}: test NMSE {errors[n]:.3f} is not far below RNN 5's "
                                                     f"{errors['RNN 5']:.3f}")
                   for n in ("LSTM 5", "LSTM 5-3", "GRU 5-3") if n in errors]
    return finish(args, results, checks)


if __name__ == "__main__":
    main()
