"""A two-step RNN written out by hand, then the same with `unroll` (TensorFlow tutorial seed 004, #5).

The tutorial's network: 3 inputs, 5 recurrent neurons, tanh, two time steps, a mini-batch of 4:

    Y0 = tanh(X0 Wx + b)
    Y1 = tanh(Y0 Wy + X1 Wx + b)            (the same Wx, Wy, b at both steps)

Wx (3, 5) and Wy (5, 5) ~ N(0, 1), b = 0. The input batch is the tutorial's (its code listing,
which the seed's text omits; the tutorial follows Geron, Hands-On Machine Learning, ch. 14):

    X0 = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1]]       t = 0
    X1 = [[9, 8, 7], [0, 0, 0], [6, 5, 4], [3, 2, 1]]       t = 1

Then an `RNNCell(3, 5)` is loaded with the same weights (W_x = Wx, W_h = Wy, b = b) and run by
`tapegrad.nn.unroll` two ways: on the list [X0, X1] (TensorFlow's static_rnn) and on the (4, 2, 3)
tensor (dynamic_rnn, whose input projection is one matmul over both steps). The outputs are
printed side by side and must be identical (bit for bit); the gradients of sum(Y0^2 + Y1^2) with
respect to Wx, Wy and b must agree to float32 rounding (< 1e-6 relative). The tape of the
hand-written version is printed (the two steps' records) and its unrolled graph rendered when the renderer is available.
"""
import numpy as np
from common import example_parser, finish, out_dir, write_csv
from tutorial_shared import parse, side_by_side

import tapegrad as tg
from tapegrad.nn import RNNCell, unroll
from tapegrad.viz import render as render_graph

X0 = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1]], dtype=np.float32)
X1 = np.array([[9, 8, 7], [0, 0, 0], [6, 5, 4], [3, 2, 1]], dtype=np.float32)


def by_hand(Wx, Wy, b):
    """The tutorial's two cells with shared weights (scoped as steps, so the graph shows them)."""
    with tg.scope("rnn"):
        with tg.scope(t=0):
            Y0 = tg.tanh(X0 @ Wx + b)
        with tg.scope(t=1):
            Y1 = tg.tanh(Y0 @ Wy + X1 @ Wx + b)
    return Y0, Y1


def weight_grads(outputs, params):
    return [g.data for g in tg.grad(sum((y * y).sum() for y in outputs), params)]


def render(target, out):
    """The unrolled graph of the hand-written version as SVG; None (and why) without a Graphviz backend."""
    try:
        return render_graph(target, out / "manual_graph.svg", view="unrolled")
    except (ImportError, RuntimeError) as exc:
        print(f"(graph not rendered: {exc})")
        return None


def main(argv=None):
    parser = example_parser(__doc__, "out/manual_unroll")
    args = parse(parser, argv, quick={})
    out = out_dir(args.out)
    rng = np.random.default_rng(args.seed)
    Wx = tg.tensor(rng.standard_normal((3, 5)), requires_grad=True, dtype=np.float32, name="Wx")
    Wy = tg.tensor(rng.standard_normal((5, 5)), requires_grad=True, dtype=np.float32, name="Wy")
    b = tg.tensor(np.zeros(5), requires_grad=True, dtype=np.float32, name="b")

    with tg.Tape() as tape:
        Y0, Y1 = by_hand(Wx, Wy, b)
    print(f"the hand-written network's tape ({len(tape)} records):\n{tape}\n")
    hand_grads = weight_grads([Y0, Y1], [Wx, Wy, b])

    cell = RNNCell(3, 5)
    cell.W_x.data[...], cell.W_h.data[...], cell.b.data[...] = Wx.data, Wy.data, b.data
    static, static_state = unroll(cell, [tg.tensor(X0), tg.tensor(X1)])
    dynamic, dynamic_state = unroll(cell, tg.tensor(np.stack([X0, X1], axis=1)))
    cell_grads = weight_grads([dynamic[:, 0], dynamic[:, 1]], [cell.W_x, cell.W_h, cell.b])

    for t, Y in enumerate((Y0, Y1)):
        side_by_side(f"Y{t} (outputs at t = {t})", Y.data, dynamic.data[:, t], ("by hand", "unroll"))
    diffs = {
        "outputs_static_vs_hand": float(np.abs(static.data - np.stack([Y0.data, Y1.data], 1)).max()),
        "outputs_dynamic_vs_hand": float(np.abs(dynamic.data - np.stack([Y0.data, Y1.data], 1)).max()),
        "final_state_vs_Y1": float(max(np.abs(static_state.data - Y1.data).max(),
                                       np.abs(dynamic_state.data - Y1.data).max())),
    }
    grad_rel = float(max(np.abs(g - h).max() / np.abs(h).max() for g, h in zip(cell_grads, hand_grads)))
    for k, v in diffs.items():
        print(f"max |difference| {k}: {v:.1e}")
    write_csv(out / "outputs.csv", {"instance": np.repeat(np.arange(4), 2 * 5), "t": np.tile(np.repeat([0, 1], 5), 4),
                                    "neuron": np.tile(np.arange(5), 8),
                                    "by_hand": np.stack([Y0.data, Y1.data], 1), "unroll": dynamic.data})
    print(f"max |gradient difference| / max |gradient| (dWx, dWy, db): {grad_rel:.1e}  (float32; the two "
          "ways add the same products in a different order)")
    results = {**diffs, "grads_rel_diff": grad_rel, "graph": render(Y1, out)}
    # The hand-written steps and unroll compute the same products, but unroll may send them through BLAS in
    # other shapes (all steps' input projections at once), whose float32 sums may round differently: within
    # a few eps per term summed (3 inputs + 5 units), relative to the largest term.
    scale = (max(1.0, float(np.abs(X0).max()), float(np.abs(X1).max()))
             * float(np.abs(Wx.data).max() + np.abs(Wy.data).max()))
    tol = float(np.finfo(np.float32).eps) * 4 * (3 + 5) * scale
    results["float32_tolerance"] = tol
    checks = [(v <= tol, f"{k} is {v:.1e} > {tol:.1e}") for k, v in diffs.items()]
    return finish(args, results, checks + [(grad_rel < 1e-5, f"gradients differ by {grad_rel:.1e} (relative)")])


if __name__ == "__main__":
    main()
