"""Regenerate docs/gallery/: the BPTT pictures of docs/visualization.md, as SVG and PNG.

    python docs/make_gallery.py            # needs graphviz (pip) and dot or graphviz-pure; matplotlib for the plot

Each figure is one function below; docs/visualization.md shows the same code.
"""
from pathlib import Path

import numpy as np

import tapegrad as tg
import tapegrad.nn as nn
import tapegrad.viz as viz

OUT = Path(__file__).resolve().parent / "gallery"
D, H = 2, 3                                   # input and hidden sizes of the small pictures


def sequence(T, rng, d=D, scale=1.0, name="x"):
    """T input steps of shape (1, d), named so that the pictures call them x_0, x_1, ..."""
    return [tg.tensor(scale * rng.standard_normal((1, d)), dtype=np.float32, name=name) for _ in range(T)]


def zeros(name):
    return tg.tensor(np.zeros((1, H), np.float32), name=name)


class PerStepLoss(nn.Module):
    """A cell stepped by hand: at each t, `out, state = cell(x_t, state)`, a readout and a squared error."""

    def __init__(self, cell, rng):
        super().__init__()
        self.cell = cell
        self.out = nn.Linear(H, 1, rng=rng)

    def forward(self, xs, state):
        losses = []
        for t, x in enumerate(xs):
            with tg.scope(t=t):
                h, state = self.cell(x, state)
                with tg.scope("loss"):
                    losses.append(tg.mse_loss(self.out(h), np.ones((1, 1), np.float32)))
        return tg.stack(losses).sum()


def elman(T, rng):
    return PerStepLoss(nn.RNNCell(D, H, rng=rng), rng)(sequence(T, rng), zeros("h0"))


def lstm(T, rng):
    return PerStepLoss(nn.LSTMCell(D, H, rng=rng), rng)(sequence(T, rng), (zeros("h0"), zeros("c0")))


def stacked_lstm(T, rng):
    rnn = nn.StackedRNN([nn.LSTMCell(D, H, rng=rng), nn.LSTMCell(H, H, rng=rng)], name="rnn")
    outputs, _ = rnn(sequence(T, rng))
    return outputs.sum()


def bidirectional_rnn(T, rng):
    bi = nn.Bidirectional(nn.RNNCell(D, H, rng=rng), nn.RNNCell(D, H, rng=rng), name="birnn")
    outputs, _ = bi(sequence(T, rng))
    return outputs.sum()


class Seq2Seq(nn.Module):
    """An encoder RNN reads the source; its final state starts the decoder, whose outputs are read out."""

    def __init__(self, rng):
        super().__init__()
        self.encoder = nn.RNNCell(D, H, rng=rng)
        self.decoder = nn.RNNCell(D, H, rng=rng)
        self.out = nn.Linear(H, D, rng=rng)

    def forward(self, source, target_in):
        _, state = nn.unroll(self.encoder, source)
        outputs, _ = nn.unroll(self.decoder, target_in, state)
        return tg.mse_loss(self.out(outputs), np.zeros((1, len(target_in), D), np.float32))


def encoder_decoder(rng):
    return Seq2Seq(rng)(sequence(4, rng), sequence(3, rng, name="y"))      # y: the decoder's teacher-forced inputs


def long_sequence(cell, T, rng):
    """Many-to-one over T steps: only the last state is read, so ∂L/∂h_t is what BPTT carries back."""
    with tg.Tape(retain_grads=True) as tape:
        _, state = nn.unroll(cell, sequence(T, rng, d=4, scale=2.0))
        h = state[0] if isinstance(state, tuple) else state
        loss = (h * h).sum()
    loss.backward()
    return loss, tape


# -- ordinary user code: the loops people write ------------------------------------------------------

def demo_loss(T, rng):
    """`tapegrad.demo.rnn_loss`: weights as named tensors, numpy inputs, `loss = loss + l_t` in the loop."""
    from tapegrad import demo

    params = demo.init_params(rng, H, np.float32)
    xs = rng.standard_normal((1, T, 1)).astype(np.float32)          # plain numpy arrays, not tensors
    ys = rng.standard_normal((1, T, 1)).astype(np.float32)
    return demo.rnn_loss(params, xs, ys)


KEEP = []                                     # the modules of the hand loops stay alive while they are drawn


def hand_loop(T, rng, name=True):
    """A cell and a readout called directly in a hand loop (no parent Module), numpy inputs, a running loss."""
    cell = nn.RNNCell(D, H, rng=rng, name="cell" if name else None)
    head = nn.Linear(H, 1, rng=rng, name="head" if name else None)
    KEEP.extend([cell, head])
    h, loss = None, 0.0
    for t in range(T):
        x = rng.standard_normal((1, D)).astype(np.float32)
        with tg.scope(t=t):
            out, h = cell(x, h)
            loss = loss + tg.mse_loss(head(out), np.ones((1, 1), np.float32))
    return loss


def textbook(T, rng):
    """Goodfellow et al. Fig 10.3: h_t = tanh(W_xh x_t + W_hh h_t-1 + b), o_t = W_hy h_t, a loss per step."""
    p = lambda name, *shape: tg.tensor(0.5 * rng.standard_normal(shape), dtype=np.float32,  # noqa: E731
                                       requires_grad=True, name=name)
    W_xh, W_hh, b, W_hy = p("W_xh", D, H), p("W_hh", H, H), p("b", H), p("W_hy", H, 1)
    h, loss = np.zeros((1, H), np.float32), 0.0
    for t in range(T):
        x = tg.tensor(rng.standard_normal((1, D)), dtype=np.float32, name="x")
        with tg.scope(t=t):
            with tg.scope("cell"):
                h = tg.tanh(x @ W_xh + h @ W_hh + b)
                h.name = "h"
            with tg.scope("out"):
                o = h @ W_hy
            loss = loss + tg.mse_loss(o, np.ones((1, 1), np.float32))
    return loss


def sweeps(rng):
    """The reverse sweep of an Elman RNN and an LSTM, T = 8, loss on the last state: one frame per step."""
    for name, cell in (("rnn", nn.RNNCell(4, 16, rng=rng)), ("lstm", nn.LSTMCell(4, 16, forget_bias=3.0, rng=rng))):
        KEEP.append(cell)
        _, state = nn.unroll(cell, sequence(8, rng, d=4, scale=2.0))
        h = state[0] if isinstance(state, tuple) else state
        print(*viz.animate_backward((h * h).sum(), OUT / f"backward_{name}.svg", png=True)[1], sep="\n")


def main():
    OUT.mkdir(exist_ok=True)
    rng = lambda: np.random.default_rng(0)        # noqa: E731  each figure starts from the same seed
    figures = {
        "elman_ops": (elman(4, rng()), {}),
        "lstm_ops": (lstm(3, rng()), {}),
        "lstm_cells": (lstm(8, rng()), dict(detail="cells", max_steps=4)),
        "rolled": (elman(4, rng()), dict(view="rolled", detail="cells")),
        "rolled_ops": (elman(4, rng()), dict(view="rolled")),
        "stacked_lstm": (stacked_lstm(4, rng()), dict(detail="cells")),
        "bidirectional_rnn": (bidirectional_rnn(4, rng()), dict(detail="cells")),
        "encoder_decoder": (encoder_decoder(rng()), dict(detail="cells")),
        "demo_ops": (demo_loss(4, rng()), {}),
        "demo_cells": (demo_loss(4, rng()), dict(detail="cells")),
        "hand_loop_cells": (hand_loop(4, rng()), dict(detail="cells")),
        "hand_loop_unnamed": (hand_loop(4, rng(), name=False), dict(detail="cells")),
        "textbook": (textbook(4, rng()), dict(detail="cells", weights="labels")),
        "textbook_nodes": (textbook(4, rng()), dict(detail="cells", weights="nodes")),
        "unfold": (textbook(4, rng()), dict(view="unfold", detail="cells")),
        "textbook_slide": (textbook(4, rng()), dict(detail="cells", theme="slide", show_shapes=False)),
        "elman_ops_nodes": (elman(4, rng()), dict(weights="nodes")),
    }
    flows = {}
    cells = {"rnn": lambda r: nn.RNNCell(4, 16, rng=r),
             "lstm": lambda r: nn.LSTMCell(4, 16, forget_bias=3.0, rng=r)}   # forget gate open: c_t carries
    for name, make in cells.items():
        r = rng()
        loss, tape = long_sequence(make(r), 50, r)
        figures[f"grads_{name}"] = (loss, dict(detail="cells", max_steps=6, show_grads=True))
        flows[name] = (loss, tape)
    for name, (target, options) in figures.items():
        for fmt in ("svg", "png"):
            print(viz.render(target, OUT / f"{name}.{fmt}", **options))
    plot_flows(flows)
    sweeps(rng())


def plot_flows(flows):
    """‖∂L/∂h_t‖ (and ‖∂L/∂c_t‖) against t for the RNN and the LSTM, on one log-scale plot."""
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "tapegrad"     # stable ids: the SVG diffs cleanly
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, (loss, _) in flows.items():
        print(name, viz.gradient_flow(loss, ax=ax, label=name.upper()), sep="\n")
    ax.set_title("BPTT from a loss on the last state, T = 50")
    fig.tight_layout()
    for fmt in ("svg", "png"):
        fig.savefig(OUT / f"gradient_flow.{fmt}", dpi=120, metadata={"Date": None} if fmt == "svg" else {})
        print(OUT / f"gradient_flow.{fmt}")


if __name__ == "__main__":
    main()
