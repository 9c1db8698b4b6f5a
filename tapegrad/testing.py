"""pytest helpers for gradients, and the `tapegrad.reference` models written with tapegrad ops.

    from tapegrad.testing import assert_grads_match
    def test_my_derivation():
        assert_grads_match(loss_fn, params, hand=my_bptt)      # fails with the check.compare table

`reference_case("lstm_bptt")` builds a small random problem: the model as a tape `loss_fn`, its
float64 parameters, and the hand-derived gradients of `tapegrad.reference` in `compare`'s `hand`
format. It is a known-good derivation to hold one's own against.
"""
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import reference
from .check import CompareReport, compare
from .errors import InvalidValueError
from .ops import sigmoid, tanh
from .tape import scope
from .tensor import Tensor

__all__ = ["assert_grads_match", "reference_case", "ReferenceCase", "hand_from_reference"]


def assert_grads_match(loss_fn: Callable[..., Tensor], params: Any, hand: Any = None, per_step: bool = False,
                       eps: float = 1e-6) -> CompareReport:
    """Run `check.compare` and fail with its table as the message unless the report is ok.

    Arguments as for `tapegrad.check.compare`; returns the report when it passes.
    """
    __tracebackhide__ = True
    report = compare(loss_fn, params, hand=hand, per_step=per_step, eps=eps)
    if not report.ok:
        raise AssertionError(f"gradients do not match\n{report}")
    return report


def hand_from_reference(grads: Mapping[str, Any], steps: Mapping[str, Any] | None = None,
                        state: str = "h") -> dict[str, Any]:
    """`compare`'s `hand` dict from a reference function's `grads` and optional per-step `steps`.

    grads: name -> total. steps: {"dW_steps": name -> [T arrays], "dh": [T arrays]} (per_step=True),
    giving the keys "name@steps" and f"{state}@steps" (dL/dh_t).
    """
    hand = dict(grads)
    if steps is not None:
        hand.update({f"{k}@steps": v for k, v in steps["dW_steps"].items()})
        hand[f"{state}@steps"] = steps["dh"]
    return hand


@dataclass
class ReferenceCase:
    """A reference model on random float64 data.

    params:  name -> Tensor (float64, requires_grad), the names of `tapegrad.reference`.
    model:   (P) -> scalar Tensor, the model with tapegrad ops reading its parameters from the
             mapping P at each step; step t runs in `scope(t=t)`, its hidden state is named "h".
    loss_fn: () -> model(params).
    hand:    () -> `compare`'s hand dict from the reference: totals, "name@steps", "h@steps".
    data:    the inputs: xs, ys, h0 (and c0 for the LSTM).
    """
    params: dict
    model: Callable
    loss_fn: Callable
    hand: Callable
    data: dict


def reference_case(model: str, T: int = 5, B: int = 3, D: int = 2, H: int = 4, O: int = 2,
                   seed: int = 0) -> "ReferenceCase":
    """A `ReferenceCase` for model "elman_loss_fun", "elman_bptt", "lstm_bptt" or "gru_bptt".

    Shapes as in `tapegrad.reference`: batched models take xs (T, B, D), ys (T, B, O), h0 (B, H);
    the seed's column-vector Elman takes xs (T, D, 1), ys (T, O, 1), h0 (H, 1) and ignores B.
    Entries are N(0, 0.5^2).
    """
    if model not in _MODELS:
        raise InvalidValueError(f"reference_case: unknown model {model!r}; one of {', '.join(_MODELS)}")
    forward, run, shapes = _MODELS[model]
    rng = np.random.default_rng(seed)
    rand = lambda *shape: rng.normal(scale=0.5, size=shape)  # noqa: E731
    if model == "elman_loss_fun":
        data = {"xs": rand(T, D, 1), "ys": rand(T, O, 1), "h0": rand(H, 1)}
    else:
        data = {"xs": rand(T, B, D), "ys": rand(T, B, O), "h0": rand(B, H)}
        if model == "lstm_bptt":
            data["c0"] = rand(B, H)
    params = {k: Tensor(rand(*shape), True, k) for k, shape in shapes(D, H, O).items()}

    def model_fn(P: Mapping[str, Tensor]) -> Tensor:
        return forward(P, **data)

    def hand() -> dict[str, Any]:
        _, grads, _, steps = run(data, {k: p.data for k, p in params.items()})
        return hand_from_reference(grads, steps)
    return ReferenceCase(params, model_fn, lambda: model_fn(params), hand, data)


def _steps(xs: np.ndarray, ys: np.ndarray, h: tuple[Tensor, ...],
           cell: Callable[[Any, tuple[Tensor, ...]], tuple[Tensor, ...]],
           head: Callable[[Tensor, Any], Tensor]) -> Tensor:
    """Unroll: h = cell(x_t, h) in scope(t=t), named "h"; returns the sum of head(h_t, y_t)."""
    loss: Any = 0.0                    # a float until the first step adds a Tensor
    for t in range(len(xs)):
        with scope(t=t):
            h = cell(xs[t], h)
            h[0].name = "h"  # type: ignore[assignment, unused-ignore]  # while Tensor.name is typed None (unannotated)
            loss = loss + head(h[0], ys[t])
    return loss


def _batched_head(P: Mapping[str, Tensor]) -> Callable[[Tensor, Any], Tensor]:
    return lambda h, y: ((h @ P["V"] + P["c"] - y) ** 2).sum() * (0.5 / len(y))


def _seed_loss(P: Mapping[str, Tensor], xs: np.ndarray, ys: np.ndarray, h0: np.ndarray) -> Tensor:
    T = len(xs)
    cell = lambda x, h: (tanh(P["Wxh"] @ x + P["Whh"] @ h[0] + P["bh"]),)  # noqa: E731
    head = lambda h, y: ((P["Why"] @ h + P["by"] - y) ** 2).sum() * (1 / (2 * T))  # noqa: E731
    return _steps(xs, ys, (Tensor(h0),), cell, head)


def _elman_loss(P: Mapping[str, Tensor], xs: np.ndarray, ys: np.ndarray, h0: np.ndarray) -> Tensor:
    cell = lambda x, h: (tanh(x @ P["U"] + h[0] @ P["W"] + P["b"]),)  # noqa: E731
    return _steps(xs, ys, (Tensor(h0),), cell, _batched_head(P))


def _lstm_loss(P: Mapping[str, Tensor], xs: np.ndarray, ys: np.ndarray, h0: np.ndarray, c0: np.ndarray) -> Tensor:
    def cell(x: Any, state: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        h, c = state
        a = {k: x @ P[f"W_{k}"] + h @ P[f"U_{k}"] + P[f"b_{k}"] for k in "ifog"}
        c = sigmoid(a["f"]) * c + sigmoid(a["i"]) * tanh(a["g"])
        return sigmoid(a["o"]) * tanh(c), c
    return _steps(xs, ys, (Tensor(h0), Tensor(c0)), cell, _batched_head(P))


def _gru_loss(P: Mapping[str, Tensor], xs: np.ndarray, ys: np.ndarray, h0: np.ndarray) -> Tensor:
    def cell(x: Any, state: tuple[Tensor, ...]) -> tuple[Tensor]:
        h = state[0]
        z = sigmoid(x @ P["U_z"] + h @ P["W_z"] + P["b_z"])
        r = sigmoid(x @ P["U_r"] + h @ P["W_r"] + P["b_r"])
        cand = tanh(x @ P["U_h"] + (r * h) @ P["W_h"] + P["b_h"])
        return ((1 - z) * cand + z * h,)
    return _steps(xs, ys, (Tensor(h0),), cell, _batched_head(P))


def _gate_shapes(wx: str, wh: str, gates: Sequence[str], D: int, H: int, O: int) -> dict[str, tuple[int, ...]]:
    """Per gate suffix s: input weight wx+s (D, H), recurrent weight wh+s (H, H), bias b+s (H,); then the head."""
    shapes: dict[str, tuple[int, ...]] = {}
    for s in gates:
        shapes.update({wx + s: (D, H), wh + s: (H, H), "b" + s: (H,)})
    return {**shapes, "V": (H, O), "c": (O,)}


_Shapes = Callable[..., dict[str, tuple[int, ...]]]
# name -> (tape forward, reference run with per_step=True, parameter shapes)
_MODELS: dict[str, tuple[Callable[..., Tensor], Callable[..., Any], _Shapes]] = {
    "elman_loss_fun": (_seed_loss,
                       lambda d, P: reference.elman_loss_fun(d["xs"], d["ys"], d["h0"], **P, per_step=True),
                       lambda D, H, O: {"Wxh": (H, D), "Whh": (H, H), "Why": (O, H), "bh": (H, 1), "by": (O, 1)}),
    "elman_bptt": (_elman_loss,
                   lambda d, P: reference.elman_bptt(d["xs"], d["ys"], d["h0"], P, per_step=True),
                   lambda D, H, O: _gate_shapes("U", "W", [""], D, H, O)),
    "lstm_bptt": (_lstm_loss,
                  lambda d, P: reference.lstm_bptt(d["xs"], d["ys"], d["h0"], d["c0"], P, per_step=True),
                  lambda D, H, O: _gate_shapes("W", "U", ["_i", "_f", "_o", "_g"], D, H, O)),
    "gru_bptt": (_gru_loss,
                 lambda d, P: reference.gru_bptt(d["xs"], d["ys"], d["h0"], P, per_step=True),
                 lambda D, H, O: _gate_shapes("U", "W", ["_z", "_r", "_h"], D, H, O)),
}
