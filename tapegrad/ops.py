"""The primitives: each one's numpy forward next to its derivative rule(s).

Rule signature: `rule(g, ans, *inputs, **params) -> gradient for that input`. Rules use tapegrad
primitives, methods and operators only, so they are plain numpy on arrays and recorded on Tensors.
"""
import builtins
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .checkpoint import generator_for
from .errors import ArgumentError, DTypeError, InvalidValueError, ShapeError
from .indexed import IndexedGrad
from .op import PerInput, Primitive, defop, describe, guarded, identity
from .tensor import Axis, Tensor, TensorLike


def check_axis(op, axis, ndim):
    """`axis` as a non-negative index into `ndim` axes; out of range is a ShapeError naming the op."""
    if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
        raise ArgumentError(f"{op}: axis must be an integer, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{op}: axis {axis} is out of range for {ndim} axes")
    return int(axis) % ndim


def _normalize_axis(axis, ndim):
    """A reduction's axes as a sorted tuple of non-negative indices (all of them for None)."""
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    return tuple(sorted(a % ndim if ndim else 0 for a in axes))


def _keepdims_shape(shape, axis):
    """`shape` with the reduced axes set to 1."""
    axes = _normalize_axis(axis, len(shape))
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _spread(g, x, axis, keepdims, scale=1.0):
    """A reduction's output gradient times `scale`, spread back over the reduced axes of `x`."""
    if not keepdims and axis is not None:
        g = g.reshape(_keepdims_shape(x.shape, axis))
    if type(g) is np.ndarray:                   # first order: a read-only view, not an array of x's size
        return np.broadcast_to(np.multiply(g, scale, dtype=g.dtype) if scale != 1.0 else g, x.shape)
    return broadcast_to(g * scale if scale != 1.0 else g, x.shape)


# Rules (lambdas) that call a primitive defined later in the module, or the primitive itself, need its
# type declared: mypy infers the others from defop's return type.
log: Primitive
where: Primitive
sign: Primitive
astype: Primitive
cos: Primitive

# -- elementwise arithmetic ----------------------------------------------------------------------
add = defop("add", np.add, identity, identity, keep="none")
sub = defop("sub", np.subtract, identity, lambda g, ans, x, y: -g, keep="none")
mul = defop("mul", np.multiply, lambda g, ans, x, y: g * y, lambda g, ans, x, y: g * x)
div = defop("div", np.true_divide, lambda g, ans, x, y: g / y, lambda g, ans, x, y: -g * ans / y, keep="both")
neg = defop("neg", np.negative, lambda g, ans, x: -g, keep="none")
pow = defop("pow", np.power,
            lambda g, ans, x, y: g * y * x ** (y - 1),
            lambda g, ans, x, y: g * ans * log(where(x > 0, x, 1)), keep="both")
maximum = defop("maximum", np.maximum,
                lambda g, ans, x, y: where(x == y, g * 0.5, where(x > y, g, 0)),
                lambda g, ans, x, y: where(x == y, g * 0.5, where(x < y, g, 0)))
minimum = defop("minimum", np.minimum,
                lambda g, ans, x, y: where(x == y, g * 0.5, where(x < y, g, 0)),
                lambda g, ans, x, y: where(x == y, g * 0.5, where(x > y, g, 0)))
where = defop("where", np.where, None,
              lambda g, ans, c, x, y: where(c, g, 0),
              lambda g, ans, c, x, y: where(c, 0, g))

# -- elementwise functions -----------------------------------------------------------------------
exp = defop("exp", np.exp, lambda g, ans, x: g * ans, keep="ans")
log = defop("log", np.log, lambda g, ans, x: g / x)
sqrt = defop("sqrt", np.sqrt, lambda g, ans, x: g / (ans * 2), keep="ans")
tanh = defop("tanh", np.tanh, lambda g, ans, x: g * (1 - ans * ans), keep="ans")
abs = defop("abs", np.abs, lambda g, ans, x: g * sign(x))
sign = defop("sign", np.sign, lambda g, ans, x: g * 0, keep="none")
relu = defop("relu", lambda x: np.maximum(x, 0), lambda g, ans, x: g * (ans > 0), keep="ans")
clip = defop("clip", lambda x, lo=None, hi=None: np.clip(x, lo, hi),
             lambda g, ans, x, lo=None, hi=None: where(ans == x, g, 0), keep="both", params=("lo", "hi"))


_HALF = {np.dtype(t): np.array(0.5, t) for t in (np.float16, np.float32, np.float64)}   # 0-d: cheaper than 0.5


def _sigmoid(x):
    half = _HALF.get(getattr(x, "dtype", None), 0.5)
    s = np.multiply(x, half)     # tanh(x / 2) / 2 + 1/2: stable for any x, unlike 1 / (1 + exp(-x))
    if type(s) is not np.ndarray:
        return np.tanh(s) * half + half
    np.tanh(s, out=s)
    s *= half
    s += half
    return s


sigmoid = defop("sigmoid", _sigmoid, lambda g, ans, x: g * ans * (1 - ans), keep="ans")
astype = defop("astype", lambda x, dtype: x.astype(dtype), lambda g, ans, x, dtype: astype(g, x.dtype),
               keep="none", params=("dtype",))


log1p = defop("log1p", np.log1p, lambda g, ans, x: g / (x + 1))
expm1 = defop("expm1", np.expm1, lambda g, ans, x: g * (ans + 1), keep="ans")
sin = defop("sin", np.sin, lambda g, ans, x: g * cos(x))
cos = defop("cos", np.cos, lambda g, ans, x: -g * sin(x))


def _erf(x):
    """erf elementwise through math.erf (the C library's, correctly rounded to about an ulp): numpy has none.

    One C-level pass over the entries; it measured faster than a vectorized series or continued fraction
    of full double accuracy at every size tried (100 to 10^6 entries). float32 stays float32.
    """
    x = np.asarray(x)
    flat = x.ravel()
    out = np.fromiter(map(math.erf, flat.tolist()), np.float64, flat.size).reshape(x.shape)
    return out.astype(x.dtype) if x.dtype.kind == "f" and x.dtype != np.float64 else out


_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)
_INV_SQRT2 = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
erf = defop("erf", _erf, lambda g, ans, x: g * (exp(-(x * x)) * _TWO_OVER_SQRT_PI))
erf.__doc__ = "The error function (a vectorized series / continued fraction, full double precision)."


def _softplus(x):
    return np.logaddexp(0, x)       # log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): no overflow


def _logsigmoid(x):
    return -np.logaddexp(0, -x)


softplus = defop("softplus", _softplus, lambda g, ans, x: g * sigmoid(x))
softplus.__doc__ = "log(1 + exp(x)), stable for any x (its derivative is sigmoid(x))."
logsigmoid = defop("logsigmoid", _logsigmoid, lambda g, ans, x: g * sigmoid(-x))
logsigmoid.__doc__ = "log(sigmoid(x)) = -softplus(-x), stable for any x."
leaky_relu = defop("leaky_relu", lambda x, negative_slope=0.01: np.where(x > 0, x, x * negative_slope),
                   lambda g, ans, x, negative_slope=0.01: where(x > 0, g, g * negative_slope),
                   params=("negative_slope",))
leaky_relu.__doc__ = "x where x > 0, negative_slope * x elsewhere (gradient negative_slope at 0)."


def _elu(x, alpha=1.0):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)) * alpha)


elu = defop("elu", _elu, lambda g, ans, x, alpha=1.0: where(x > 0, g, g * (ans + alpha)), keep="both",
            params=("alpha",))
elu.__doc__ = "x where x > 0, alpha * (exp(x) - 1) elsewhere."

_GELU_C = math.sqrt(2 / math.pi)


def _gelu(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(_GELU_C * (x + 0.044715 * x ** 3)))
    if approximate != "none":
        raise InvalidValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return 0.5 * x * (1 + _erf(x * _INV_SQRT2))


def _gelu_vjp(g, ans, x, approximate="none"):
    if approximate == "tanh":
        t = tanh((x + x * x * x * 0.044715) * _GELU_C)
        return g * ((t + 1) * 0.5 + x * (1 - t * t) * ((x * x * (3 * 0.044715) + 1) * (0.5 * _GELU_C)))
    return g * ((erf(x * _INV_SQRT2) + 1) * 0.5 + x * exp(x * x * -0.5) * _INV_SQRT_2PI)


gelu = defop("gelu", _gelu, _gelu_vjp, params=("approximate",))
gelu.__doc__ = ("x * Phi(x) (approximate='none', Phi by erf) or its tanh approximation "
                "0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (approximate='tanh').")


# -- matmul --------------------------------------------------------------------------------------
def _rows(a):
    """(..., n) -> (rows, n): a batch of row vectors as one matrix."""
    return a.reshape(math.prod(a.shape[:-1]), a.shape[-1])


def _matmul_forward(x, y):
    if y.ndim == 2:
        if x.ndim == 2:
            return np.dot(x, y)                       # less call overhead than np.matmul
        if x.ndim > 2 and x.flags.c_contiguous:       # a batch of rows times one matrix: one 2-d product
            return np.dot(_rows(x), y).reshape(x.shape[:-1] + y.shape[-1:])
    return np.matmul(x, y)


def _matmul_dx(g, ans, x, y):
    if y.ndim == 2 and g.ndim == 2:                   # (y g^T)^T: BLAS runs it up to 2x faster than g y^T
        return (y @ g.mT).mT
    if y.ndim == 2 and g.ndim > 2:                    # a batch of rows times one matrix: one 2-d product
        return (_rows(g) @ y.mT).reshape(g.shape[:-1] + y.shape[:1])
    if y.ndim == 1:                                   # (..., n) @ (n,) -> (...)
        return expand_dims(g, -1) * y
    if x.ndim == 1:                                   # (n,) @ (..., n, m) -> (..., m)
        return squeeze(expand_dims(g, -2) @ y.mT, -2)
    return g @ y.mT


def _matmul_dy(g, ans, x, y):
    if y.ndim == 1:
        if x.ndim == 1:
            return g * x
        return squeeze(x.mT @ expand_dims(g, -1), -1)
    if x.ndim == 1:
        return expand_dims(x, -1) * expand_dims(g, -2)
    if y.ndim == 2 and x.ndim > 2:       # a batch of rows times one matrix: one 2-d matmul, no batch of products
        return _rows(x).mT @ _rows(g)
    return x.mT @ g


matmul = defop("matmul", _matmul_forward, _matmul_dx, _matmul_dy)

# -- reductions ----------------------------------------------------------------------------------
_AXIS = ("axis", "keepdims")


def _count(shape, axis):
    n = 1
    for a in _normalize_axis(axis, len(shape)):
        n *= shape[a]
    return n


def _mean(x, axis=None, keepdims=False):
    total = np.add.reduce(x, axis=axis, keepdims=keepdims)
    return np.true_divide(total, _count(x.shape, axis), dtype=total.dtype if total.dtype.kind == "f" else None)


sum = defop("sum", lambda x, axis=None, keepdims=False: np.add.reduce(x, axis=axis, keepdims=keepdims),
            lambda g, ans, x, axis=None, keepdims=False: _spread(g, x, axis, keepdims), keep="none", params=_AXIS)
mean = defop("mean", _mean,
             lambda g, ans, x, axis=None, keepdims=False:
             _spread(g, x, axis, keepdims, 1 / (_count(x.shape, axis) or 1)),
             keep="none", params=_AXIS)


def _max_vjp(g, ans, x, axis=None, keepdims=False):
    hit = (x == ans.reshape(_keepdims_shape(x.shape, axis))).astype(x.dtype)
    return _spread(g, x, axis, keepdims) * (hit / hit.sum(axis=axis, keepdims=True))   # ties share equally


max = defop("max", lambda x, axis=None, keepdims=False: np.max(x, axis=axis, keepdims=keepdims), _max_vjp,
            keep="both", params=_AXIS)


def _logsumexp(x, axis=None, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else out.reshape(_reduced_shape(x.shape, axis))


def _reduced_shape(shape, axis):
    axes = _normalize_axis(axis, len(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)


logsumexp = defop("logsumexp", _logsumexp,
                  lambda g, ans, x, axis=None, keepdims=False:
                  _spread(g, x, axis, keepdims) * exp(x - _spread(ans, x, axis, keepdims)), keep="both", params=_AXIS)


def _softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


def _log_softmax(x, axis=-1):
    z = x - np.max(x, axis=axis, keepdims=True)
    z -= np.log(np.sum(np.exp(z), axis=axis, keepdims=True))
    return z


softmax = defop("softmax", _softmax,
                lambda g, ans, x, axis=-1: ans * (g - (g * ans).sum(axis=axis, keepdims=True)),
                keep="ans", params=("axis",))
log_softmax = defop("log_softmax", _log_softmax,
                    lambda g, ans, x, axis=-1: g - exp(ans) * g.sum(axis=axis, keepdims=True),
                    keep="ans", params=("axis",))

# -- einsum: each operand's gradient is an einsum of g with the others -------------------------
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _einsum_forward(*xs, subscripts):
    # numpy's path search (BLAS where it can) pays for itself from about 4096 entries or 3 operands on
    optimize = len(xs) > 2 or builtins.sum(np.size(x) for x in xs) > 4096
    return np.einsum(subscripts, *xs, optimize=optimize)


def _einsum_vjp(i, g, ans, xs, subscripts):
    ins, out = subscripts.split("->")
    ins = ins.split(",")
    target, deltas, used = [], [], set(subscripts)
    seen = set()
    for letter, n in zip(ins[i], xs[i].shape):
        if letter in seen:            # a repeated index (a diagonal): a fresh letter tied to it by an identity
            fresh = next(c for c in _LETTERS if c not in used)
            used.add(fresh)
            deltas.append((letter + fresh, np.eye(n, dtype=xs[i].dtype)))
            target.append(fresh)
        else:
            seen.add(letter)
            target.append(letter)
    others = [ins[j] for j in range(len(ins)) if j != i] + [d for d, _ in deltas]
    present = set(out).union(*others)
    kept = "".join(c for c in target if c in present)    # an index summed out of x alone: broadcast back
    operands = [g] + [xs[j] for j in range(len(xs)) if j != i] + [d for _, d in deltas]
    spec = ",".join([out] + others) + "->" + kept
    gi = _einsum(*operands, subscripts=spec)
    if len(kept) != len(target):
        gi = broadcast_to(gi.reshape(tuple(n if c in present else 1 for c, n in zip(target, xs[i].shape))),
                          xs[i].shape)
    return gi


_einsum = defop("einsum", _einsum_forward, PerInput(_einsum_vjp), keep="inputs")


def _parse_einsum(subscripts, shapes):
    """Explicit subscripts 'ij,jk->ik' (ellipses expanded to letters, implicit output made explicit)."""
    spec = subscripts.replace(" ", "")
    ins, arrow, out = spec.partition("->")
    ins = ins.split(",")
    if len(ins) != len(shapes):
        raise ArgumentError(f"einsum: subscripts {subscripts!r} name {len(ins)} operand(s), got {len(shapes)}")
    free = [c for c in _LETTERS if c not in spec]
    ell = 0
    for s, shape in zip(ins, shapes):
        if "..." in s:
            ell = builtins.max(ell, len(shape) - (len(s) - 3))
    dots = "".join(free[:ell])
    expanded = []
    for s, shape in zip(ins, shapes):
        if "..." in s:
            k = len(shape) - (len(s) - 3)
            s = s.replace("...", dots[ell - k:] if k else "")
        if not all(c in _LETTERS for c in s):
            raise ArgumentError(f"einsum: subscripts {subscripts!r}: only letters, ',', '->' and '...'")
        if len(s) != len(shape):
            raise ShapeError(f"einsum: subscripts {subscripts!r} give an operand of shape {shape} {len(s)} indices")
        expanded.append(s)
    if arrow:
        out = out.replace("...", dots)
    else:
        letters = "".join(expanded)
        out = dots + "".join(sorted((c for c in set(letters) if letters.count(c) == 1 and c not in dots),
                                     key=lambda c: (c.isupper(), c)))
    return ",".join(expanded) + "->" + out




@guarded
def einsum(subscripts: str, *operands: TensorLike) -> Tensor:
    """Einstein summation, as numpy.einsum: einsum("bij,bjk->bik", a, b); any number of operands,
    ellipses, repeated indices (diagonals). Each operand's gradient is an einsum of the output gradient
    with the other operands."""
    if not isinstance(subscripts, str):
        raise ArgumentError(f"einsum takes the subscripts string first: einsum('ij,jk->ik', a, b), got "
                            f"{describe(subscripts)}")
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        raise ArgumentError("einsum takes its operands as separate arguments: einsum('ij,jk->ik', a, b), "
                            f"got one {type(operands[0]).__name__} of {len(operands[0])}")
    if not operands:
        raise ArgumentError("einsum: needs at least one operand")
    spec = _parse_einsum(subscripts, [np.shape(_data(x)) for x in operands])
    return _einsum(*operands, subscripts=spec)


min = defop("min", lambda x, axis=None, keepdims=False: np.min(x, axis=axis, keepdims=keepdims), _max_vjp,
            keep="both", params=("axis", "keepdims"))     # the rule finds where x equals the result: ties share


def _var_vjp(g, ans, x, axis=None, ddof=0, keepdims=False):
    n = _count(x.shape, axis)
    return _spread(g, x, axis, keepdims, 2 / (n - ddof)) * (x - x.mean(axis=axis, keepdims=True))


def _std_vjp(g, ans, x, axis=None, ddof=0, keepdims=False):
    safe = where(ans == 0, 1, ans)       # the gradient at a zero deviation is 0, not NaN
    return _spread(g / safe, x, axis, keepdims, 1 / (_count(x.shape, axis) - ddof)) * \
        (x - x.mean(axis=axis, keepdims=True))


_var = defop("var", lambda x, axis=None, ddof=0, keepdims=False: np.var(x, axis=axis, ddof=ddof, keepdims=keepdims),
             _var_vjp, keep="inputs")
_std = defop("std", lambda x, axis=None, ddof=0, keepdims=False: np.std(x, axis=axis, ddof=ddof, keepdims=keepdims),
             _std_vjp, keep="both")


def _axes(op, axis, ndim):
    """A reduction's `axis` (None, an int or a tuple) with negative entries made non-negative, checked."""
    if axis is None:
        return None
    if isinstance(axis, (tuple, list)):
        axes = tuple(check_axis(op, a, ndim) for a in axis)
        if len(set(axes)) != len(axes):
            raise ShapeError(f"{op}: repeated axis in {tuple(axis)}")
        return axes
    return check_axis(op, axis, ndim)


@guarded
def var(x: TensorLike, axis: Axis = None, ddof: int = 0, keepdims: bool = False) -> Tensor:
    """Variance over `axis` (all axes for None) with divisor N - ddof, as numpy.var."""
    return _var(x, axis=_axes("var", axis, np.ndim(_data(x))), ddof=ddof, keepdims=keepdims)


@guarded
def std(x: TensorLike, axis: Axis = None, ddof: int = 0, keepdims: bool = False) -> Tensor:
    """Standard deviation, as numpy.std; its gradient where the deviation is 0 is 0 (not NaN)."""
    return _std(x, axis=_axes("std", axis, np.ndim(_data(x))), ddof=ddof, keepdims=keepdims)


def _norm2_vjp(g, ans, x, axis=None, keepdims=False):
    safe = where(ans == 0, 1, ans)       # x = 0: a subgradient 0, not 0/0
    return _spread(g / safe, x, axis, keepdims) * x


def _normp(x, p, axis=None, keepdims=False):
    return np.sum(np.abs(x) ** p, axis=axis, keepdims=keepdims) ** (1 / p)


def _normp_vjp(g, ans, x, p, axis=None, keepdims=False):
    safe = where(ans == 0, 1, ans)
    return _spread(g / safe ** (p - 1), x, axis, keepdims) * (abs(x) ** (p - 1) * sign(x))


_norm2 = defop("norm2", lambda x, axis=None, keepdims=False: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims)),
               _norm2_vjp, keep="both")
_normp_op = defop("normp", _normp, _normp_vjp, keep="both")


@guarded
def norm(x: TensorLike, ord: float = 2, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """The vector p-norm (sum |x|^ord)^(1/ord) over `axis` (all entries for None, so a matrix's 2-norm here
    is its Frobenius norm, as torch.norm, not numpy's spectral norm); ord >= 1 or inf.

    At x = 0 (a kink) the gradient is 0 for every ord, not NaN: the 2-norm's x / |x| reads 0 / 0 there.
    """
    ax = _axes("norm", axis, np.ndim(_data(x)))
    if ord == 2:
        return _norm2(x, axis=ax, keepdims=keepdims)
    if ord == 1:
        return sum(abs(x), axis=ax, keepdims=keepdims)
    if ord == np.inf:
        return max(abs(x), axis=ax, keepdims=keepdims)
    if not isinstance(ord, numbers.Real) or isinstance(ord, bool) or not ord >= 1:
        raise InvalidValueError(f"norm: ord must be a number >= 1 or inf, got {ord!r}")
    return _normp_op(x, p=float(ord), axis=ax, keepdims=keepdims)


def _arg(fn, name):
    def arg(x, axis=None, keepdims=False):
        data = _data(x)
        if axis is not None:
            axis = check_axis(name, axis, np.ndim(data))
        out = fn(data, axis=axis, keepdims=keepdims)
        return Tensor(np.asarray(out)) if isinstance(x, Tensor) else out
    arg.__name__ = arg.__qualname__ = name
    arg.__doc__ = (f"Indices of the {name[3:]}imum along `axis` (of the flattened array for None): "
                   "not differentiable; an integer Tensor for a Tensor, an array otherwise.")
    return guarded(arg)


argmax = _arg(np.argmax, "argmax")
argmin = _arg(np.argmin, "argmin")


# -- shape -------------------------------------------------------------------------------------
_reshape_back = lambda g, ans, x, **_: g.reshape(x.shape)  # noqa: E731  (shared by reshape-like ops)
_reshape = defop("reshape", lambda x, shape: np.reshape(x, shape), _reshape_back, keep="none")
expand_dims = defop("expand_dims", lambda x, axis: np.expand_dims(x, axis), _reshape_back, keep="none",
                    params=("axis",))
squeeze = defop("squeeze", lambda x, axis=None: np.squeeze(x, axis), _reshape_back, keep="none",
                params=("axis",))
broadcast_to = defop("broadcast_to", lambda x, shape: np.broadcast_to(x, shape),
                     identity, keep="none", params=("shape",))  # the sweep sums the broadcast axes back
_transpose = defop("transpose", lambda x, axes=None: np.transpose(x, axes),
                   lambda g, ans, x, axes=None: g.transpose(None if axes is None else tuple(np.argsort(axes))),
                   keep="none")


def _scatter_add(g, index, shape):
    return IndexedGrad(g, index, shape).dense()


def _indexed_grad(g, index, shape):
    """Gradient of x[index]: sparse on arrays (the sweep adds it in place), recorded on Tensors."""
    return IndexedGrad(g, index, shape) if type(g) is np.ndarray else scatter_add(g, index, shape)


getitem = defop("getitem", lambda x, index: x[index],
                lambda g, ans, x, index: _indexed_grad(g, index, x.shape), keep="none", params=("index",))
scatter_add = defop("scatter_add", _scatter_add, lambda g, ans, x, index, shape: g[index], keep="none",
                    params=("index", "shape"))
def _take(x, indices, axis=0):
    kind = np.asarray(indices).dtype.kind
    if kind not in "iu":
        raise DTypeError(f"take: indices must be integers, got dtype {np.asarray(indices).dtype}")
    return np.take(x, indices, axis=axis)


take = defop("take", _take,
             lambda g, ans, x, indices, axis=0:
             _indexed_grad(g, (slice(None),) * (axis % x.ndim) + (indices,), x.shape), None, params=("axis",))
take.__doc__ = "Gather rows (embedding lookup): `take(W, ids)` is W[ids] along `axis`; ids may repeat."


_flip: Primitive              # the rules below call their own primitive
_cumsum: Primitive
_roll: Primitive
_flip = defop("flip", lambda x, axis: np.flip(x, axis), lambda g, ans, x, axis: _flip(g, axis=axis), keep="none")
_cumsum = defop("cumsum", lambda x, axis: np.cumsum(x, axis=axis),
                lambda g, ans, x, axis: _flip(_cumsum(_flip(g, axis=axis), axis=axis), axis=axis), keep="none")
_roll = defop("roll", lambda x, shift, axis: np.roll(x, shift, axis),
              lambda g, ans, x, shift, axis: _roll(g, shift=tuple(-s for s in shift), axis=axis), keep="none")
_pad = defop("pad", lambda x, pad_width, constant_values=0:
             np.pad(x, pad_width, mode="constant", constant_values=constant_values) if x.ndim else x.copy(),
             lambda g, ans, x, pad_width, constant_values=0:
             g[tuple(slice(b, b + n) for (b, _), n in zip(pad_width, x.shape))], keep="none")


def _tile_vjp(g, ans, x, reps):
    lead = len(reps) - x.ndim            # numpy prepends axes of length 1 to x when reps is longer
    shape = (1,) * lead + tuple(x.shape)
    inter = tuple(n for r, s in zip(reps, shape) for n in (r, s))
    return g.reshape(inter).sum(axis=tuple(range(0, 2 * len(reps), 2))).reshape(x.shape)


_tile = defop("tile", lambda x, reps: np.tile(x, reps), _tile_vjp, keep="none")


def _repeat_vjp(g, ans, x, repeats, axis):
    if isinstance(repeats, numbers.Integral):           # (.., n, .., ) -> (.., n, r, ..): sum the copies
        shape = x.shape[:axis] + (x.shape[axis], repeats) + x.shape[axis + 1:]
        return g.reshape(shape).sum(axis=axis + 1)
    index = np.repeat(np.arange(x.shape[axis]), repeats)
    return _indexed_grad(g, (slice(None),) * axis + (index,), x.shape)


_repeat = defop("repeat", lambda x, repeats, axis: np.repeat(x, repeats, axis), _repeat_vjp, keep="none")


def _along_axis_index(indices, shape, axis):
    """The fancy index with which x[index] is np.take_along_axis(x, indices, axis)."""
    ndim = len(shape)
    return tuple(indices if d == axis else
                 np.arange(shape[d]).reshape((1,) * d + (-1,) + (1,) * (ndim - d - 1)) for d in range(ndim))


def _take_along_axis(x, indices, axis):
    if np.asarray(indices).dtype.kind not in "iu":
        raise DTypeError(f"take_along_axis: indices must be integers, got dtype {np.asarray(indices).dtype}")
    return np.take_along_axis(x, indices, axis)


_take_along = defop("take_along_axis", _take_along_axis,
                    lambda g, ans, x, indices, axis: _indexed_grad(g, _along_axis_index(indices, x.shape, axis),
                                                                   x.shape),
                    None, params=("axis",))
tril: Primitive               # each rule calls its own primitive
triu: Primitive
tril = defop("tril", lambda x, k=0: np.tril(x, k), lambda g, ans, x, k=0: tril(g, k=k), keep="none", params=("k",))
triu = defop("triu", lambda x, k=0: np.triu(x, k), lambda g, ans, x, k=0: triu(g, k=k), keep="none", params=("k",))
tril.__doc__ = "The lower triangle of the last two axes (entries above diagonal k zeroed), as numpy.tril."
triu.__doc__ = "The upper triangle of the last two axes (entries below diagonal k zeroed), as numpy.triu."




def _concat_vjp(i, g, ans, xs, axis, offsets):
    return g[(slice(None),) * axis + (slice(offsets[i], offsets[i + 1]),)]


def _stack_vjp(i, g, ans, xs, axis):
    return g[(slice(None),) * axis + (i,)]


_concat = defop("concat", lambda *xs, axis, offsets: np.concatenate(xs, axis=axis), PerInput(_concat_vjp),
                keep="none")
_stack = defop("stack", lambda *xs, axis: np.stack(xs, axis=axis), PerInput(_stack_vjp), keep="none")
_dropout = defop("dropout", np.multiply, lambda g, ans, x, mask: g * mask, None)


# -- public wrappers with numpy-style signatures --------------------------------------------------
@guarded
def reshape(x: TensorLike, *shape: int | Sequence[int]) -> Tensor:
    """`x` with a new shape (`reshape(x, 2, 3)` or `reshape(x, (2, 3))`); -1 infers one axis."""
    dims = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return _reshape(x, shape=tuple(dims))


@guarded
def transpose(x: TensorLike, *axes: int | Sequence[int] | None) -> Tensor:
    """Permute the axes (reverse them when none are given); negative axes count from the end."""
    order: Any = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list, type(None))) else axes
    if not order:
        return _transpose(x, axes=None)
    ndim = np.ndim(_data(x))
    perm = tuple(check_axis("transpose", a, ndim) for a in order)
    if sorted(perm) != list(range(ndim)):
        raise ShapeError(f"transpose: axes {tuple(order)} are not a permutation of the {ndim} axes of shape "
                         f"{np.shape(_data(x))}")
    return _transpose(x, axes=perm)


def _sequence(op, tensors):
    """The list of tensors a variadic op joins; a lone Tensor or array is the classic slip `op(a, b)`."""
    if isinstance(tensors, (Tensor, np.ndarray)):
        raise ArgumentError(f"{op} takes a list of tensors: {op}([a, b, ...], axis=...), got a single "
                            f"{describe(tensors)} (did you write {op}(a, b)?)")
    tensors = list(tensors)
    if not tensors:
        raise ShapeError(f"{op}: needs at least one tensor")
    return tensors


@guarded
def concat(tensors: Iterable[TensorLike], axis: int = 0) -> Tensor:
    """Join a sequence of tensors along an existing axis."""
    ts = _sequence("concat", tensors)
    axis = check_axis("concat", axis, np.ndim(_data(ts[0])))
    offsets = np.cumsum([0] + [np.shape(_data(t))[axis] for t in ts]).tolist()
    return _concat(*ts, axis=axis, offsets=tuple(offsets))


@guarded
def stack(tensors: Iterable[TensorLike], axis: int = 0) -> Tensor:
    """Join a sequence of same-shape tensors along a new axis."""
    ts = _sequence("stack", tensors)
    return _stack(*ts, axis=check_axis("stack", axis, np.ndim(_data(ts[0])) + 1))


@guarded
def split(x: TensorLike, sections: Any, axis: int = -1) -> tuple[Tensor, ...]:
    """Split into `sections` equal parts (an int) or at the given indices; each part is a getitem."""
    n = np.shape(_data(x))[axis]
    if isinstance(sections, numbers.Integral):
        if sections <= 0 or n % sections:
            raise ShapeError(f"split: axis {axis} of length {n} does not divide into {sections} equal parts")
        bounds = list(range(0, n + 1, n // sections))
    else:
        bounds = [0, *sections, n]
    lead = (slice(None),) * (axis % np.ndim(_data(x)))
    return tuple(getitem(x, lead + (slice(a, b),)) for a, b in zip(bounds[:-1], bounds[1:]))


@guarded
def dropout(x, p, rng, training=True):
    """Zero each element with probability `p` (using the generator `rng`), scale the rest by 1/(1-p)."""
    if not training or p == 0:
        return x
    if not 0 <= p < 1:
        raise InvalidValueError(f"dropout: p must be in [0, 1), got {p}")
    data = _data(x)
    mask = (generator_for(rng).random(np.shape(data)) >= p).astype(data.dtype) / np.asarray(1 - p, data.dtype)
    return _dropout(x, mask)


@guarded
def one_hot(indices: TensorLike, num_classes: int, dtype: DTypeLike | None = None) -> Tensor:
    """Non-differentiable: (..., ) integer indices -> (..., num_classes) floats."""
    idx = _int_array(indices, "one_hot")
    if idx.size and (idx.min() < 0 or idx.max() >= num_classes):
        raise ShapeError(f"one_hot: indices must lie in [0, {num_classes}), got range "
                         f"[{idx.min()}, {idx.max()}] in an array of shape {idx.shape}")
    if isinstance(indices, Tensor):   # through ops, so that a compiled step reads new indices each call
        return astype(expand_dims(indices, -1) == np.arange(num_classes), dtype or _default_dtype())
    out = np.zeros(idx.shape + (num_classes,), dtype or _default_dtype())
    np.put_along_axis(out, idx[..., None], 1, axis=-1)
    return Tensor(out)


def _flat_axes(x, axis, op):
    """(x, axis): None flattens x (numpy's convention for cumsum, roll, repeat); an int is normalized."""
    if axis is None:
        return reshape(x, -1), 0
    return x, check_axis(op, axis, np.ndim(_data(x)))


@guarded
def cumsum(x: TensorLike, axis: int | None = None) -> Tensor:
    """Running sums along `axis` (of the flattened tensor for None), as numpy.cumsum."""
    x, axis = _flat_axes(x, axis, "cumsum")
    return _cumsum(x, axis=axis)


@guarded
def flip(x: TensorLike, axis: Axis = None) -> Tensor:
    """Reverse the order along `axis` (an int, a tuple, or every axis for None), as numpy.flip."""
    ndim = np.ndim(_data(x))
    axes = tuple(range(ndim)) if axis is None else _axes("flip", axis, ndim)
    return _flip(x, axis=axes if isinstance(axes, tuple) else (axes,))


@guarded
def roll(x: TensorLike, shift: Any, axis: Axis = None) -> Tensor:
    """Shift entries cyclically by `shift` along `axis` (of the flattened tensor for None), as numpy.roll."""
    if axis is None:
        shape = np.shape(_data(x))
        return reshape(_roll(reshape(x, -1), shift=(int(shift),), axis=(0,)), shape)
    ndim = np.ndim(_data(x))
    axes = _axes("roll", axis, ndim)
    axes = axes if isinstance(axes, tuple) else (axes,)
    shifts = tuple(int(s) for s in np.broadcast_to(shift, (len(axes),)))
    return _roll(x, shift=shifts, axis=axes)


@guarded
def pad(x: TensorLike, pad_width: Any, constant_values: float = 0) -> Tensor:
    """Pad with a constant (numpy.pad's constant mode): pad_width is n, (before, after) or one pair per axis."""
    ndim = np.ndim(_data(x))
    widths = np.broadcast_to(np.asarray(pad_width), (ndim, 2))
    if widths.dtype.kind not in "iu" or (widths < 0).any():
        raise InvalidValueError(f"pad: pad_width must be non-negative integers, got {pad_width!r}")
    pairs = tuple((int(b), int(a)) for b, a in widths)
    if not isinstance(constant_values, numbers.Real):
        raise InvalidValueError(f"pad: constant_values must be a number, got {describe(constant_values)}")
    return _pad(x, pad_width=pairs, constant_values=constant_values)


@guarded
def tile(x: TensorLike, reps: Any) -> Tensor:
    """Repeat the whole tensor `reps` times per axis, as numpy.tile."""
    reps = (int(reps),) if isinstance(reps, numbers.Integral) else tuple(int(r) for r in reps)
    ndim = np.ndim(_data(x))
    reps = (1,) * (ndim - len(reps)) + reps
    return _tile(x, reps=reps)


@guarded
def repeat(x: TensorLike, repeats: int | ArrayLike, axis: int | None = None) -> Tensor:
    """Repeat each entry `repeats` times (an int, or one count per entry) along `axis` (flattened for None),
    as numpy.repeat."""
    x, axis = _flat_axes(x, axis, "repeat")
    if not isinstance(repeats, numbers.Integral):
        repeats = np.asarray(repeats)
        if repeats.dtype.kind not in "iu":
            raise DTypeError(f"repeat: repeats must be integers, got dtype {repeats.dtype}")
        if repeats.ndim == 0 or repeats.size == 1:
            repeats = int(repeats.reshape(-1)[0])
    if isinstance(repeats, numbers.Integral):
        if repeats < 0:
            raise InvalidValueError(f"repeat: repeats must be non-negative, got {repeats}")
        repeats = int(repeats)
    return _repeat(x, repeats=repeats, axis=axis)


@guarded
def take_along_axis(x: TensorLike, indices: TensorLike, axis: int | None) -> Tensor:
    """Pick entries along `axis` by `indices` (same number of axes as x), as numpy.take_along_axis; the
    gradient of an index picked repeatedly accumulates. axis None: x is flattened."""
    idx = np.asarray(_data(indices))
    if idx.dtype.kind not in "iu":
        raise DTypeError(f"take_along_axis: indices must be integers, got dtype {idx.dtype} with shape {idx.shape}")
    x, axis = _flat_axes(x, axis, "take_along_axis")
    if idx.ndim != np.ndim(_data(x)):
        raise ShapeError(f"take_along_axis: indices have {idx.ndim} axes, x has {np.ndim(_data(x))} "
                         f"(shapes {idx.shape} and {np.shape(_data(x))}); they need the same number")
    return _take_along(x, idx, axis=axis)


def _default_dtype():
    from .tensor import get_default_dtype
    return get_default_dtype()


def _data(x):
    return x.data if isinstance(x, Tensor) else x


def _int_array(x, op):
    arr = np.asarray(_data(x))
    if arr.dtype.kind not in "iu":
        raise DTypeError(f"{op}: expected integer indices, got dtype {arr.dtype} with shape {arr.shape}")
    return arr


# -- attach operators and methods to Tensor ---------------------------------------------------
def _getitem_method(self, index):
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return getitem(self, index)


def _comparison(ufunc):
    def compare(self, other):
        return Tensor(ufunc(self.data, _data(other)))
    return compare


def _iter(self):
    for i in range(len(self)):
        yield self[i]


def _reflected(fn):
    return lambda self, other: fn(other, self)


for _name, _fn in [("add", add), ("sub", sub), ("mul", mul), ("truediv", div), ("pow", pow), ("matmul", matmul)]:
    setattr(Tensor, f"__{_name}__", _fn)
    setattr(Tensor, f"__r{_name}__", _reflected(_fn))
for _name, _method in [("neg", neg), ("getitem", _getitem_method), ("iter", _iter)]:
    setattr(Tensor, f"__{_name}__", _method)   # setattr: tensor.py declares these for type checkers only
for _name, _ufunc in [("lt", np.less), ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal),
                      ("eq", np.equal), ("ne", np.not_equal)]:
    setattr(Tensor, f"__{_name}__", _comparison(_ufunc))
for _f in [exp, log, sqrt, tanh, sigmoid, relu, abs, clip, log1p, expm1, sin, cos, sum, mean, max, min, var, std,
           argmax, argmin, cumsum, logsumexp, softmax, log_softmax, reshape, transpose, expand_dims, squeeze,
           broadcast_to, astype, repeat]:
    setattr(Tensor, _f.__name__, _f)


def _matrix_transpose(self):
    if self.ndim < 2:
        raise ShapeError(f"mT: swaps the last two axes, so it needs at least 2, got shape {self.shape}")
    return _transpose(self, axes=tuple(range(self.ndim - 2)) + (self.ndim - 1, self.ndim - 2))


for _name, _prop in [("T", property(lambda self: transpose(self))), ("mT", property(_matrix_transpose))]:
    setattr(Tensor, _name, _prop)
