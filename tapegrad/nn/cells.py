"""Recurrent cells, each an ordinary composition of tapegrad ops that reads like the textbook equations.

Call convention: `out, state = cell(x, state)` with x (batch, input_size); `state=None` means zeros.
The state is h (batch, hidden_size) for RNNCell and GRUCell, and the pair (h, c) for LSTMCell; the
output is h.

Weights are stored fused, one matrix per source, with the gates side by side in column blocks of
width H = hidden_size (the same order as PyTorch's cells):

    cell      W_x (input_size, G*H)   W_h (H, G*H)   b (G*H,)   blocks
    RNNCell   G = 1                                              [h]
    LSTMCell  G = 4                                              [i | f | g | o]
    GRUCell   G = 3                                              [r | z | n]   (+ b_hn (H,) if reset_after)

One bias per gate, so the counts are the lecture's: G * (input_size*H + H*H + H).
Initialisation: W_x Glorot uniform per gate block, W_h orthogonal per gate block, b zeros (LSTM
forget block: forget_bias).

The forward is split in two: `input_projection(x) = x W_x + b` (x may be (batch, T, input_size), so
`unroll` projects a whole sequence with one matmul) and `recurrence(xp, state)`, the per-step rest.
`forward(x, state) = recurrence(input_projection(x), state)`.
"""
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from ..errors import InvalidValueError, ShapeError
from ..ops import relu, sigmoid, split, tanh
from ..tape import mark_written
from ..tensor import Tensor, TensorLike
from . import init
from .module import Module, Parameter, shape_of

__all__ = ["RecurrentCell", "RNNCell", "LSTMCell", "GRUCell"]


class RecurrentCell(Module):
    """Base of the built-in cells: fused weights W_x, W_h, b of `gates` blocks (see the module docstring)."""
    gates = 1
    state_names: tuple[str, ...] = ("h",)

    def __init__(self, input_size: int, hidden_size: int, dtype: DTypeLike | None = None,
                 rng: np.random.Generator | int | None = None, name: str | None = None) -> None:
        super().__init__(name)
        rng = init.make_rng(rng)
        D, H, G = input_size, hidden_size, self.gates
        self.input_size, self.hidden_size = D, H
        self.W_x = Parameter(np.concatenate([init.glorot_uniform((D, H), rng, dtype=dtype) for _ in range(G)], 1))
        self.W_h = Parameter(np.concatenate([init.orthogonal((H, H), rng, dtype=dtype) for _ in range(G)], 1))
        self.b = Parameter(init.zeros((G * H,), dtype))

    def forward(self, x: TensorLike, state: Any = None) -> tuple[Tensor, Any]:
        """x (batch, input_size), state -> (h, new state)."""
        if len(shape_of(x)) != 2:
            raise ShapeError(f"{self._where()}: one step takes x of shape (batch, {self.input_size}), got "
                             f"{shape_of(x)}; run a sequence with tapegrad.nn.unroll")
        return self.recurrence(self.input_projection(x), state)

    def input_projection(self, x: TensorLike) -> Tensor:
        """x W_x + b: (batch, input_size) -> (batch, G*H), or (batch, T, input_size) -> (batch, T, G*H)."""
        shape = shape_of(x)
        if len(shape) not in (2, 3) or shape[-1] != self.input_size:
            D = self.input_size
            expected = {2: f"(batch, {D})", 3: f"(batch, T, {D})"}.get(
                len(shape), f"(batch, {D}) for one step or (batch, T, {D}) for a sequence")
            raise ShapeError(f"{self._where()}: input x has shape {shape}, expected {expected}")
        return x @ self.W_x + self.b

    def recurrence(self, xp: Tensor, state: Any) -> tuple[Tensor, Any]:
        """One step from the projected input xp (batch, G*H) and the state; returns (h, new state)."""
        raise NotImplementedError

    def _state(self, state: Any, xp: Tensor) -> Sequence[Tensor]:
        """The state as a tuple of (batch, H) tensors (zeros for None), checked against `state_names`."""
        batch, n = shape_of(xp)[0], len(self.state_names)
        if state is None:
            zeros = Tensor(np.zeros((batch, self.hidden_size), xp.dtype))
            return (zeros,) * n
        names = self.state_names[0] if n == 1 else f"({', '.join(self.state_names)})"
        parts = (state,) if n == 1 and not isinstance(state, (tuple, list)) else state
        if not isinstance(parts, (tuple, list)) or len(parts) != n:
            got = f"a {type(state).__name__} of {len(state)}" if isinstance(state, (tuple, list)) else \
                f"{type(state).__name__} {shape_of(state)}"
            raise ShapeError(f"{self._where()}: state must be {names}, got {got}")
        for name, s in zip(self.state_names, parts):
            if shape_of(s) != (batch, self.hidden_size):
                raise ShapeError(f"{self._where()}: state {name} has shape {shape_of(s)}, expected "
                                 f"(batch, hidden_size) = {(batch, self.hidden_size)}")
        return parts

    def load_torch_weights(self, weight_ih: ArrayLike, weight_hh: ArrayLike, bias_ih: ArrayLike | None = None,
                           bias_hh: ArrayLike | None = None) -> None:
        """Copy the weights of the matching torch.nn cell (numpy arrays in its layout, a None bias is zeros);
        afterwards this cell computes what the PyTorch cell computes.

        weight_ih (G*H, input_size), weight_hh (G*H, H), bias_ih and bias_hh (G*H,), rows in PyTorch's
        gate order (LSTM i, f, g, o; GRU r, z, n), which is this cell's column order.
        """
        G, D, H = self.gates, self.input_size, self.hidden_size
        given = {"weight_ih": weight_ih, "weight_hh": weight_hh, "bias_ih": bias_ih, "bias_hh": bias_hh}
        expected = {"weight_ih": (G * H, D), "weight_hh": (G * H, H), "bias_ih": (G * H,), "bias_hh": (G * H,)}
        arrays = {k: np.zeros(expected[k]) if v is None else np.asarray(v) for k, v in given.items()}
        wrong = [f"{k} is {arrays[k].shape}, expected {shape}" for k, shape in expected.items()
                 if arrays[k].shape != shape]
        if wrong:
            raise ShapeError(f"{type(self).__name__}({D}, {H}).load_torch_weights: " + "; ".join(wrong))
        self.W_x.data[...] = arrays["weight_ih"].T
        self.W_h.data[...] = arrays["weight_hh"].T
        self._load_torch_biases(arrays["bias_ih"], arrays["bias_hh"])
        for p in self.parameters():
            mark_written(p)

    def _load_torch_biases(self, bias_ih: np.ndarray, bias_hh: np.ndarray) -> None:
        self.b.data[...] = bias_ih + bias_hh

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class RNNCell(RecurrentCell):
    """Elman cell: h = f(x W_x + h W_h + b), f = tanh or relu. State and output h (batch, H).

    Parameters: W_x (input_size, H), W_h (H, H), b (H,). PyTorch: torch.nn.RNNCell.
    """

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh", dtype: DTypeLike | None = None,
                 rng: np.random.Generator | int | None = None, name: str | None = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise InvalidValueError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, dtype, rng, name)
        self.nonlinearity = nonlinearity
        self.f = tanh if nonlinearity == "tanh" else relu

    def recurrence(self, xp: Tensor, state: Any = None) -> tuple[Tensor, Tensor]:
        (h,) = self._state(state, xp)
        h = self.f(xp + h @ self.W_h)
        return h, h

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.nonlinearity == "tanh" else ", nonlinearity='relu'")


class LSTMCell(RecurrentCell):
    """LSTM without peepholes. State (h, c), each (batch, H); output h.

        i, f, g, o = split(x W_x + h W_h + b)          gate blocks in PyTorch's order
        c = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h = sigmoid(o) * tanh(c)

    Parameters: W_x (input_size, 4H), W_h (H, 4H), b (4H,); the forget block of b starts at
    `forget_bias` (1.0, as TensorFlow's LSTM cells). PyTorch: torch.nn.LSTMCell.
    """
    gates = 4
    state_names = ("h", "c")

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0, dtype: DTypeLike | None = None,
                 rng: np.random.Generator | int | None = None, name: str | None = None) -> None:
        super().__init__(input_size, hidden_size, dtype, rng, name)
        self.forget_bias = forget_bias
        self.b.data[hidden_size:2 * hidden_size] = forget_bias

    def recurrence(self, xp: Tensor, state: Any = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h, c = self._state(state, xp)
        i, f, g, o = split(xp + h @ self.W_h, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h = sigmoid(o) * tanh(c)
        return h, (h, c)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.forget_bias == 1.0 else f", forget_bias={self.forget_bias}")


class GRUCell(RecurrentCell):
    """GRU. State and output h (batch, H). Gate blocks r (reset), z (update), n (candidate h~).

    reset_after=False (the lecture's formula):
        r = sigmoid(x W_xr + h W_hr + b_r),  z = sigmoid(x W_xz + h W_hz + b_z)
        n = tanh(x W_xn + (r * h) W_hn + b_n)
        h = (1 - z) * n + z * h
    reset_after=True (PyTorch / cuDNN): r multiplies after the hidden matmul, which has its own bias:
        n = tanh(x W_xn + b_n + r * (h W_hn + b_hn))

    Parameters: W_x (input_size, 3H), W_h (H, 3H), b (3H,), and b_hn (H,) when reset_after.
    PyTorch: torch.nn.GRUCell (load_torch_weights needs reset_after=True).
    """
    gates = 3

    def __init__(self, input_size: int, hidden_size: int, reset_after: bool = False, dtype: DTypeLike | None = None,
                 rng: np.random.Generator | int | None = None, name: str | None = None) -> None:
        super().__init__(input_size, hidden_size, dtype, rng, name)
        self.reset_after = reset_after
        if reset_after:
            self.b_hn = Parameter(init.zeros((hidden_size,), dtype))

    def recurrence(self, xp: Tensor, state: Any = None) -> tuple[Tensor, Tensor]:
        (h,) = self._state(state, xp)
        rz = [2 * self.hidden_size]                       # r and z side by side, then n
        x_rz, x_n = split(xp, rz, axis=-1)
        if self.reset_after:
            h_rz, h_n = split(h @ self.W_h, rz, axis=-1)
            r, z = split(sigmoid(x_rz + h_rz), 2, axis=-1)
            n = tanh(x_n + r * (h_n + self.b_hn))
        else:
            W_hrz, W_hn = split(self.W_h, rz, axis=-1)
            r, z = split(sigmoid(x_rz + h @ W_hrz), 2, axis=-1)
            n = tanh(x_n + (r * h) @ W_hn)
        h = (1 - z) * n + z * h
        return h, h

    def load_torch_weights(self, weight_ih: ArrayLike, weight_hh: ArrayLike, bias_ih: ArrayLike | None = None,
                           bias_hh: ArrayLike | None = None) -> None:
        if not self.reset_after:
            raise InvalidValueError("GRUCell.load_torch_weights: torch.nn.GRUCell applies the reset gate after the "
                                    "hidden matmul; build the cell with reset_after=True to load its weights")
        super().load_torch_weights(weight_ih, weight_hh, bias_ih, bias_hh)

    def _load_torch_biases(self, bias_ih: np.ndarray, bias_hh: np.ndarray) -> None:
        H = self.hidden_size
        self.b.data[...] = bias_ih + np.concatenate([bias_hh[:2 * H], np.zeros(H)])
        self.b_hn.data[...] = bias_hh[2 * H:]

    def extra_repr(self) -> str:
        return super().extra_repr() + (", reset_after=True" if self.reset_after else "")
