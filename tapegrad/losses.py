"""Losses, composed of primitives (so every order of derivative comes with them)."""
from collections.abc import Callable, Sequence
from typing import Any, overload

import numpy as np
from numpy.typing import ArrayLike

from . import tape as _tape
from .errors import DTypeError, InvalidValueError, ShapeError
from .op import defop, guarded
from .ops import abs, astype, exp, expand_dims, log, log_softmax, maximum, softplus, take_along_axis, where
from .tape import describe_scope
from .tensor import Tensor, TensorLike

__all__ = ["mse_loss", "cross_entropy", "binary_cross_entropy_with_logits", "nll_loss", "l1_loss", "huber_loss",
           "kl_div"]

_REDUCTIONS = ("mean", "sum", "none")


def _squared_error(pred: ArrayLike, target: ArrayLike, reduction: str) -> Any:
    if np.shape(pred) != np.shape(target):
        raise ShapeError(f"mse_loss: pred has shape {np.shape(pred)} but target has shape {np.shape(target)}"
                         f"{describe_scope(_tape.CURRENT_SCOPE)}")
    diff = np.subtract(pred, target)
    if reduction == "none":
        return diff * diff
    total = np.vdot(diff, diff)                 # one pass, no squared temporary
    return total / diff.size if reduction == "mean" else total


def _mse_grad(g: Any, pred: np.ndarray, target: np.ndarray, reduction: str) -> np.ndarray:
    """d loss / d pred; the target's gradient is its negative."""
    scale = 2 / np.size(pred) if reduction == "mean" else 2
    if type(g) is np.ndarray and g.ndim == 0:   # a reduced loss (first order): scale by a Python number
        return (pred - target) * (float(g) * scale)
    return (pred - target) * (g * scale)


_mse = defop("mse_loss", _squared_error,
             lambda g, ans, p, t, reduction: _mse_grad(g, p, t, reduction),
             lambda g, ans, p, t, reduction: -_mse_grad(g, p, t, reduction), params=("reduction",))


def mse_loss(pred: Tensor, target: TensorLike, reduction: str = "mean") -> Tensor:
    """Squared error (pred - target)**2, reduced by "mean" | "sum" | "none"; shapes must match."""
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise InvalidValueError(f"mse_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return _mse(pred, target, reduction=reduction)


@guarded
def cross_entropy(logits: Tensor, targets: TensorLike, reduction: str = "mean",
                  weight: TensorLike | None = None) -> Tensor:
    """Softmax cross-entropy from logits (..., C) and integer class targets (...).

    weight: optional per-element weights or 0/1 mask of the targets' shape; with "mean" the result
    is sum(weight * loss) / sum(weight), so padded positions can be masked out.
    Stable for large logits (log-softmax subtracts the max); a logit of -inf (a masked class) is allowed
    for classes that are not the target.
    """
    _check_reduction(reduction, "cross_entropy")
    return _picked(logits, targets, reduction, weight, "cross_entropy", "logits", lambda z: log_softmax(z, -1))


def _reduce(losses: Tensor, reduction: str, op: str) -> Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise InvalidValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


@overload
def _data(x: Tensor) -> np.ndarray: ...
@overload
def _data(x: ArrayLike) -> ArrayLike: ...
def _data(x: TensorLike) -> ArrayLike:
    return x.data if isinstance(x, Tensor) else x


def _check_reduction(reduction: str, op: str, extra: Sequence[str] = ()) -> None:
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS + tuple(extra):
        raise InvalidValueError(f"{op}: reduction must be one of {_REDUCTIONS + tuple(extra)}, got {reduction!r}")


def _check_same_shape(a: TensorLike, b: TensorLike, op: str, names: tuple[str, str] = ("pred", "target")) -> None:
    if np.shape(_data(a)) != np.shape(_data(b)):
        raise ShapeError(f"{op}: {names[0]} has shape {np.shape(_data(a))} but {names[1]} has shape "
                         f"{np.shape(_data(b))}{describe_scope(_tape.CURRENT_SCOPE)}")


@guarded
def binary_cross_entropy_with_logits(logits: Tensor, targets: TensorLike, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of sigmoid(logits) against targets in [0, 1] (same shape as the logits):
    softplus(z) - z * t, which equals -(t log sigmoid(z) + (1 - t) log(1 - sigmoid(z))) and is finite
    for any z (no log of a sigmoid that rounded to 0 or 1). Reduced by "mean" | "sum" | "none";
    differentiable in both arguments."""
    _check_reduction(reduction, "binary_cross_entropy_with_logits")
    _check_same_shape(logits, targets, "binary_cross_entropy_with_logits", ("logits", "targets"))
    return _reduce(softplus(logits) - logits * targets, reduction, "binary_cross_entropy_with_logits")


@guarded
def nll_loss(log_probs: Tensor, targets: TensorLike, reduction: str = "mean",
             weight: TensorLike | None = None) -> Tensor:
    """Negative log-likelihood of integer class targets (...) under log-probabilities (..., C), e.g. the
    output of log_softmax(z, -1): -log_probs[..., targets]. Classes are the last axis, as in cross_entropy
    (PyTorch's nll_loss puts them on axis 1). weight: per-element weights or a 0/1 mask of the targets'
    shape, as in cross_entropy ("mean" is then sum(weight * loss) / sum(weight)). A -inf log-probability
    of a class that is not a target does no harm (it is picked, never multiplied by 0)."""
    _check_reduction(reduction, "nll_loss")
    return _picked(log_probs, targets, reduction, weight, "nll_loss", "log_probs", lambda x: x)


def _picked(scores: Tensor, targets: TensorLike, reduction: str, weight: TensorLike | None, op: str, what: str,
            log_probs_of: Callable[[Tensor], Tensor]) -> Tensor:
    """-log_probs_of(scores)[..., targets] for scores (..., C), reduced (a weighted mean with `weight`)."""
    shape = np.shape(_data(scores))
    t = np.asarray(_data(targets))
    if t.dtype.kind not in "iu":
        raise DTypeError(f"{op}: targets must be integer class indices, got dtype {t.dtype} with shape {t.shape}")
    if not shape or t.shape != shape[:-1]:
        raise ShapeError(f"{op}: {what} {shape} need targets of shape {shape[:-1]}, got {t.shape}")
    if t.size and (t.min() < 0 or t.max() >= shape[-1]):
        raise ShapeError(f"{op}: targets must lie in [0, {shape[-1]}) for {what} {shape}, "
                         f"got values in [{t.min()}, {t.max()}]")
    # the target's log-probability picked (not multiplied by a one-hot: a -inf masking logit times 0 is NaN);
    # Tensor targets pass through ops, so a compiled step reads them anew each call
    index = expand_dims(targets, -1) if isinstance(targets, Tensor) else t[..., None]
    losses = -take_along_axis(log_probs_of(scores), index, axis=-1).reshape(t.shape)
    if weight is None:
        return _reduce(losses, reduction, op)
    dtype = _data(scores).dtype
    w = np.asarray(_data(weight), dtype=dtype)
    if w.shape != t.shape:
        raise ShapeError(f"{op}: weight has shape {w.shape}, targets have shape {t.shape}")
    wt: Tensor | np.ndarray = w
    if isinstance(weight, Tensor):      # through ops, so that a compiled step reads it anew each call
        wt = weight if weight.dtype == dtype else astype(weight, dtype)
    losses = losses * wt
    if reduction == "mean":
        return losses.sum() / maximum(wt.sum(), np.finfo(dtype).tiny)
    return _reduce(losses, reduction, op)


@guarded
def l1_loss(pred: Tensor, target: TensorLike, reduction: str = "mean") -> Tensor:
    """Absolute error |pred - target|, reduced by "mean" | "sum" | "none"; shapes must match. The gradient
    where pred == target is 0 (abs's subgradient)."""
    _check_reduction(reduction, "l1_loss")
    _check_same_shape(pred, target, "l1_loss")
    return _reduce(abs(pred - target), reduction, "l1_loss")


@guarded
def huber_loss(pred: Tensor, target: TensorLike, delta: float = 1.0, reduction: str = "mean") -> Tensor:
    """Huber loss of d = pred - target: d^2 / 2 where |d| <= delta, delta (|d| - delta / 2) beyond
    (PyTorch's huber_loss; smooth_l1_loss is this divided by delta). Shapes must match; delta > 0."""
    _check_reduction(reduction, "huber_loss")
    _check_same_shape(pred, target, "huber_loss")
    if not delta > 0:
        raise InvalidValueError(f"huber_loss: delta must be positive, got {delta!r}")
    d = pred - target
    a = abs(d)
    # the quadratic zone written on d itself, not on |d|: its curvature at d = 0 is 1 (abs's kink would make it 0)
    return _reduce(where(a <= delta, d * d * 0.5, (a - delta * 0.5) * delta), reduction, "huber_loss")


@guarded
def kl_div(log_q: Tensor, p: Tensor | np.ndarray, reduction: str = "mean", log_target: bool = False) -> Tensor:
    """KL divergence with PyTorch's kl_div semantics: the input `log_q` holds log-probabilities of the
    model's distribution q, the target `p` probabilities (log-probabilities with log_target=True);
    the pointwise loss is p (log p - log_q), 0 where p = 0, so sum over classes is KL(p || q).
    reduction: "mean" averages over all elements (as PyTorch; KL per sample needs "batchmean", the sum
    divided by the size of the first axis), "sum", "none". Shapes must match."""
    _check_reduction(reduction, "kl_div", ("batchmean",))
    _check_same_shape(log_q, p, "kl_div", ("log_q", "p"))
    if log_target:
        losses = exp(p) * (p - log_q)
    else:
        positive = p > 0
        losses = where(positive, p * (log(where(positive, p, 1)) - log_q), 0)
    if reduction == "batchmean":
        shape = np.shape(_data(log_q))
        return losses.sum() / (shape[0] if shape else 1)
    return _reduce(losses, reduction, "kl_div")
