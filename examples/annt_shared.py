"""What the ANNT-seed examples (sequence_memory, time_series, digits_rows, city_names) share: the seed's network
shape (recurrent layers, then a fully connected layer on every step's output), shuffled mini-batches, drawing
the tape, and writing and checking the results.
"""
import sys

import tapegrad as tg
from tapegrad import nn


class RecurrentNet(nn.Module):
    """ANNT's `XNeuralNetwork` of recurrent layers followed by one `XFullyConnectedLayer`.

    cells: recurrent cells, layer l + 1 reading layer l's outputs; each is unrolled over the whole sequence
    (BPTT is the tape's reverse sweep). tanh_after: apply tanh to every recurrent layer's output (ANNT's
    `XTanhActivation` after each GRU layer in its time-series example). The head is Linear(H_last, out_features).

    forward(xs (batch, T, D), state=None (zeros) or one state per layer) -> (outputs (batch, T, out_features),
    [final state per layer]); the softmax lives in the loss (`tg.cross_entropy` takes logits).
    """

    def __init__(self, cells, out_features, tanh_after=False, rng=None):
        super().__init__()
        self.cells = list(cells)
        self.tanh_after = tanh_after
        self.head = nn.Linear(self.cells[-1].hidden_size, out_features, rng=rng)

    def forward(self, xs, state=None):
        state = [None] * len(self.cells) if state is None else state
        finals = []
        for cell, s in zip(self.cells, state):
            xs, s = nn.unroll(cell, xs, s)
            if self.tanh_after:
                xs = tg.tanh(xs)
            finals.append(s)
        return self.head(xs), finals


def batches(n, batch_size, rng):
    """Index arrays of a shuffled pass over n samples, `batch_size` at a time (the last batch may be smaller)."""
    order = rng.permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def save_graph(loss, path, **options):
    """Draw the tape behind `loss` with tapegrad.viz (rolled view unless `options` say otherwise) to `path`;
    returns the path, or None with a note when Graphviz is not installed."""
    try:
        from tapegrad import viz
        return viz.render(loss, path, **{"view": "rolled", **options})
    except (ImportError, RuntimeError) as e:
        print(f"graph not drawn: {e}", file=sys.stderr)
        return None
