"""Optimizers and gradient clipping. Every update is in place on `p.data`, so arrays held elsewhere stay live.

    opt = Adam(model.parameters(), lr=1e-3)
    for batch in data:
        opt.zero_grad()
        loss_fn(batch).backward()
        clip_grad_norm(opt.params, 5.0)
        opt.step()

An optimizer's `hyper` dict holds its hyper-parameters (change `opt.hyper["lr"]` to schedule the rate), `state`
holds one dict per parameter (by position: `"step"`, the number of updates that parameter has had, plus arrays
shaped like the parameter), and `state_dict()` / `load_state_dict()` carry all of it plus `step_count`.
"""
import math
import numbers
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .errors import CheckpointError, DTypeError, GraphError, InvalidValueError, ShapeError
from .tape import mark_written
from .tensor import Tensor

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "clip_grad_norm", "clip_grad_value"]


class Optimizer:
    """Base class: parameter validation, `step()` over the parameters that have a grad, `zero_grad()`, state dicts.

    A subclass sets `state_names` (or overrides `_state_names`), validates its hyper-parameters in `_check_hyper`
    and implements `_update(p, g, state, **hyper)`, which changes the array `p` in place from its gradient `g`.
    A subclass whose `_update` is elementwise (each value's update reads only that value of p, g and the
    state, as all of this module's) sets `elementwise = True`: small parameters (at most `flat_max_mean_size`
    values each on average, all of one dtype) are then updated as one flat array when every one has a grad
    and the same step count, one `_update` over all of them: the same numbers bit for bit, with a dozen
    numpy calls instead of a dozen per parameter. Their state arrays are then views of flat buffers.
    """
    state_names: tuple[str, ...] = ()
    elementwise = False
    flat_max_mean_size = 4096

    def __init__(self, params: Iterable[Tensor], **hyper: Any) -> None:
        self.params = _param_list(params, type(self).__name__)
        self.hyper = self._check_hyper(hyper)
        self.step_count = 0
        names = self._state_names(self.hyper)
        self.state: list[dict[str, Any]] = [dict(step=0, **{n: np.zeros_like(p.data) for n in names})
                                            for p in self.params]
        self._flat: _Flat | None = None

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v!r}" for k, v in self.hyper.items())
        n = len(self.params)
        size = sum(int(p.size) for p in self.params)
        return (f"{type(self).__name__}({hyper}; {n} parameter{'s' * (n != 1)}, {size:,} values, "
                f"{self.step_count} step{'s' * (self.step_count != 1)})")

    def step(self) -> None:
        """Update, in place, every parameter whose `.grad` is not None; parameters without a grad are skipped.
        When none has a grad (backward not called, or zero_grad after it) it warns, once per optimizer."""
        if not any(p.grad is not None for p in self.params) and not getattr(self, "_warned_no_grad", False):
            self._warned_no_grad = True
            warnings.warn(f"{type(self).__name__}.step: no gradients — did you call backward? None of its "
                          f"{len(self.params)} parameters has a .grad, so nothing was updated", stacklevel=2)
        flat = self._flat_layout()
        if flat is not None:
            flat.step(self)
            self.step_count += 1
            return
        for i, (p, state) in enumerate(zip(self.params, self.state)):
            if p.grad is None:
                continue
            if p.grad.shape != p.data.shape:
                raise ShapeError(f"{type(self).__name__}.step: params[{i}].grad has shape {p.grad.shape} "
                                 f"but the parameter has shape {p.data.shape}")
            state["step"] += 1
            self._update(p.data, p.grad, state, **self.hyper)
            mark_written(p)
        self.step_count += 1

    def _flat_layout(self) -> "_Flat | None":
        """The flat buffers when this step can update all parameters as one array (built, or rebuilt after
        load_state_dict or `p.data = new`, on demand), else None."""
        params, state = self.params, self.state
        if not self.elementwise:
            return None
        dtype = params[0].data.dtype
        if any(p.grad is None or p.grad.shape != p.data.shape or p.grad.dtype != dtype or p.data.dtype != dtype
               for p in params) or len({s["step"] for s in state}) != 1:
            return None
        flat = self._flat
        if flat is None or not flat.current(params, state):
            flat = self._flat = _Flat(params, state, self.flat_max_mean_size)
        return flat if flat.usable else None

    def zero_grad(self) -> None:
        """Set every parameter's `.grad` to None (the next backward allocates it afresh)."""
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict:
        """{"optimizer": class name, "hyper": {...}, "step_count": int, "state": [per-parameter dict, ...]};
        arrays are copies, so later steps do not change a state dict already taken."""
        return {"optimizer": type(self).__name__, "hyper": dict(self.hyper), "step_count": self.step_count,
                "state": [{k: v.copy() if isinstance(v, np.ndarray) else v for k, v in s.items()}
                          for s in self.state]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what `state_dict()` returned (arrays are copied in). Everything is checked before anything
        changes: a mismatch raises CheckpointError (structure), ShapeError or DTypeError and leaves this
        optimizer as it was."""
        owner = f"{type(self).__name__}.load_state_dict"
        _expect_keys(owner, "state dict", state_dict, ("optimizer", "hyper", "step_count", "state"))
        if state_dict["optimizer"] != type(self).__name__:
            raise CheckpointError(f"{owner}: the state dict is from a {state_dict['optimizer']} optimizer")
        _expect_keys(owner, "state dict['hyper']", state_dict["hyper"], tuple(self.hyper))
        hyper = self._check_hyper(dict(state_dict["hyper"]))
        step_count = _count(owner, "step_count", state_dict["step_count"])
        saved = state_dict["state"]
        if not isinstance(saved, (list, tuple)) or len(saved) != len(self.params):
            got = f"{len(saved)} entries" if isinstance(saved, (list, tuple)) else f"a {type(saved).__name__}"
            raise CheckpointError(f"{owner}: state dict['state'] must be a list with one entry per parameter "
                                  f"({len(self.params)}), got {got}")
        names = self._state_names(hyper)
        state = [self._restored_state(owner, i, p, s, names) for i, (p, s) in enumerate(zip(self.params, saved))]
        self.hyper, self.step_count, self.state = hyper, step_count, state

    def _restored_state(self, owner: str, i: int, p: Tensor, saved: Any, names: tuple[str, ...]) -> dict[str, Any]:
        where = f"state[{i}]"
        _expect_keys(owner, where, saved, ("step",) + names)
        state = {"step": _count(owner, f"{where}['step']", saved["step"])}
        for n in names:
            arr = saved[n]
            if not isinstance(arr, np.ndarray) or arr.shape != p.data.shape:
                got = f"shape {arr.shape}" if isinstance(arr, np.ndarray) else f"a {type(arr).__name__}"
                raise ShapeError(f"{owner}: {where}['{n}'] must be an array of shape {p.data.shape} "
                                 f"like params[{i}], got {got}")
            if arr.dtype != p.data.dtype:
                raise DTypeError(f"{owner}: {where}['{n}'] has dtype {arr.dtype} but params[{i}] has dtype "
                                 f"{p.data.dtype}")
            state[n] = arr.copy()
        return state

    def _state_names(self, hyper: dict[str, Any]) -> tuple[str, ...]:
        return self.state_names

    def _check_hyper(self, hyper: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], **hyper: Any) -> None:
        raise NotImplementedError


class _Flat:
    """All parameters as one flat array: P and G (copied in each step), the state arrays as views of one
    flat buffer per name, and each parameter's piece of P (copied back). `usable` is False where the
    parameters are large on average (the copies would cost more than the numpy calls they save) or share
    memory (updated one after another, each reads the other's update)."""

    def __init__(self, params: list[Tensor], state: list[dict[str, Any]], max_mean_size: int) -> None:
        datas = self.datas = [p.data for p in params]
        sizes = [d.size for d in datas]
        self.usable = sum(sizes) <= max_mean_size * len(datas) and not any(
            np.may_share_memory(a, b) for i, a in enumerate(datas) for b in datas[:i])
        if self.usable:
            edges = np.cumsum([0] + sizes).tolist()
            spans = list(zip(edges, edges[1:]))
            self.flat_state = {}
            for name in (n for n in state[0] if n != "step"):
                buf = self.flat_state[name] = np.empty(edges[-1], datas[0].dtype)
                for s, (a, b), d in zip(state, spans, datas):
                    buf[a:b] = s[name].reshape(-1)
                    s[name] = buf[a:b].reshape(d.shape)
            self.P, self.G = np.empty(edges[-1], datas[0].dtype), np.empty(edges[-1], datas[0].dtype)
            self.pieces = [self.P[a:b].reshape(d.shape) for (a, b), d in zip(spans, datas)]
        self.state_arrays = [{n: v for n, v in s.items() if n != "step"} for s in state]

    def current(self, params: list[Tensor], state: list[dict[str, Any]]) -> bool:
        """Whether the parameters' arrays and the state arrays are still the ones this layout was built on."""
        return all(p.data is d for p, d in zip(params, self.datas)) and all(
            s[n] is v for s, arrays in zip(state, self.state_arrays) for n, v in arrays.items())

    def step(self, opt: Optimizer) -> None:
        params = opt.params
        np.concatenate([p.grad.reshape(-1) for p in params], out=self.G)  # type: ignore[union-attr]  # checked: all set
        np.concatenate([p.data.reshape(-1) for p in params], out=self.P)
        t = opt.state[0]["step"] + 1
        for s in opt.state:
            s["step"] = t
        opt._update(self.P, self.G, dict(self.flat_state, step=t), **opt.hyper)
        for p, piece in zip(params, self.pieces):
            np.copyto(p.data, piece)
            mark_written(p)


class SGD(Optimizer):
    """Stochastic gradient descent as PyTorch's (dampening 0): with weight decay d = g + wd p; with momentum
    buf = momentum buf + d and d = buf (or d + momentum buf with nesterov); then p -= lr d."""
    elementwise = True

    def __init__(self, params: Iterable[Tensor], lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)

    def _check_hyper(self, h: dict[str, Any]) -> dict[str, Any]:
        owner = type(self).__name__
        for name in ("lr", "momentum", "weight_decay"):
            _check_range(owner, name, h[name])
        if not isinstance(h["nesterov"], bool) or (h["nesterov"] and h["momentum"] == 0):
            raise InvalidValueError(f"{owner}: nesterov must be a bool and needs momentum > 0, "
                             f"got nesterov={h['nesterov']!r} with momentum={h['momentum']!r}")
        return h

    def _state_names(self, hyper: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if hyper["momentum"] else ()

    def _update(self,  # type: ignore[override]  # hyper-parameters by name, where the base takes **hyper
                p: np.ndarray, g: np.ndarray, state: dict[str, Any], lr: float, momentum: float,
                nesterov: bool, weight_decay: float) -> None:
        tmp = np.empty_like(p)
        d = g
        if weight_decay:
            d = np.add(np.multiply(p, weight_decay, out=tmp), g, out=tmp)
        if momentum:
            buf = state["momentum_buffer"]
            buf *= momentum
            buf += d
            if nesterov:                       # p -= lr (d + momentum buf), as two scaled subtractions
                p -= np.multiply(d, lr, out=tmp)
                d = np.multiply(buf, momentum, out=tmp)
            else:
                d = buf
        p -= np.multiply(d, lr, out=tmp)


class Adagrad(Optimizer):
    """Adagrad as min-char-rnn's: sum += g*g; p -= lr g / sqrt(sum + eps) (eps inside the root)."""
    elementwise = True
    state_names = ("sum",)

    def __init__(self, params: Iterable[Tensor], lr: float = 0.01, eps: float = 1e-8) -> None:
        super().__init__(params, lr=lr, eps=eps)

    def _check_hyper(self, h: dict[str, Any]) -> dict[str, Any]:
        for name in ("lr", "eps"):
            _check_range(type(self).__name__, name, h[name])
        return h

    def _update(self,  # type: ignore[override]  # hyper-parameters by name, where the base takes **hyper
                p: np.ndarray, g: np.ndarray, state: dict[str, Any], lr: float, eps: float) -> None:
        tmp = np.multiply(g, g, out=np.empty_like(g))     # an array even when g is 0-d
        state["sum"] += tmp
        np.add(state["sum"], eps, out=tmp)
        np.sqrt(tmp, out=tmp)
        np.divide(g, tmp, out=tmp)
        tmp *= lr
        p -= tmp


class RMSprop(Optimizer):
    """RMSprop as PyTorch's (not centered, no momentum): v = alpha v + (1 - alpha) g*g; p -= lr g / (sqrt(v) + eps)."""
    elementwise = True
    state_names = ("square_avg",)

    def __init__(self, params: Iterable[Tensor], lr: float = 0.001, alpha: float = 0.99, eps: float = 1e-8) -> None:
        super().__init__(params, lr=lr, alpha=alpha, eps=eps)

    def _check_hyper(self, h: dict[str, Any]) -> dict[str, Any]:
        owner = type(self).__name__
        for name in ("lr", "eps"):
            _check_range(owner, name, h[name])
        _check_range(owner, "alpha", h["alpha"], hi=1.0)
        return h

    def _update(self,  # type: ignore[override]  # hyper-parameters by name, where the base takes **hyper
                p: np.ndarray, g: np.ndarray, state: dict[str, Any], lr: float, alpha: float, eps: float) -> None:
        v = state["square_avg"]
        tmp = np.multiply(g, g, out=np.empty_like(g))     # an array even when g is 0-d
        tmp *= 1 - alpha
        v *= alpha
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += eps
        np.divide(g, tmp, out=tmp)
        tmp *= lr
        p -= tmp


class Adam(Optimizer):
    """Adam as PyTorch's, with weight decay added to the gradient (L2): g += wd p; m = b1 m + (1 - b1) g;
    v = b2 v + (1 - b2) g*g; p -= lr/(1 - b1^t) m / (sqrt(v)/sqrt(1 - b2^t) + eps), t the parameter's step."""
    elementwise = True
    state_names = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(self, params: Iterable[Tensor], lr: float = 0.001, betas: Sequence[float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def _check_hyper(self, h: dict[str, Any]) -> dict[str, Any]:
        owner = type(self).__name__
        for name in ("lr", "eps", "weight_decay"):
            _check_range(owner, name, h[name])
        betas = h["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise InvalidValueError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
        for k, b in enumerate(betas):
            _check_range(owner, f"betas[{k}]", b, hi=1.0)
        h["betas"] = tuple(betas)
        return h

    def _update(self,  # type: ignore[override]  # hyper-parameters by name, where the base takes **hyper
                p: np.ndarray, g: np.ndarray, state: dict[str, Any], lr: float,
                betas: tuple[float, float], eps: float, weight_decay: float) -> None:
        b1, b2 = betas
        t = state["step"]
        tmp = np.empty_like(p)
        if weight_decay and self.decoupled:
            p *= 1 - lr * weight_decay
        elif weight_decay:
            g = np.add(np.multiply(p, weight_decay, out=tmp), g, out=tmp)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m -= g                              # m = g + b1 (m - g) = b1 m + (1 - b1) g, without a temporary
        m *= b1
        m += g
        np.multiply(g, g, out=tmp)          # g is no longer needed, even when it lives in tmp
        tmp *= 1 - b2
        v *= b2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp /= math.sqrt(1 - b2 ** t)
        tmp += eps
        np.divide(m, tmp, out=tmp)
        tmp *= lr / (1 - b1 ** t)
        p -= tmp


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr wd before the Adam update."""
    decoupled = True

    def __init__(self, params: Iterable[Tensor], lr: float = 0.001, betas: Sequence[float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def clip_grad_norm(params: Tensor | Iterable[Tensor], max_norm: float) -> float:
    """Scale every `.grad` in place by max_norm / (norm + 1e-6) when their global L2 norm exceeds `max_norm`
    (as PyTorch's). Returns the norm before clipping as a float; a NaN/Inf norm leaves the grads untouched."""
    _check_range("clip_grad_norm", "max_norm", max_norm)
    grads = _grads(params, "clip_grad_norm")
    total = math.sqrt(sum(float(np.vdot(g, g).real) for g in grads))
    if math.isfinite(total) and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= scale
    return total


def clip_grad_value(params: Tensor | Iterable[Tensor], limit: float) -> None:
    """Clip every `.grad` in place to [-limit, limit] (min-char-rnn clips to 5)."""
    _check_range("clip_grad_value", "limit", limit)
    for g in _grads(params, "clip_grad_value"):
        np.clip(g, -limit, limit, out=g)


def _param_list(params: Iterable[Tensor], owner: str) -> list[Tensor]:
    """`params` as a list of distinct floating leaf Tensors that require grad; errors name the position and type."""
    if isinstance(params, Tensor) or not hasattr(params, "__iter__"):
        raise DTypeError(f"{owner}: params must be an iterable of Tensors (a list, or a Module's parameters()), "
                         f"got a {type(params).__name__}")
    params = list(params)
    if not params:
        raise ShapeError(f"{owner}: got an empty parameter list")
    seen: dict[int, int] = {}
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise DTypeError(f"{owner}: params[{i}] is a {type(p).__name__}, expected a Tensor with requires_grad=True")
        what = f"params[{i}] (Tensor of shape {p.shape}, dtype {p.dtype}{f', name {p.name!r}' if p.name else ''})"
        if not p.requires_grad or p.dtype.kind != "f":
            raise DTypeError(f"{owner}: {what} does not require grad; only floating Tensors with "
                             "requires_grad=True can be optimized")
        if not p.is_leaf:
            op = p.record.op  # type: ignore[union-attr]  # not a leaf, so it has a record
            raise GraphError(f"{owner}: {what} is not a leaf (it was produced by {op}); optimize the "
                             "leaves it was computed from")
        if id(p) in seen:
            raise InvalidValueError(f"{owner}: {what} is the same Tensor as params[{seen[id(p)]}]")
        seen[id(p)] = i
    return params


def _grads(params: Tensor | Iterable[Tensor], owner: str) -> list[np.ndarray]:
    if isinstance(params, Tensor):
        params = [params]
    grads = []
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise DTypeError(f"{owner}: params[{i}] is a {type(p).__name__}, expected a Tensor")
        if p.grad is not None:
            grads.append(p.grad)
    return grads


def _check_range(owner: str, name: str, value: Any, hi: float | None = None) -> None:
    """Raise ValueError unless `value` is a real number in [0, hi) (or [0, inf) when hi is None)."""
    if (not isinstance(value, numbers.Real) or isinstance(value, bool)
            or not 0 <= value  # type: ignore[operator]  # numbers.Real's stubs declare no comparison with int
            or (hi is not None and not value < hi) or math.isinf(value)):
        bound = f"in [0, {hi})" if hi is not None else "finite and >= 0"
        raise InvalidValueError(f"{owner}: {name} must be a number {bound}, got {value!r}")


def _count(owner: str, where: str, value: Any) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise CheckpointError(f"{owner}: {where} must be a non-negative int, got {value!r}")
    return int(value)


def _expect_keys(owner: str, where: str, d: Any, keys: tuple[str, ...]) -> None:
    if not isinstance(d, dict):
        raise CheckpointError(f"{owner}: {where} must be a dict, got a {type(d).__name__}")
    if set(d) != set(keys):
        missing, extra = sorted(set(keys) - set(d)), sorted(map(str, set(d) - set(keys)))
        raise CheckpointError(f"{owner}: {where} does not match: missing {missing}, unexpected {extra}")
