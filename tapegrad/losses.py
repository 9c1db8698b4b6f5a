"""Losses, composed of primitives (so every order of derivative comes with them)."""
import numpy as np

from .errors import DTypeError, InvalidValueError, ShapeError
from . import tape as _tape
from .op import defop, guarded
from .ops import log_softmax, one_hot
from .tape import describe_scope
from .tensor import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def _squared_error(pred, target, reduction):
    if np.shape(pred) != np.shape(target):
        raise ShapeError(f"mse_loss: pred has shape {np.shape(pred)} but target has shape {np.shape(target)}"
                         f"{describe_scope(_tape.CURRENT_SCOPE)}")
    diff = np.subtract(pred, target)
    if reduction == "none":
        return diff * diff
    total = np.vdot(diff, diff)                 # one pass, no squared temporary
    return total / diff.size if reduction == "mean" else total


def _mse_grad(g, pred, target, reduction):
    """d loss / d pred; the target's gradient is its negative."""
    scale = 2 / np.size(pred) if reduction == "mean" else 2
    if type(g) is np.ndarray and g.ndim == 0:   # a reduced loss (first order): scale by a Python number
        return (pred - target) * (float(g) * scale)
    return (pred - target) * (g * scale)


_mse = defop("mse_loss", _squared_error,
             lambda g, ans, p, t, reduction: _mse_grad(g, p, t, reduction),
             lambda g, ans, p, t, reduction: -_mse_grad(g, p, t, reduction), params=("reduction",))


def mse_loss(pred, target, reduction="mean"):
    """Squared error (pred - target)**2, reduced by "mean" | "sum" | "none"; shapes must match."""
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise InvalidValueError(f"mse_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return _mse(pred, target, reduction=reduction)


@guarded
def cross_entropy(logits, targets, reduction="mean", weight=None):
    """Softmax cross-entropy from logits (..., C) and integer class targets (...).

    weight: optional per-element weights or 0/1 mask of the targets' shape; with "mean" the result
    is sum(weight * loss) / sum(weight), so padded positions can be masked out.
    Stable for large logits (log-softmax subtracts the max).
    """
    shape = np.shape(_data(logits))
    t = np.asarray(_data(targets))
    if t.dtype.kind not in "iu":
        raise DTypeError(f"cross_entropy: targets must be integer class indices, got dtype {t.dtype} "
                         f"with shape {t.shape}")
    if not shape or t.shape != shape[:-1]:
        raise ShapeError(f"cross_entropy: logits {shape} need targets of shape {shape[:-1]}, got {t.shape}")
    classes = shape[-1]
    if t.size and (t.min() < 0 or t.max() >= classes):
        raise ShapeError(f"cross_entropy: targets must lie in [0, {classes}) for logits {shape}, "
                         f"got values in [{t.min()}, {t.max()}]")
    dtype = _data(logits).dtype
    losses = -(log_softmax(logits, -1) * one_hot(t, classes, dtype).data).sum(-1)
    if weight is None:
        return _reduce(losses, reduction, "cross_entropy")
    w = np.asarray(_data(weight), dtype=dtype)
    if w.shape != t.shape:
        raise ShapeError(f"cross_entropy: weight has shape {w.shape}, targets have shape {t.shape}")
    losses = losses * w
    if reduction == "mean":
        return losses.sum() / max(float(w.sum()), np.finfo(dtype).tiny)
    return _reduce(losses, reduction, "cross_entropy")


def _reduce(losses, reduction, op):
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise InvalidValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _data(x):
    return x.data if isinstance(x, Tensor) else x
