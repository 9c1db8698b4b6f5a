"""Models as Modules: parameters found from attributes, recurrent cells, and `unroll` (BPTT by a Python loop).

    import tapegrad.nn as nn
    cell, head = nn.LSTMCell(1, 5), nn.Linear(5, 1)
    hs, (h, c) = nn.unroll(cell, xs)          # xs (batch, T, 1) -> hs (batch, T, 5)
    loss = tapegrad.mse_loss(head(hs), ys)
"""
from . import init, torch_bridge
from .cells import GRUCell, LSTMCell, RecurrentCell, RNNCell
from .layers import Dropout, Embedding, LayerNorm, Linear, Sequential
from .module import Module, Parameter
from .recurrent import Bidirectional, StackedRNN, detach_state, reverse_sequences, unroll

__all__ = ["init", "torch_bridge", "Module", "Parameter", "Linear", "Embedding", "Dropout", "Sequential",
           "LayerNorm", "RecurrentCell", "RNNCell", "LSTMCell", "GRUCell", "unroll", "detach_state",
           "reverse_sequences", "StackedRNN", "Bidirectional"]
