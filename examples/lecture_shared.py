"""What the RNN-lecture examples (sunspots, pulse_converter, bidirectional, char_model, seq2seq) share:
recurrent layers with a linear output on every step, and one pass of stateful truncated BPTT.
"""
import numpy as np

import tapegrad as tg
from tapegrad import nn


class RecurrentHead(nn.Module):
    """Recurrent layers (layer l + 1 reads layer l's outputs) and a Linear output on every step.

    forward(xs (batch, T, D), state=None or one state per layer) -> (outputs (batch, T, out_features),
    [final state per layer]). The trainable-weight count is the cells' plus (H_last + 1) * out_features.
    """

    def __init__(self, cells, out_features=1, rng=None):
        super().__init__()
        self.rnn = nn.StackedRNN(cells)
        self.head = nn.Linear(cells[-1].hidden_size, out_features, rng=rng)

    def forward(self, xs, state=None):
        hs, state = self.rnn(xs, state)
        return self.head(hs), state


def chunk_step(model, loss_fn):
    """train_step(xs, ys, state) -> (loss, final state): one chunk's forward from `state`, loss and backward,
    as a function of its data (so that tg.compile can replay it). model(xs, state) -> (outputs, state);
    loss_fn(outputs, ys) -> scalar Tensor."""
    def train_step(xs, ys, state):
        outputs, state = model(xs, state)
        loss = loss_fn(outputs, ys)
        loss.backward()
        return loss, state
    return train_step


def stateful_epoch(step, inputs, targets, chunk, opt, clip=None):
    """One pass over (batch, T, ...) streams in consecutive chunks of `chunk` steps (the last may be shorter).

    Each chunk starts from the previous chunk's final state, detached: the state is preserved between updates
    while the gradient stops at the chunk boundary (truncated BPTT). One optimizer step per chunk; chunk = 1
    is Elman's online procedure, chunk = T full BPTT. step: a chunk_step (or its tg.compile). Returns the mean
    chunk loss.
    """
    state, losses = None, []
    for start in range(0, targets.shape[1], chunk):
        opt.zero_grad()
        loss, state = step(inputs[:, start:start + chunk], targets[:, start:start + chunk], nn.detach_state(state))
        if clip is not None:
            tg.optim.clip_grad_norm(opt.params, clip)
        opt.step()
        losses.append(loss.item())
    return float(np.mean(losses))
