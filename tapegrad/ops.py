"""The primitives: each one's numpy forward next to its derivative rule(s).

Rule signature: `rule(g, ans, *inputs, **params) -> gradient for that input`. Rules use tapegrad
primitives, methods and operators only, so they are plain numpy on arrays and recorded on Tensors.
"""
import math
import numbers

import numpy as np

from .errors import ArgumentError, DTypeError, InvalidValueError, ShapeError
from .checkpoint import generator_for
from .indexed import IndexedGrad
from .op import PerInput, defop, describe, guarded, identity
from .tensor import Tensor


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
    if type(g) is np.ndarray:                   # first order: one C-level broadcasting fill
        out = np.empty(x.shape, g.dtype)
        np.multiply(g, scale, out=out)
        return out
    return broadcast_to(g * scale if scale != 1.0 else g, x.shape)


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


def _sigmoid(x):
    s = np.tanh(x * 0.5)     # stable for any x, unlike 1 / (1 + exp(-x))
    s *= 0.5
    s += 0.5
    return s


sigmoid = defop("sigmoid", _sigmoid, lambda g, ans, x: g * ans * (1 - ans), keep="ans")
astype = defop("astype", lambda x, dtype: x.astype(dtype), lambda g, ans, x, dtype: astype(g, x.dtype),
               keep="none", params=("dtype",))


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
             lambda g, ans, x, axis=None, keepdims=False: _spread(g, x, axis, keepdims, 1 / (_count(x.shape, axis) or 1)),
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
def reshape(x, *shape):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return _reshape(x, shape=tuple(shape))


@guarded
def transpose(x, *axes):
    """Permute the axes (reverse them when none are given); negative axes count from the end."""
    axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list, type(None))) else axes
    if not axes:
        return _transpose(x, axes=None)
    ndim = np.ndim(_data(x))
    perm = tuple(check_axis("transpose", a, ndim) for a in axes)
    if sorted(perm) != list(range(ndim)):
        raise ShapeError(f"transpose: axes {tuple(axes)} are not a permutation of the {ndim} axes of shape "
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
def concat(tensors, axis=0):
    """Join a sequence of tensors along an existing axis."""
    tensors = _sequence("concat", tensors)
    axis = check_axis("concat", axis, np.ndim(_data(tensors[0])))
    offsets = np.cumsum([0] + [np.shape(_data(t))[axis] for t in tensors]).tolist()
    return _concat(*tensors, axis=axis, offsets=tuple(offsets))


@guarded
def stack(tensors, axis=0):
    """Join a sequence of same-shape tensors along a new axis."""
    tensors = _sequence("stack", tensors)
    return _stack(*tensors, axis=check_axis("stack", axis, np.ndim(_data(tensors[0])) + 1))


@guarded
def split(x, sections, axis=-1):
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
def one_hot(indices, num_classes, dtype=None):
    """Non-differentiable: (..., ) integer indices -> (..., num_classes) floats."""
    idx = _int_array(indices, "one_hot")
    if idx.size and (idx.min() < 0 or idx.max() >= num_classes):
        raise ShapeError(f"one_hot: indices must lie in [0, {num_classes}), got range "
                         f"[{idx.min()}, {idx.max()}] in an array of shape {idx.shape}")
    out = np.zeros(idx.shape + (num_classes,), dtype or _default_dtype())
    np.put_along_axis(out, idx[..., None], 1, axis=-1)
    return Tensor(out)


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
Tensor.__neg__ = neg
Tensor.__getitem__ = _getitem_method
Tensor.__iter__ = _iter
for _name, _ufunc in [("lt", np.less), ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal),
                      ("eq", np.equal), ("ne", np.not_equal)]:
    setattr(Tensor, f"__{_name}__", _comparison(_ufunc))
for _f in [exp, log, sqrt, tanh, sigmoid, relu, abs, clip, sum, mean, max, logsumexp, softmax, log_softmax,
           reshape, transpose, expand_dims, squeeze, broadcast_to, astype]:
    setattr(Tensor, _f.__name__, _f)
Tensor.T = property(lambda self: transpose(self))
Tensor.mT = property(lambda self: _transpose(self, axes=tuple(range(self.ndim - 2)) + (self.ndim - 1, self.ndim - 2)))
