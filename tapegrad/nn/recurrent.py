"""Unrolling a cell through time with a plain Python loop; BPTT is the tape's reverse sweep over it.

    outputs, state = unroll(cell, xs)                      # xs (batch, T, D) -> outputs (batch, T, H)
    outputs, state = unroll(cell, xs, lengths=[5, 3])      # variable lengths (TensorFlow's sequence_length)
    outputs, state = unroll(cell, xs, truncate=10)         # truncated BPTT: gradients cut every 10 steps
    outputs, state = unroll(cell, xs_next, state=detach_state(state))   # stateful: carry on, detached

The loop runs inside `tapegrad.scope(<the cell's name>)` and each step inside `tapegrad.scope(t=t)`,
so every record knows its module and time step (`record.scope.path`, `record.scope.step`).
"""
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from .. import tape as _tape
from ..checkpoint import checkpoint
from ..errors import AnomalyError, DTypeError, InvalidValueError, ShapeError
from ..ops import concat, stack, where
from ..tape import gc_paused, scope
from ..tensor import Tensor, TensorLike
from .cells import RecurrentCell
from .module import Module, shape_of

__all__ = ["unroll", "detach_state", "lengths_array", "reverse_sequences", "StackedRNN", "Bidirectional"]


def unroll(cell: Any, xs: Any, state: Any = None, lengths: Any = None, truncate: int | None = None,
           time_major: bool = False, checkpoint_every: int | None = None) -> tuple[Tensor, Any]:
    """Run `out, state = cell(x_t, state)` for t = 0 .. T-1; returns (outputs, final_state).

    cell:       a Module (or function) with the cell call convention.
    xs:         (batch, T, D) tensor, (T, batch, D) if time_major, or a list of T (batch, D) tensors.
    state:      initial state (None: the cell's zeros).
    lengths:    optional (batch,) integers in [1, T]. Sequence b is run for lengths[b] steps: its outputs
                are zero after that, its final state is the state at its last valid step, and the
                padded steps contribute no gradient.
    truncate:   k cuts the gradient through the state before steps k, 2k, ... (truncated BPTT;
                k = 1 is Elman's "copy of the hidden state"); None is full BPTT.
    time_major: outputs (and a tensor xs) are (T, batch, ...) instead of (batch, T, ...).
    checkpoint_every: k runs the steps in segments of k under `tapegrad.checkpoint`: backward recomputes
                a segment's records instead of keeping them (about sqrt(T) is the usual choice).
    Returns outputs (batch, T, H) or (T, batch, H), and the final state.

    For a built-in cell (a RecurrentCell whose forward is not overridden) and a tensor xs, the input
    projection x W_x + b of all steps (of each segment, with checkpoint_every) is one matmul before the
    loop and each step runs `recurrence`;
    otherwise (a list xs, any other cell) each step runs the cell's forward. Values and gradients agree.
    """
    listed = isinstance(xs, (list, tuple))
    T, batch = _check_list(xs) if listed else _check_tensor(xs, time_major)
    for name, k in (("truncate", truncate), ("checkpoint_every", checkpoint_every)):
        if k is not None and (not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1):
            raise InvalidValueError(f"unroll: {name} must be a positive integer number of steps or None, got {k!r}")
    active = None if lengths is None else lengths_array(lengths, batch, T)[:, None] > np.arange(T)  # (B, T)
    project = not listed and getattr(type(cell), "forward", None) is RecurrentCell.forward
    step = cell.recurrence if project else cell.forward if isinstance(cell, Module) else cell
    at = _list_index if listed or time_major else _batch_major_index

    def run(state: Any, xs: Any, steps: range) -> tuple[Tensor, Any]:
        """Steps `steps` (a range; xs holds exactly those steps) from `state`: (outputs, final state)."""
        if project:
            xs = _projected(cell, xs, steps, time_major)          # all these steps with one matmul
        outputs = []
        for t in steps:
            if truncate and t and t % truncate == 0:
                state = detach_state(state)
            with scope(t=t):
                out, new = step(at(xs, t - steps.start), state)
                if active is not None and not active[:, t].all():
                    mask = active[:, t:t + 1]                     # (batch, 1)
                    out = where(mask, out, 0)
                    new = _map(lambda a, b, mask=mask: where(mask, a, b), new, state)
            outputs.append(out)
            state = new
        return stack(outputs, axis=time_axis), state

    time_axis = 0 if time_major else 1
    with gc_paused(), scope(_label(cell)):
        if checkpoint_every is None:
            return run(state, xs, range(T))
        segments = []                   # each segment keeps only its inputs and final state; its records
        constant = not _requires_grad(xs)                        # are recomputed in backward
        for start in range(0, T, checkpoint_every):
            steps = range(start, min(start + checkpoint_every, T))
            segment = _segment(xs, steps, listed or time_major)
            inputs = () if constant else (segment,)     # a constant slice of xs is read as it is, not copied
            out, state = checkpoint(lambda s, x=segment, steps=steps: run(s, x, steps), state, *inputs)
            segments.append(out)
        return concat(segments, axis=time_axis), state


def _projected(cell: RecurrentCell, xs: TensorLike, steps: range, time_major: bool) -> Tensor:
    """cell.input_projection(xs); in anomaly mode a NaN/Inf it makes is located to the steps and batch rows
    whose slice holds it (the projection runs before the loop, outside any step's scope)."""
    if not _tape.ANOMALY:
        return cell.input_projection(xs)
    try:
        return cell.input_projection(xs)
    except AnomalyError as e:
        raise AnomalyError(f"{e}\n{_locate_non_finite(cell, xs, steps, time_major)}") from None


def _locate_non_finite(cell: RecurrentCell, xs: TensorLike, steps: range, time_major: bool) -> str:
    data = np.asarray(xs.data if isinstance(xs, Tensor) else xs)
    bad = ~np.isfinite(data).all(axis=-1)                               # (batch, T) or (T, batch)
    if time_major:
        bad = bad.T
    lead = (f"unroll projected the inputs of steps {steps.start}..{steps.stop - 1} with one matmul before the loop "
            "(so the record has no time step): ")
    if bad.any():
        ts = [steps.start + int(t) for t in np.flatnonzero(bad.any(axis=0))]
        rows = [int(b) for b in np.flatnonzero(bad.any(axis=1))]
        return lead + f"the non-finite inputs are at steps t = {_listed(ts)} in batch rows {_listed(rows)} of xs"
    params = [p.name or "?" for p in cell.parameters() if not np.isfinite(p.data).all()]
    if params:
        return lead + f"xs is finite; the non-finite values are in {', '.join(params)}, so every step gets them"
    return lead + "xs and the cell's parameters are finite; the product overflowed"


def _listed(values: Sequence[int], limit: int = 12) -> str:
    shown = ", ".join(map(str, values[:limit]))
    more = len(values) > limit
    return f"[{shown}{', ...' if more else ''}]" + (f" ({len(values)} in all)" if more else "")


def _requires_grad(xs: Any) -> bool:
    """Whether a tensor xs, or any tensor of a list xs, requires grad."""
    if isinstance(xs, (list, tuple)):
        return any(isinstance(x, Tensor) and x.requires_grad for x in xs)
    return isinstance(xs, Tensor) and bool(xs.requires_grad)


def _segment(xs: Any, steps: range, time_first: bool) -> Any:
    """The inputs of `steps` only: a list slice, or a slice of the time axis."""
    index = slice(steps.start, steps.stop)
    if isinstance(xs, (list, tuple)):
        return list(xs[index])
    return xs[index] if time_first else xs[:, index]


def detach_state(state: Any) -> Any:
    """The state cut from the graph (same values): a Tensor's `.detach()`, mapped over tuples and lists
    (h, (h, c), a list of per-layer states, ...); None and other values are returned as they are."""
    return _map(lambda s: s.detach() if isinstance(s, Tensor) else s, state)


def lengths_array(lengths: TensorLike, batch: int, T: int, caller: str = "unroll") -> np.ndarray:
    """`lengths` checked to be `batch` integers in [1, T]; returned as an int array."""
    arr = np.asarray(lengths.data if isinstance(lengths, Tensor) else lengths)
    if arr.dtype.kind not in "iu":
        raise DTypeError(f"{caller}: lengths must be integers, got dtype {arr.dtype}")
    if arr.shape != (batch,):
        raise ShapeError(f"{caller}: lengths must have shape (batch,) = ({batch},), got {arr.shape}")
    if arr.min() < 1 or arr.max() > T:
        raise InvalidValueError(f"{caller}: lengths must lie in [1, T] = [1, {T}], got {arr.tolist()}")
    return arr


def reverse_sequences(xs: Tensor, lengths: TensorLike | None = None, time_major: bool = False) -> Tensor:
    """Reverse every sequence in time within its own length (TensorFlow's reverse_sequence); steps past
    a sequence's length stay where they are. xs (batch, T, ...) or (T, batch, ...)."""
    shape = shape_of(xs)
    T, batch = (shape[0], shape[1]) if time_major else (shape[1], shape[0])
    if lengths is None:
        return xs[::-1] if time_major else xs[:, ::-1]
    n = lengths_array(lengths, batch, T, "reverse_sequences")[:, None]
    t = np.arange(T)
    steps = np.where(t < n, n - 1 - t, t)                          # (batch, T)
    rows = np.broadcast_to(np.arange(batch)[:, None], steps.shape)
    return xs[steps.T, rows.T] if time_major else xs[rows, steps]


class StackedRNN(Module):
    """A deep RNN (TensorFlow's MultiRNNCell): layer l+1 reads layer l's outputs. Parameters layers.<l>.*.

    forward(xs, state=None, lengths=None, truncate=None, time_major=False) -> (outputs, [final state per layer]);
    arguments as `unroll`; `state` is None or one state (or None) per layer. Each layer is unrolled over
    the whole sequence in turn.
    """

    def __init__(self, cells: Iterable[Module], name: str | None = None) -> None:
        super().__init__(name)
        cells = list(cells)
        if not cells:
            raise InvalidValueError("StackedRNN: needs at least one cell")
        for l, (below, above) in enumerate(zip(cells, cells[1:])):
            h, d = getattr(below, "hidden_size", None), getattr(above, "input_size", None)
            if h is not None and d is not None and h != d:
                raise ShapeError(f"StackedRNN: layer {l} outputs {h} features but layer {l + 1} takes input_size {d}")
        self.layers = cells

    def forward(self, xs: Any, state: Any = None, lengths: TensorLike | None = None, truncate: int | None = None,
                time_major: bool = False) -> tuple[Tensor, list[Any]]:
        if state is None:
            state = [None] * len(self.layers)
        elif not isinstance(state, (list, tuple)) or len(state) != len(self.layers):
            raise ShapeError(f"{self._where()}: state must be a list of {len(self.layers)} per-layer states "
                             f"(or None), got {type(state).__name__}")
        finals = []
        for layer, s in zip(self.layers, state):
            xs, s = unroll(layer, xs, s, lengths, truncate, time_major)
            finals.append(s)
        return xs, finals


class Bidirectional(Module):
    """Two cells over the same sequence, `fwd` forwards and `bwd` backwards in time; outputs concatenated.

    forward(xs, state=None, lengths=None, time_major=False) -> (outputs (batch, T, H_fwd + H_bwd),
    (fwd final state, bwd final state)). With `lengths`, the backward cell reads each sequence reversed
    within its length, so it starts at the sequence's last valid step; its records' t counts its own steps.
    """

    def __init__(self, fwd: Module, bwd: Module, name: str | None = None) -> None:
        super().__init__(name)
        self.fwd, self.bwd = fwd, bwd

    def forward(self, xs: Any, state: Any = None, lengths: TensorLike | None = None,
                time_major: bool = False) -> tuple[Tensor, tuple[Any, Any]]:
        if isinstance(xs, (list, tuple)):
            _check_list(xs)
            xs = stack(xs, axis=0 if time_major else 1)
        if state is None:
            state = (None, None)
        elif not isinstance(state, (list, tuple)) or len(state) != 2:
            raise ShapeError(f"{self._where()}: state must be a pair (fwd state, bwd state) or None")
        out_f, final_f = unroll(self.fwd, xs, state[0], lengths, time_major=time_major)
        out_b, final_b = unroll(self.bwd, reverse_sequences(xs, lengths, time_major), state[1], lengths,
                                time_major=time_major)
        return concat([out_f, reverse_sequences(out_b, lengths, time_major)], axis=-1), (final_f, final_b)


def _map(fn: Callable[..., Any], tree: Any, *others: Any) -> Any:
    """fn applied leafwise over nested tuples/lists (others must have the same structure)."""
    if isinstance(tree, (tuple, list)):
        if any(not isinstance(o, (tuple, list)) or len(o) != len(tree) for o in others):
            raise ShapeError(f"unroll: the cell returned a state of a different structure from the one it was "
                             f"given ({len(tree)} parts vs {[shape_of(o) for o in others]})")
        return type(tree)(_map(fn, *parts) for parts in zip(tree, *others))
    return fn(tree, *others)


def _label(cell: Any) -> str:
    """The scope name of the cell's records: its attribute name, else its class (or function) name."""
    return getattr(cell, "_scope_name", None) or getattr(cell, "__name__", None) or type(cell).__name__


def _check_list(xs: Sequence[TensorLike]) -> tuple[int, int]:
    if not xs:
        raise ShapeError("unroll: xs is an empty list; a sequence needs at least one step")
    shapes = [shape_of(x) for x in xs]
    if len(shapes[0]) != 2 or any(s != shapes[0] for s in shapes):
        raise ShapeError(f"unroll: a list xs must hold T tensors of one shape (batch, features), got shapes "
                         f"{sorted(set(shapes))}")
    return len(xs), shapes[0][0]


def _check_tensor(xs: TensorLike, time_major: bool) -> tuple[int, int]:
    shape = shape_of(xs)
    layout = "(T, batch, features)" if time_major else "(batch, T, features)"
    if len(shape) != 3 or 0 in shape[:2]:
        raise ShapeError(f"unroll: xs must be {layout} with T >= 1, or a list of T (batch, features) tensors; "
                         f"got shape {shape}")
    return (shape[0], shape[1]) if time_major else (shape[1], shape[0])


def _list_index(xs: Sequence[Tensor], t: int) -> Tensor:
    return xs[t]


def _batch_major_index(xs: Tensor, t: int) -> Tensor:
    return xs[:, t]
