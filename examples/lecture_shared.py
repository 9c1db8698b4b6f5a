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


def stateful_epoch(model, inputs, targets, chunk, opt, loss_fn, clip=None):
    """One pass over (batch, T, ...) streams in consecutive chunks of `chunk` steps (the last may be shorter).

    Each chunk starts from the previous chunk's final state, detached: the state is preserved between updates
    while the gradient stops at the chunk boundary (truncated BPTT). One optimizer step per chunk; chunk = 1
    is Elman's online procedure, chunk = T full BPTT. model(xs, state) -> (outputs, state);
    loss_fn(outputs, targets chunk) -> scalar Tensor. Returns the mean chunk loss.
    """
    state, losses = None, []
    for start in range(0, targets.shape[1], chunk):
        opt.zero_grad()
        outputs, state = model(inputs[:, start:start + chunk], nn.detach_state(state))
        loss = loss_fn(outputs, targets[:, start:start + chunk])
        loss.backward()
        if clip is not None:
            tg.optim.clip_grad_norm(opt.params, clip)
        opt.step()
        losses.append(loss.item())
    return float(np.mean(losses))
