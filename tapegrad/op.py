"""Defining a primitive: a numpy forward plus one derivative rule (VJP) per input, side by side.

    tanh = defop("tanh", np.tanh, lambda g, ans, x: g * (1 - ans * ans), keep="ans")

A rule gets the output gradient `g`, the output `ans` and the op's inputs, and returns the gradient
for its input. Rules are written with tapegrad ops, so they run as plain numpy on arrays (first
order) and are recorded on Tensors (`create_graph=True`, higher order). Broadcasting is undone
centrally by the backward sweep, never in a rule.

`keep` declares what backward needs: "inputs", "ans", "both" or "none". Inputs that are not kept
reach the rule as shape-only stand-ins (their producing Record or leaf: `.shape`, `.dtype`, `.ndim`),
so an op like `add` keeps nothing alive.

Called with no Tensor argument, a primitive is plain numpy: it returns a plain array.
"""
import functools
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

import numpy as np

from . import anomaly
from . import tape as _tape
from .errors import ArgumentError, DTypeError, IndexOutOfRange, InvalidValueError, ShapeError, TapegradError
from .tape import Record, describe_scope, next_index
from .tensor import Tensor


class Op:
    """A primitive's name, numpy forward, derivative rules and what backward keeps."""
    __slots__ = ("name", "forward", "vjps", "keep_inputs", "keep_ans")

    def __init__(self, name, forward, vjps, keep):
        if keep not in ("inputs", "ans", "both", "none"):
            raise InvalidValueError(f"defop {name}: keep must be 'inputs', 'ans', 'both' or 'none', got {keep!r}")
        self.name, self.forward, self.vjps = name, forward, vjps
        self.keep_inputs = keep in ("inputs", "both")
        self.keep_ans = keep in ("ans", "both")

    def differentiable(self, i):
        return isinstance(self.vjps, (PerInput, Joint)) or self.vjps[i] is not None

    def __repr__(self):
        return f"<op {self.name}>"


def identity(g, ans, *inputs, **params):
    """The rule of an input whose gradient is the output's (add, the first input of sub, broadcast_to):
    the sweep passes `g` on without calling it."""
    return g


class PerInput:
    """Rules for a variadic op (concat, stack): `rule(i, g, ans, inputs, **params)` is input i's gradient.

    The inputs arrive as one tuple, so a record of n inputs costs O(n) to sweep, not O(n^2).
    `PerInput(rule)[i]` is the rule bound to input i, with the ordinary rule signature.
    """
    __slots__ = ("rule",)

    def __init__(self, rule):
        self.rule = rule

    def __getitem__(self, i):
        rule = self.rule
        return lambda g, ans, *xs, **params: rule(i, g, ans, xs, **params)


class Joint:
    """One rule for all inputs of an op whose input gradients are best computed together (a hand-fused
    cell, `checkpoint`): `rule(g, ans, *inputs, **params)` returns one gradient (or None) per input."""
    __slots__ = ("rule",)

    def __init__(self, rule):
        self.rule = rule


class Primitive(Protocol):
    """What `defop` returns: called like its numpy forward (a Tensor when an input is a Tensor, a plain
    array otherwise); `.op` is its Op."""
    op: Op
    __name__: str
    __qualname__: str

    def __call__(self, *args: Any, **kw: Any) -> Any: ...


def defop(name: str, forward: Callable[..., Any], *vjps: Any, keep: str = "inputs",
          params: tuple[str, ...] = ()) -> Primitive:
    """Make a primitive from a numpy `forward(*inputs, **params)` and one rule per input.

    Pass `None` for an input that is not differentiable (indices, conditions); pass a single
    `PerInput(rule)` for a variadic op, or a single `Joint(rule)` to compute all inputs' gradients
    in one call. `params` names the keyword parameters that may also be passed
    positionally after the inputs (`sum(x, 0)` for `sum(x, axis=0)`). Returns the primitive;
    `primitive.op` is its Op.
    """
    variadic = len(vjps) == 1 and isinstance(vjps[0], (PerInput, Joint))
    op = Op(name, forward, vjps[0] if variadic else vjps, keep)
    n = None if variadic else len(vjps)

    primitive: Callable[..., Any]           # one of three signatures, by the number of rules
    if n == 1:
        def primitive(x, *args, **kw):
            try:
                if args:
                    kw.update(_positional(name, params, args))
                if isinstance(x, Tensor):
                    return record(op, (x.data,), (x._node or x,), x.requires_grad, kw)
                return forward(x, **kw)
            except _WRAPPED as e:
                raise op_error(name, (x, *args), kw, e) from None
    elif n == 2:
        def primitive(x, y, *args, **kw):
            try:
                if args:
                    kw.update(_positional(name, params, args))
                if isinstance(x, Tensor):
                    if isinstance(y, Tensor) and x.data.dtype is y.data.dtype:    # the common case, inlined
                        return record(op, (x.data, y.data), (x._node or x, y._node or y),
                                      x.requires_grad or y.requires_grad, kw)
                    return record(op, *_unpack(op, (x, y)), kw)
                if isinstance(y, Tensor):
                    return record(op, *_unpack(op, (x, y)), kw)
                return forward(x, y, **kw)
            except _WRAPPED as e:
                raise op_error(name, (x, y, *args), kw, e) from None
    else:
        def primitive(*args, **kw):
            try:
                if n is not None and len(args) != n:
                    raise ArgumentError(f"{name} takes {n} inputs, got {len(args)}")
                for a in args:
                    if isinstance(a, Tensor):
                        return record(op, *_unpack(op, args), kw)
                return forward(*args, **kw)
            except _WRAPPED as e:
                raise op_error(name, args, kw, e) from None
    prim = cast(Primitive, primitive)       # once per op definition, not per call
    prim.__name__ = prim.__qualname__ = name
    prim.op = op
    return prim


def record(op: Op, datas: tuple[Any, ...], parents: tuple[Any, ...], grad: bool, params: dict[str, Any]) -> Tensor:
    """Run `op`'s forward on the input arrays; record it if an input requires grad (or a Tape is open)."""
    out = op.forward(*datas, **params) if params else op.forward(*datas)
    if type(out) is not np.ndarray:
        out = np.asarray(out)
    out.setflags(write=False)      # what records save cannot be changed behind the tape's back
    tapes = _tape.ACTIVE_TAPES
    if not (grad or tapes) or not _tape.GRAD_ENABLED:
        return Tensor(out)
    rec = Record(op, parents, datas if op.keep_inputs else None, out if op.keep_ans else None,
                 params, out.shape, out.dtype, _tape.CURRENT_SCOPE, next_index())
    result = Tensor(out, grad, None, rec)
    if tapes:
        if not grad:
            rec.requires_grad = False
        for t in tapes:
            t.add(rec, result)
    if _tape.ANOMALY:
        anomaly.check_forward(rec, out)
    return result


def apply(op, args, params):
    """Run `op` on `args` (at least one of them a Tensor), as its primitive does."""
    return record(op, *_unpack(op, args), params)


def _unpack(op, args):
    """Input arrays, parent nodes and whether any input requires grad.

    Non-Tensor inputs (numbers, arrays) are constants. Arrays and integer/boolean Tensors at
    differentiable positions take the floating dtype of the Tensor inputs; two floating Tensors of
    different dtypes are an error (no silent promotion).
    """
    if len(args) == 2:           # fast path: a Tensor and a Python number
        x, y = args
        if type(y) is float or type(y) is int:
            return (x.data, y), (x._node or x, None), x.requires_grad
        if type(x) is float or type(x) is int:
            return (x, y.data), (None, y._node or y), y.requires_grad
    dtype = _float_dtype(op, args)
    datas, parents, grad = [], [], False
    for i, a in enumerate(args):
        if isinstance(a, Tensor):
            d = a.data
            parents.append(a._node or a)
            grad = grad or a.requires_grad
        else:
            d = a if isinstance(a, (np.ndarray, int, float)) else np.asarray(a)
            parents.append(None)
        if (dtype is not None and isinstance(d, np.ndarray) and d.dtype != dtype
                and d.dtype.kind in "fiub" and op.differentiable(i)):
            d = d.astype(dtype)
        datas.append(d)
    return tuple(datas), tuple(parents), grad


def _float_dtype(op, args):
    """The floating dtype shared by the Tensor inputs (None if there is none)."""
    dtype = None
    for a in args:
        if isinstance(a, Tensor) and a.data.dtype.kind == "f":
            if dtype is None:
                dtype = a.data.dtype
            elif a.data.dtype != dtype:
                shapes = " and ".join(f"{b.shape} {b.dtype}" for b in args if isinstance(b, Tensor))
                raise DTypeError(f"{op.name} of {shapes}{describe_scope(_tape.CURRENT_SCOPE)}: "
                                 "tapegrad does not mix float precisions silently; convert one "
                                 "operand with .astype()")
    return dtype


# Errors from numpy or Python inside an op become tapegrad errors naming the op (see op_error).
_WRAPPED = (ValueError, TypeError, IndexError, KeyError, AttributeError, ZeroDivisionError, OverflowError)


def _positional(name, params, args):
    if len(args) > len(params):
        raise ArgumentError(f"{name}: takes at most {len(params)} parameter(s) after its inputs "
                            f"({', '.join(params) or 'none'}), got {len(args)}")
    return zip(params, args)


def describe(value):
    """'(32, 10) float32' for arrays and Tensors, a repr for numbers, the type name otherwise."""
    if isinstance(value, (np.ndarray, Tensor)):
        return f"{value.shape} {value.dtype}"
    if isinstance(value, (bool, int, float, type(None))):
        return repr(value)
    return type(value).__name__


def op_error(name, values, params, cause):
    """A tapegrad error naming the op, its operands' shapes and dtypes, the scope, and the cause."""
    if isinstance(cause, TapegradError):
        return cause
    operands = " and ".join(describe(v) for v in values)
    extra = "".join(f", {k}={describe(v) if isinstance(v, np.ndarray) else repr(v)}" for k, v in params.items())
    cls = IndexOutOfRange if isinstance(cause, IndexError) else ArgumentError if isinstance(cause, TypeError) \
        else ShapeError
    return cls(f"{name} of {operands}{extra}{describe_scope(_tape.CURRENT_SCOPE)}: {cause}")


_F = TypeVar("_F", bound=Callable[..., Any])


def guarded(fn: _F) -> _F:
    """Decorator for public functions that are not primitives: their numpy/Python errors become tapegrad errors."""
    @functools.wraps(fn)
    def wrapper(*args, **kw):
        try:
            return fn(*args, **kw)
        except _WRAPPED as e:
            raise op_error(fn.__name__, args, kw, e) from None
    return cast(_F, wrapper)                # the wrapper keeps fn's signature (functools.wraps)
