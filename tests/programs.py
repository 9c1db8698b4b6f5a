"""A differential fuzzer: seeded random programs over tapegrad's ops, checked against numpy and finite differences.

A program is data: input arrays, constant arrays and a list of steps (an op spec, its arguments and the
source template it is called with). The same program runs three ways:

    run_tapegrad(p, leaves)  exec of the program's own printed source (so what is printed is what ran)
    run_numpy(p, arrays)     each spec's numpy reference, step by step (the forward-value oracle)
    p.source()               paste-able Python: `x0 = tg.tensor(np.array(...), requires_grad=True)` ...

`check(p)` compares, in float64, the forward values with numpy, the gradients of `loss.backward()` and of
`tg.grad` with central finite differences of the numpy run, and a Hessian-vector product (`tg.grad` with
`create_graph=True`, then the gradient of <g, v>) with finite differences of the gradient along v.
See docs/testing.md for the tolerances and how to reproduce a failure:

    python tests/programs.py SEED        # prints the program and its errors
"""
import math
import re
import sys
from dataclasses import dataclass, field

import numpy as np

import tapegrad as tg

MARGIN = 0.02          # kinks and domain edges are kept at least this far from every input of an op
MAX_ABS = 1e3          # a step whose value leaves [-MAX_ABS, MAX_ABS] (or is not finite) is dropped
MAX_SIZE = 48          # elements of one value
FD_EPS, HVP_EPS = 1e-6, 1e-5
TOL = {"forward": 1e-8, "grad": 1e-6, "hvp": 1e-5}


# -- program data --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ref:
    """A value of the program (an input or a step's output), or a constant array, by name."""
    name: str


@dataclass
class Step:
    outs: tuple
    spec: "Spec"
    args: tuple
    kw: dict
    form: str
    multi: bool = False      # the op returns a tuple (split), even of one value

    def line(self):
        call = self.form.format(*[fmt(a) for a in self.args], **{k: fmt(v) for k, v in self.kw.items()})
        return f"{', '.join(self.outs)}{',' if self.multi and len(self.outs) == 1 else ''} = {call}"


@dataclass
class Program:
    seed: int
    inputs: dict = field(default_factory=dict)      # name -> float64 array (leaves that require grad)
    consts: dict = field(default_factory=dict)      # name -> array (indices, conditions, targets, weights)
    steps: list = field(default_factory=list)
    loss: str = ""

    def body(self):
        return "\n".join(s.line() for s in self.steps)

    def source(self):
        head = [f"# tests/programs.py seed {self.seed}", "import numpy as np", "import tapegrad as tg"]
        head += [f"{k} = tg.tensor({literal(v)}, requires_grad=True)" for k, v in self.inputs.items()]
        head += [f"{k} = {literal(v)}" for k, v in self.consts.items()]
        return "\n".join(head) + "\n" + self.body() + f"\ngrads = tg.grad({self.loss}, [{', '.join(self.inputs)}])\n"

    def ops(self):
        """The labels of the specs its steps use (the final weighted sum left out)."""
        return [s.spec.label for s in self.steps if s.spec not in (WSUM, TOTAL)]


def literal(a):
    a = np.asarray(a)
    return f"np.array({a.tolist()!r})" if a.dtype.kind in "fb" or a.size else f"np.array({a.tolist()!r}, dtype=int)"


def fmt(a):
    """Source text of an argument: a value's name, a Python literal, or a tuple/list of them."""
    if isinstance(a, Ref):
        return a.name
    if isinstance(a, tuple):
        return "(" + ", ".join(fmt(b) for b in a) + ("," if len(a) == 1 else "") + ")"
    if isinstance(a, list):
        return "[" + ", ".join(fmt(b) for b in a) + "]"
    if a is Ellipsis:
        return "..."
    if isinstance(a, float) and a == math.inf:
        return "np.inf"
    return repr(a)


def resolve(a, env):
    if isinstance(a, Ref):
        return env[a.name]
    if isinstance(a, (tuple, list)):
        return type(a)(resolve(b, env) for b in a)
    return a


# -- op specs ------------------------------------------------------------------------------------
@dataclass
class Spec:
    """One op. `make(gen, x)` picks arguments around the array `x` (a Ref's value) and returns
    (args, kw) or None; `ref(*args, **kw)` is numpy's answer; `ok(*args, **kw)` says whether the
    numpy arguments are inside the domain (away from kinks); `forms` are source templates
    ({0}, {1}... are the args, {name} the keywords); `hvp=False` keeps it out of second-order checks."""
    name: str
    make: object
    ref: object
    forms: tuple = ()
    ok: object = None
    hvp: bool = True
    label: str = ""          # set below OPS: the name, numbered when several specs share it

    def available(self):
        return self.name.startswith("_") or hasattr(tg, self.name)

    def usable_forms(self, args=(), kw=()):
        """The forms whose methods exist and that take these arguments; default `tg.name(args, key=value)`."""
        forms = self.forms or (f"tg.{self.name}(" + ", ".join([f"{{{i}}}" for i in range(len(args))]
                                                             + [f"{k}={{{k}}}" for k in kw]) + ")",)
        return [f for f in forms if all(hasattr(tg.Tensor, m) for m in re.findall(r"\}\.(\w+)", f))
                and (not args or (all(f"{{{k}}}" in f for k in kw) and f.count("{") - len(kw) == len(args)))]


def far(*pairs):
    """Whether every a differs from every b by at least MARGIN (broadcasting)."""
    return all(np.all(np.abs(np.asarray(a) - b) >= MARGIN) for a, b in pairs)


def gap(x, axis):
    """Whether the largest two entries along `axis` (an int, a tuple, all for None) differ by at least MARGIN."""
    x = np.asarray(x)
    axes = range(x.ndim) if axis is None else axis if isinstance(axis, tuple) else (axis,)
    axes = [a % x.ndim for a in axes] if x.ndim else []
    x = np.moveaxis(x, axes, range(-len(axes), 0)) if axes else x
    x = x.reshape(x.shape[:x.ndim - len(axes)] + (-1,))
    s = np.sort(x, axis=-1)
    return x.shape[-1] < 2 or bool(np.all(s[..., -1] - s[..., -2] >= MARGIN))


def gap_ok(x, axis=None, keepdims=False):
    return gap(x, axis) and gap(-np.asarray(x), axis)


# ---- argument pickers
def unary(gen, x, **kw):
    return (gen.ref_of(x),), kw


def binary(gen, x):
    y = gen.partner(x.shape)
    return ((gen.ref_of(x), y) if gen.rng.random() < 0.5 else (y, gen.ref_of(x))), {}


def with_scalar(gen, x):
    """x with a broadcasting partner, or with a Python number on either side."""
    if gen.rng.random() < 0.7:
        return binary(gen, x)
    c = float(np.round(gen.rng.uniform(0.5, 2.5), 2) * gen.rng.choice([-1, 1]))
    return ((gen.ref_of(x), c) if gen.rng.random() < 0.5 else (c, gen.ref_of(x))), {}


def axis_kw(gen, x, keepdims=True, tuples=True):
    """axis=None, an int (negative half the time) or a tuple of ints; keepdims random."""
    kw = {}
    r = gen.rng.random()
    if x.ndim and r < 0.45:
        kw["axis"] = gen.axis(x.ndim)
    elif x.ndim >= 2 and tuples and r < 0.65:
        axes = gen.rng.choice(x.ndim, size=gen.rng.integers(1, x.ndim + 1), replace=False)
        kw["axis"] = tuple(int(a) - x.ndim * int(gen.rng.random() < 0.5) for a in axes)
    else:
        kw["axis"] = None
    if keepdims:
        kw["keepdims"] = bool(gen.rng.random() < 0.5)
    return kw


def reduction(gen, x):
    return (gen.ref_of(x),), axis_kw(gen, x)


def single_axis(gen, x):
    return ((gen.ref_of(x),), {"axis": gen.axis(x.ndim)}) if x.ndim else None


def shape_like(gen, size):
    """A random shape with `size` elements (size-1 axes included)."""
    factors, n, p = [], size, 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    dims = [1] * int(gen.rng.integers(0 if size == 1 else 1, 4))
    dims = dims or [1]
    for f in factors:
        dims[gen.rng.integers(len(dims))] *= f
    if size == 1 and gen.rng.random() < 0.3:
        return ()
    return tuple(dims)


def reshape_args(gen, x):
    shape = list(shape_like(gen, x.size))
    if shape and gen.rng.random() < 0.3:
        shape[gen.rng.integers(len(shape))] = -1
    return (gen.ref_of(x), tuple(shape)), {}


def transpose_args(gen, x):
    if x.ndim < 1:
        return None
    perm = tuple(int(a) - x.ndim * int(gen.rng.random() < 0.5) for a in gen.rng.permutation(x.ndim))
    return (gen.ref_of(x), perm), {}


def squeeze_args(gen, x):
    ones = [i for i, n in enumerate(x.shape) if n == 1]
    if not ones:
        return None
    if gen.rng.random() < 0.3:
        return (gen.ref_of(x),), {"axis": None}
    a = int(gen.rng.choice(ones))
    return (gen.ref_of(x),), {"axis": a - x.ndim if gen.rng.random() < 0.5 else a}


def broadcast_args(gen, x):
    shape = [n if n != 1 or gen.rng.random() < 0.4 else int(gen.rng.integers(2, 4)) for n in x.shape]
    if gen.rng.random() < 0.5 and len(shape) < 4:
        shape.insert(0, int(gen.rng.integers(1, 4)))
    return ((gen.ref_of(x), tuple(shape)), {}) if math.prod(shape) <= MAX_SIZE else None


def basic_index(gen, x):
    parts = []
    for n in x.shape:
        r = gen.rng.random()
        if r < 0.3:
            parts.append(int(gen.rng.integers(-n, n)))
        elif r < 0.8:
            a, b = sorted(gen.rng.integers(-n, n + 1, size=2).tolist())
            step = int(gen.rng.choice([1, 1, 2, -1]))
            parts.append(slice(b - 1 if step < 0 and b > a else a, None if step < 0 else b, step))
        else:
            parts.append(slice(None))
        if gen.rng.random() < 0.1:
            parts.append(None)
    if parts and gen.rng.random() < 0.3:
        parts = [Ellipsis] + parts[int(gen.rng.integers(1, len(parts) + 1)):]
    return (gen.ref_of(x), tuple(parts)), {}


def advanced_index(gen, x):
    """An integer array (repeated and negative entries) on one axis, slices elsewhere, or a boolean mask."""
    if not x.ndim:
        return None
    if gen.rng.random() < 0.2:
        return (gen.ref_of(x), gen.const(gen.rng.random(x.shape) < 0.6)), {}
    a = int(gen.rng.integers(x.ndim))
    n = x.shape[a]
    idx = gen.const(gen.rng.integers(-n, n, size=tuple(gen.rng.integers(1, 4, size=gen.rng.integers(1, 3)))))
    return (gen.ref_of(x), (slice(None),) * a + (idx,)), {}


def take_args(gen, x):
    if not x.ndim:
        return None
    a = gen.axis(x.ndim)
    n = x.shape[a]
    shape = tuple(gen.rng.integers(1, 4, size=gen.rng.integers(0, 3)))
    return (gen.ref_of(x), gen.const(gen.rng.integers(0, n, size=shape))), {"axis": a}


def along_args(gen, x):
    if not x.ndim:
        return None
    a = gen.axis(x.ndim)
    shape = list(x.shape)
    shape[a] = int(gen.rng.integers(1, 4))
    return (gen.ref_of(x), gen.const(gen.rng.integers(0, x.shape[a], size=shape))), {"axis": a}


def join_args(gen, x, stack):
    if not stack and not x.ndim:
        return None
    a = gen.axis(x.ndim + stack)
    parts = [gen.ref_of(x)]
    for _ in range(int(gen.rng.integers(1, 3))):
        shape = list(x.shape)
        if not stack:
            shape[a] = int(gen.rng.integers(1, 3))
        parts.append(gen.same(tuple(shape)))
    gen.rng.shuffle(parts)
    return (parts,), {"axis": a}


def split_args(gen, x):
    if not x.ndim:
        return None
    a = gen.axis(x.ndim)
    n = x.shape[a]
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    if gen.rng.random() < 0.5:
        sections = int(gen.rng.choice(divisors))
    else:
        sections = sorted(set(gen.rng.integers(0, n + 1, size=gen.rng.integers(1, 3)).tolist()))
    return (gen.ref_of(x), sections), {"axis": a}


def where_args(gen, x):
    y = gen.partner(x.shape)
    cond = gen.const(gen.rng.random(gen.sub_shape(x.shape)) < 0.5)
    return (cond, gen.ref_of(x), y), {}


def matmul_args(gen, x):
    if not x.ndim:
        return None
    k = x.shape[-1]
    m = int(gen.rng.integers(1, 4))
    r = gen.rng.random()
    if x.ndim == 1:
        shape = (k,) if r < 0.4 else (k, m) if r < 0.8 else (2, k, m)
    elif r < 0.2:
        shape = (k,)
    elif r < 0.6:
        shape = (k, m)
    else:
        shape = gen.sub_shape(x.shape[:-2]) + (k, m)
    y = gen.same(shape)
    return ((gen.ref_of(x), y), {}) if math.prod(np.broadcast_shapes(x.shape[:-2], shape[:-2])) * m * 4 <= MAX_SIZE \
        else None


def clip_args(gen, x):
    lo, hi = sorted(np.round(gen.rng.uniform(-1.5, 1.5, size=2), 2).tolist())
    kw = {"lo": lo, "hi": hi}
    if gen.rng.random() < 0.3:
        kw[gen.rng.choice(["lo", "hi"])] = None
    return (gen.ref_of(x),), kw


def pow_args(gen, x):
    """A constant exponent (any base for 2 and 3, a positive base otherwise) or a Tensor exponent."""
    r = gen.rng.random()
    if r < 0.4:
        return (gen.ref_of(x), float(gen.rng.choice([2.0, 3.0]))), {}
    if r < 0.7:
        return (gen.ref_of(x), float(gen.rng.choice([0.5, 1.5, -1.0, -0.5]))), {}
    return (gen.ref_of(x), gen.partner(x.shape)), {}


def pow_ok(x, y):
    if isinstance(y, float) and y in (2.0, 3.0):
        return True
    return np.all(np.asarray(x) >= 0.1) and np.all(np.abs(y) <= 3)


def einsum_args(gen, x):
    pats = {1: ["i,i->", "i->", "i,j->ij"], 2: ["ij,jk->ik", "ij->ji", "ij,ij->i", "...j,j->..."],
            3: ["bij,bjk->bik", "...ij->...ji", "bij->b"]}
    if x.ndim not in pats:
        return None
    pat = str(gen.rng.choice(pats[x.ndim]))
    if x.ndim == 2 and x.shape[0] == x.shape[1] and gen.rng.random() < 0.3:
        pat = "ii->i"
    ins = pat.split("->")[0].split(",")
    letters = dict(zip(ins[0].replace("...", ""), x.shape[-len(ins[0].replace("...", "")):]))
    ops = [gen.ref_of(x)]
    for sub in ins[1:]:
        shape = tuple(letters.setdefault(c, int(gen.rng.integers(1, 4))) for c in sub)
        ops.append(gen.same(shape))
    return (pat, *ops), {}


def loss_pair(gen, x, const_target=False):
    t = gen.const(gen.rng.standard_normal(x.shape)) if const_target or gen.rng.random() < 0.4 else gen.same(x.shape)
    return (gen.ref_of(x), t), {"reduction": str(gen.rng.choice(["mean", "sum", "none"]))}


def class_targets(gen, x, weight):
    if not x.ndim:
        return None
    kw = {"reduction": str(gen.rng.choice(["mean", "sum", "none"]))}
    if weight and gen.rng.random() < 0.4:
        kw["weight"] = gen.const(gen.rng.uniform(0.2, 1.0, size=x.shape[:-1]))
    return (gen.ref_of(x), gen.const(gen.rng.integers(0, x.shape[-1], size=x.shape[:-1]))), kw


def reduce(losses, reduction):
    return losses.mean() if reduction == "mean" else losses.sum() if reduction == "sum" else losses


def np_log_softmax(x, axis=-1):
    z = x - np.max(x, axis=axis, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def np_logsumexp(x, axis=None, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis) if axis is not None else out.reshape(())


def np_cross_entropy(x, t, reduction="mean", weight=None):
    losses = -np.take_along_axis(np_log_softmax(x), t[..., None], -1)[..., 0]
    if weight is None:
        return reduce(losses, reduction)
    return (losses * weight).sum() / weight.sum() if reduction == "mean" else reduce(losses * weight, reduction)


def np_nll(x, t, reduction="mean", weight=None):
    losses = -np.take_along_axis(x, t[..., None], -1)[..., 0]
    if weight is None:
        return reduce(losses, reduction)
    return (losses * weight).sum() / weight.sum() if reduction == "mean" else reduce(losses * weight, reduction)


def np_huber(p, t, delta=1.0, reduction="mean"):
    a = np.abs(p - t)
    return reduce(np.where(a <= delta, 0.5 * a * a, delta * (a - 0.5 * delta)), reduction)


def np_kl(log_q, p, reduction="mean", log_target=False):
    losses = np.exp(p) * (p - log_q) if log_target else p * (np.log(p) - log_q)
    if reduction == "batchmean":
        return losses.sum() / (log_q.shape[0] if log_q.ndim else 1)
    return reduce(losses, reduction)


def np_gelu(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def np_norm(x, ord=2, axis=None, keepdims=False):
    a = np.abs(x)
    if ord == math.inf:
        return np.max(a, axis=axis, keepdims=keepdims)
    return np.sum(a ** ord, axis=axis, keepdims=keepdims) ** (1 / ord)


def np_dropout(x, p, seed):
    return x * ((np.random.default_rng(seed).random(np.shape(x)) >= p) / (1 - p))


def np_split(x, sections, axis=-1):
    return tuple(np.split(x, sections, axis=axis))


def norm_ok(x, ord=2, axis=None, keepdims=False):
    a = np.abs(x)
    if ord == 2:
        return np.all(np.sqrt(np.sum(a * a, axis=axis)) >= MARGIN)
    return np.all(a >= MARGIN) and (ord != math.inf or gap(a, axis))


def pad_args(gen, x):
    r = gen.rng.random()
    width = int(gen.rng.integers(0, 3)) if r < 0.3 else tuple(int(v) for v in gen.rng.integers(0, 3, size=2)) \
        if r < 0.6 or not x.ndim else tuple(tuple(int(v) for v in gen.rng.integers(0, 2, size=2)) for _ in x.shape)
    return (gen.ref_of(x), width), {"constant_values": float(np.round(gen.rng.uniform(-1, 1), 2))}


def elementwise(name, ref, ok=None, method=False, hvp=True, **kw):
    forms = (f"tg.{name}({{0}})",) + ((f"{{0}}.{name}()",) if method else ())
    return Spec(name, lambda gen, x: unary(gen, x, **kw), ref, forms, ok, hvp)


def reducer(name, ref, ok=None, method=True):
    forms = (f"tg.{name}({{0}}, axis={{axis}}, keepdims={{keepdims}})",) + \
        ((f"{{0}}.{name}(axis={{axis}}, keepdims={{keepdims}})",) if method else ())
    return Spec(name, reduction, ref, forms, ok)


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


# How to add an op: append a Spec whose name is the tapegrad attribute (a spec whose name tapegrad lacks is
# skipped, so ops can be listed before they land). For an elementwise op, one line:
#     elementwise("softsign", lambda x: x / (1 + np.abs(x)), method=True),
# otherwise give `make` (pick arguments around the value x with gen.ref_of(x), gen.partner(shape),
# gen.same(shape), gen.const(array), gen.axis(ndim)), the numpy reference, the source forms, and `ok`
# for a kink or a restricted domain (kept MARGIN away from every input; see `far` and `gap_ok`).
OPS = [
    # elementwise arithmetic, as functions, operators and with Python numbers on either side
    Spec("add", with_scalar, np.add, ("tg.add({0}, {1})", "{0} + {1}")),
    Spec("sub", with_scalar, np.subtract, ("tg.sub({0}, {1})", "{0} - {1}")),
    Spec("mul", with_scalar, np.multiply, ("tg.mul({0}, {1})", "{0} * {1}")),
    Spec("div", with_scalar, np.true_divide, ("tg.div({0}, {1})", "{0} / {1}"),
         ok=lambda x, y: np.all(np.abs(y) >= 0.2)),
    Spec("neg", unary, np.negative, ("tg.neg({0})", "-{0}")),
    Spec("pow", pow_args, np.power, ("tg.pow({0}, {1})", "{0} ** {1}"), ok=pow_ok),
    Spec("maximum", binary, np.maximum, ok=lambda x, y: far((x, y))),
    Spec("minimum", binary, np.minimum, ok=lambda x, y: far((x, y))),
    Spec("where", where_args, np.where),
    # elementwise functions
    elementwise("exp", np.exp, ok=lambda x: np.all(x <= 4), method=True),
    elementwise("log", np.log, ok=lambda x: np.all(x >= 0.1), method=True),
    elementwise("sqrt", np.sqrt, ok=lambda x: np.all(x >= 0.1), method=True),
    elementwise("tanh", np.tanh, method=True),
    elementwise("sigmoid", np_sigmoid, method=True),
    elementwise("abs", np.abs, ok=lambda x: far((x, 0)), method=True),
    elementwise("relu", lambda x: np.maximum(x, 0), ok=lambda x: far((x, 0)), method=True),
    elementwise("sign", np.sign, ok=lambda x: far((x, 0))),
    Spec("clip", clip_args, lambda x, lo=None, hi=None: np.clip(x, lo, hi),
         ("tg.clip({0}, lo={lo}, hi={hi})", "{0}.clip(lo={lo}, hi={hi})"),
         ok=lambda x, lo=None, hi=None: far(*[(x, b) for b in (lo, hi) if b is not None])),
    Spec("astype", unary, lambda x: x.astype(np.float64), ("tg.astype({0}, np.float64)", "{0}.astype(np.float64)")),
    Spec("dropout", lambda gen, x: ((gen.ref_of(x), float(gen.rng.choice([0.0, 0.25, 0.5])),
                                     int(gen.rng.integers(100))), {}),
         np_dropout, ("tg.dropout({0}, {1}, np.random.default_rng({2}))",)),
    elementwise("log1p", np.log1p, ok=lambda x: np.all(x >= -0.9), method=True),
    elementwise("expm1", np.expm1, ok=lambda x: np.all(x <= 4), method=True),
    elementwise("sin", np.sin, method=True),
    elementwise("cos", np.cos, method=True),
    elementwise("erf", np.vectorize(math.erf, otypes=[float])),
    elementwise("softplus", lambda x: np.logaddexp(x, 0)),
    elementwise("logsigmoid", lambda x: -np.logaddexp(-x, 0)),
    elementwise("leaky_relu", lambda x: np.where(x > 0, x, 0.01 * x), ok=lambda x: far((x, 0))),
    elementwise("elu", lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))), ok=lambda x: far((x, 0))),
    elementwise("gelu", np_gelu),
    Spec("gelu", lambda gen, x: ((gen.ref_of(x),), {"approximate": "tanh"}), np_gelu,
         ("tg.gelu({0}, approximate={approximate})",)),
    # matmul: 1-d, 2-d, batched, broadcast batches
    Spec("matmul", matmul_args, np.matmul, ("tg.matmul({0}, {1})", "{0} @ {1}")),
    Spec("einsum", einsum_args, np.einsum, ("tg.einsum({0}, {1})", "tg.einsum({0}, {1}, {2})")),
    # reductions (axis None, an int, negative, tuples; keepdims)
    reducer("sum", np.sum),
    reducer("mean", np.mean),
    reducer("max", np.max, ok=gap_ok),
    reducer("min", np.min, ok=gap_ok),
    reducer("logsumexp", np_logsumexp),
    reducer("var", np.var),
    reducer("std", np.std, ok=lambda x, axis=None, keepdims=False: np.all(np.std(x, axis=axis) >= MARGIN)),
    Spec("var", lambda gen, x: ((gen.ref_of(x),), dict(axis_kw(gen, x), ddof=1)), np.var,
         ("tg.var({0}, axis={axis}, ddof={ddof}, keepdims={keepdims})",),
         ok=lambda x, axis=None, ddof=1, keepdims=False: x.size // max(np.var(x, axis=axis).size, 1) > 1),
    Spec("norm", lambda gen, x: ((gen.ref_of(x),), dict(axis_kw(gen, x), ord=[1, 2, 3, math.inf][gen.rng.integers(4)])),
         np_norm, ("tg.norm({0}, ord={ord}, axis={axis}, keepdims={keepdims})",), ok=norm_ok),
    Spec("softmax", single_axis, lambda x, axis: np.exp(np_log_softmax(x, axis)),
         ("tg.softmax({0}, axis={axis})", "{0}.softmax(axis={axis})")),
    Spec("log_softmax", single_axis, np_log_softmax,
         ("tg.log_softmax({0}, axis={axis})", "{0}.log_softmax(axis={axis})")),
    Spec("cumsum", lambda gen, x: ((gen.ref_of(x),), {"axis": gen.axis(x.ndim) if x.ndim and gen.rng.random() < 0.7
                                                      else None}),
         np.cumsum, ("tg.cumsum({0}, axis={axis})", "{0}.cumsum(axis={axis})")),
    # shapes
    Spec("reshape", reshape_args, np.reshape, ("tg.reshape({0}, {1})", "{0}.reshape({1})")),
    Spec("transpose", transpose_args, np.transpose, ("tg.transpose({0}, {1})", "{0}.transpose({1})")),
    Spec("_T", lambda gen, x: ((gen.ref_of(x),), {}), np.transpose, ("{0}.T",)),
    Spec("_mT", lambda gen, x: ((gen.ref_of(x),), {}) if x.ndim >= 2 else None, lambda x: np.swapaxes(x, -1, -2),
         ("{0}.mT",)),
    Spec("expand_dims", lambda gen, x: ((gen.ref_of(x),), {"axis": gen.axis(x.ndim + 1)}), np.expand_dims,
         ("tg.expand_dims({0}, axis={axis})", "{0}.expand_dims(axis={axis})")),
    Spec("squeeze", squeeze_args, np.squeeze, ("tg.squeeze({0}, axis={axis})", "{0}.squeeze(axis={axis})")),
    Spec("broadcast_to", broadcast_args, np.broadcast_to, ("tg.broadcast_to({0}, {1})", "{0}.broadcast_to({1})")),
    Spec("flip", lambda gen, x: ((gen.ref_of(x),), {"axis": axis_kw(gen, x, keepdims=False)["axis"]}), np.flip,
         ("tg.flip({0}, axis={axis})",)),
    Spec("roll", lambda gen, x: ((gen.ref_of(x), int(gen.rng.integers(-3, 4))),
                                 {"axis": gen.axis(x.ndim) if x.ndim and gen.rng.random() < 0.7 else None}),
         np.roll, ("tg.roll({0}, {1}, axis={axis})",)),
    Spec("pad", pad_args, lambda x, w, constant_values=0: np.pad(x, w, constant_values=constant_values),
         ("tg.pad({0}, {1}, constant_values={constant_values})",)),
    Spec("tile", lambda gen, x: ((gen.ref_of(x), tuple(gen.rng.integers(1, 3, size=gen.rng.integers(1, 3)).tolist())),
                                 {}), np.tile, ("tg.tile({0}, {1})",)),
    Spec("repeat", lambda gen, x: ((gen.ref_of(x), int(gen.rng.integers(0, 3))),
                                   {"axis": gen.axis(x.ndim) if x.ndim and gen.rng.random() < 0.7 else None}),
         np.repeat, ("tg.repeat({0}, {1}, axis={axis})", "{0}.repeat({1}, axis={axis})")),
    Spec("tril", lambda gen, x: ((gen.ref_of(x),), {"k": int(gen.rng.integers(-1, 2))}) if x.ndim >= 2 else None,
         lambda x, k=0: np.tril(x, k), ("tg.tril({0}, k={k})",)),
    Spec("triu", lambda gen, x: ((gen.ref_of(x),), {"k": int(gen.rng.integers(-1, 2))}) if x.ndim >= 2 else None,
         lambda x, k=0: np.triu(x, k), ("tg.triu({0}, k={k})",)),
    # indexing and joining
    Spec("getitem", basic_index, lambda x, i: x[i], ("{0}[{1}]", "tg.getitem({0}, {1})")),
    Spec("getitem", advanced_index, lambda x, i: x[i], ("{0}[{1}]",)),
    Spec("take", take_args, np.take, ("tg.take({0}, {1}, axis={axis})",)),
    Spec("take_along_axis", along_args, np.take_along_axis, ("tg.take_along_axis({0}, {1}, axis={axis})",)),
    Spec("concat", lambda gen, x: join_args(gen, x, 0), np.concatenate, ("tg.concat({0}, axis={axis})",)),
    Spec("stack", lambda gen, x: join_args(gen, x, 1), np.stack, ("tg.stack({0}, axis={axis})",)),
    Spec("split", split_args, np_split, ("tg.split({0}, {1}, axis={axis})",)),
    # losses (a 0-d result, or per element with reduction="none")
    Spec("mse_loss", loss_pair, lambda p, t, reduction: reduce((p - t) ** 2, reduction),
         ("tg.mse_loss({0}, {1}, reduction={reduction})",)),
    Spec("cross_entropy", lambda gen, x: class_targets(gen, x, True), np_cross_entropy,
         ("tg.cross_entropy({0}, {1}, reduction={reduction})",
          "tg.cross_entropy({0}, {1}, reduction={reduction}, weight={weight})")),
    Spec("nll_loss", lambda gen, x: class_targets(gen, x, True), np_nll,
         ("tg.nll_loss({0}, {1}, reduction={reduction})",
          "tg.nll_loss({0}, {1}, reduction={reduction}, weight={weight})")),
    Spec("binary_cross_entropy_with_logits",
         lambda gen, x: ((gen.ref_of(x), gen.const(gen.rng.random(x.shape))), {"reduction": "mean"}),
         lambda z, t, reduction: reduce(np.logaddexp(z, 0) - z * t, reduction),
         ("tg.binary_cross_entropy_with_logits({0}, {1}, reduction={reduction})",)),
    Spec("l1_loss", loss_pair, lambda p, t, reduction: reduce(np.abs(p - t), reduction),
         ("tg.l1_loss({0}, {1}, reduction={reduction})",), ok=lambda p, t, reduction: far((p, t))),
    Spec("huber_loss", lambda gen, x: (loss_pair(gen, x)[0], dict(loss_pair(gen, x)[1], delta=0.5)), np_huber,
         ("tg.huber_loss({0}, {1}, delta={delta}, reduction={reduction})",),
         ok=lambda p, t, delta, reduction: far((np.abs(p - t), delta))),
    Spec("kl_div", lambda gen, x: ((gen.ref_of(x), gen.const(gen.rng.uniform(0.1, 1.0, x.shape))),
                                   {"reduction": str(gen.rng.choice(["mean", "sum", "batchmean"]))}),
         np_kl, ("tg.kl_div({0}, {1}, reduction={reduction})",)),
    # parameter variants and n-ary / broadcasting forms of the extra ops (tests/test_ops_extra.py owner)
    Spec("leaky_relu", lambda gen, x: ((gen.ref_of(x),), {"negative_slope": 0.2}),
         lambda x, negative_slope=0.01: np.where(x > 0, x, negative_slope * x),
         ("tg.leaky_relu({0}, negative_slope={negative_slope})",), ok=lambda x, negative_slope=0.01: far((x, 0))),
    Spec("elu", lambda gen, x: ((gen.ref_of(x),), {"alpha": 0.5}),
         lambda x, alpha=1.0: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))),
         ("tg.elu({0}, alpha={alpha})",), ok=lambda x, alpha=1.0: far((x, 0))),
    Spec("std", lambda gen, x: ((gen.ref_of(x),), dict(axis_kw(gen, x), ddof=1)), np.std,
         ("tg.std({0}, axis={axis}, ddof={ddof}, keepdims={keepdims})", "{0}.std(axis={axis}, ddof={ddof})"),
         ok=lambda x, axis=None, ddof=1, keepdims=False: x.size // max(np.std(x, axis=axis).size, 1) > 1
         and np.all(np.std(x, axis=axis, ddof=ddof) >= MARGIN)),
    Spec("repeat", lambda gen, x: ((gen.ref_of(x), [int(r) for r in gen.rng.integers(0, 3, size=x.shape[a])]),
                                   {"axis": a - x.ndim * int(gen.rng.random() < 0.5)})
         if x.ndim and (a := gen.axis(x.ndim) % x.ndim) is not None else None,
         np.repeat, ("tg.repeat({0}, {1}, axis={axis})",)),
    Spec("roll", lambda gen, x: ((gen.ref_of(x), tuple(int(v) for v in gen.rng.integers(-3, 4, size=2))),
                                 {"axis": tuple(int(a) - x.ndim * int(gen.rng.random() < 0.5)
                                                for a in gen.rng.choice(x.ndim, size=2, replace=False))})
         if x.ndim >= 2 else None, np.roll, ("tg.roll({0}, {1}, axis={axis})",)),
    Spec("einsum", lambda gen, x: (("bi,oij,bj->bo", gen.ref_of(x),
                                    gen.same((int(gen.rng.integers(1, 3)), x.shape[1], 2)), gen.same((x.shape[0], 2))),
                                   {}) if x.ndim == 2 else None,
         np.einsum, ("tg.einsum({0}, {1}, {2}, {3})",)),
    Spec("take_along_axis", lambda gen, x: ((gen.ref_of(x), gen.const(gen.rng.integers(
        -x.shape[a], x.shape[a], size=tuple(int(gen.rng.integers(1, 4)) if d == a else 1 for d in range(x.ndim))))),
        {"axis": a}) if x.ndim >= 2 and (a := gen.axis(x.ndim) % x.ndim) is not None else None,
        np.take_along_axis, ("tg.take_along_axis({0}, {1}, axis={axis})",)),
]


for _i, _s in enumerate(OPS):
    _twins = [t for t in OPS if t.name == _s.name]
    _s.label = _s.name.strip("_") + (f" #{_twins.index(_s) + 1}" if len(_twins) > 1 else "")

WSUM = Spec("_wsum", None, lambda x, w: np.sum(x * w), ("tg.sum({0} * {1})", "({0} * {1}).sum()"))
TOTAL = Spec("_total", None, np.add, ("{0} + {1}",))


def available_specs():
    """The specs whose op (and at least one form) exists in this tapegrad."""
    return [s for s in OPS if s.available() and s.usable_forms()]


# -- the generator -------------------------------------------------------------------------------
class Gen:
    """Builds one program from a seed, running numpy alongside to keep each op inside its domain."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.p = Program(seed)
        self.env = {}            # name -> numpy value
        self.uses = {}           # name -> times used as an operand (values only)
        self.counter = 0

    def name(self, prefix):
        self.counter += 1
        return f"{prefix}{self.counter}"

    def shape(self):
        ndim = int(self.rng.choice(4, p=[0.2, 0.3, 0.3, 0.2]))
        return tuple(int(self.rng.choice([1, 2, 3, 4], p=[0.3, 0.3, 0.25, 0.15])) for _ in range(ndim))

    def leaf(self, shape):
        k = self.name("x")
        self.p.inputs[k] = self.env[k] = np.asarray(np.round(self.rng.standard_normal(shape), 3))
        self.uses[k] = 0
        return Ref(k)

    def const(self, array):
        k = self.name("c")
        self.p.consts[k] = self.env[k] = np.asarray(array)
        return Ref(k)

    def axis(self, ndim):
        a = int(self.rng.integers(ndim)) if ndim else 0
        return a - ndim if self.rng.random() < 0.5 else a

    def sub_shape(self, shape):
        """A shape that broadcasts to `shape` (a suffix, some axes set to 1)."""
        shape = shape[int(self.rng.integers(len(shape) + 1)) if self.rng.random() < 0.3 else 0:]
        return tuple(1 if self.rng.random() < 0.25 else n for n in shape)

    def candidates(self, pred):
        """Values (not constants) satisfying pred, preferring those used fewer than 4 times."""
        names = [k for k in self.uses if pred(self.env[k])]
        fresh = [k for k in names if self.uses[k] < 4]
        return fresh or names

    def use(self, k):
        self.uses[k] += 1
        return Ref(k)

    def ref_of(self, x):
        """The Ref of `x`, the pool value this step is built around (counted as a use)."""
        return self.use(self.current)

    def same(self, shape):
        """A value of exactly `shape` from the pool, or a new input."""
        names = self.candidates(lambda v: v.shape == shape)
        if names and self.rng.random() < 0.7:
            return self.use(str(self.rng.choice(names)))
        return self.leaf(shape)

    def partner(self, shape):
        """A value that broadcasts with `shape` (to a shape no bigger than MAX_SIZE), or a new input."""
        def fits(v):
            try:
                return math.prod(np.broadcast_shapes(v.shape, shape)) <= MAX_SIZE
            except ValueError:
                return False
        names = self.candidates(fits)
        if names and self.rng.random() < 0.7:
            return self.use(str(self.rng.choice(names)))
        return self.leaf(self.sub_shape(shape) if self.rng.random() < 0.5 else shape)

    def step(self, spec):
        """Try to append one step of `spec` on a random pool value; False when it does not apply."""
        names = self.candidates(lambda v: True)
        self.current = str(self.rng.choice(names))
        x = self.env[self.current]
        snapshot = (dict(self.p.inputs), dict(self.p.consts), dict(self.uses), self.counter)
        made = spec.make(self, x)
        if made is not None:
            args, kw = made
            forms = spec.usable_forms(args, kw)
            if forms and self.add(spec, args, kw, str(self.rng.choice(forms))):
                return True
        self.p.inputs, self.p.consts, self.uses, self.counter = snapshot
        for k in list(self.env):
            if k not in self.p.inputs and k not in self.p.consts and k not in self.uses:
                del self.env[k]
        return False

    def add(self, spec, args, kw, form):
        np_args = resolve(args, self.env)
        try:
            with np.errstate(all="raise"):
                if spec.ok is not None and not spec.ok(*np_args, **kw):
                    return False
                out = spec.ref(*np_args, **kw)
        except (ValueError, FloatingPointError, IndexError, TypeError):
            return False
        outs = out if isinstance(out, tuple) else (out,)
        outs = [np.asarray(o, dtype=np.float64) for o in outs]
        if not outs or any(o.size > MAX_SIZE or o.size == 0 or not np.all(np.isfinite(o))
                           or np.any(np.abs(o) > MAX_ABS) for o in outs):
            return False
        names = tuple(self.name("v") for _ in outs)
        for k, o in zip(names, outs):
            self.env[k], self.uses[k] = o, 0
        self.p.steps.append(Step(names, spec, args, kw, form, isinstance(out, tuple)))
        return True

    def finish(self):
        """Reduce to a scalar: a randomly weighted sum over every unused value and a few others."""
        terms = [k for k, n in self.uses.items() if n == 0 and k not in self.p.inputs]
        terms += [str(k) for k in self.rng.choice(list(self.uses), size=self.rng.integers(1, 3))]
        total = None
        for k in dict.fromkeys(terms):
            self.current = k
            w = self.const(np.asarray(np.round(self.rng.standard_normal(self.env[k].shape), 3)))
            self.add(WSUM, (self.use(k), w), {}, str(self.rng.choice(WSUM.forms)))
            term = self.p.steps[-1].outs[0]
            if total is not None:
                self.add(TOTAL, (Ref(total), Ref(term)), {}, TOTAL.forms[0])
                term = self.p.steps[-1].outs[0]
            total = term
        self.p.loss = total


def generate(seed, specs=None):
    """The program of `seed`: 1-3 inputs, 2-12 op steps drawn from `specs` (default: every available spec)."""
    specs = specs or available_specs()
    gen = Gen(seed)
    for _ in range(int(gen.rng.integers(1, 4))):
        gen.leaf(gen.shape())
    target, tries = int(gen.rng.integers(2, 13)), 0
    while len(gen.p.steps) < target and tries < 200:
        tries += 1
        gen.step(specs[int(gen.rng.integers(len(specs)))])
    gen.finish()
    return gen.p


# -- running and checking ------------------------------------------------------------------------
def run_numpy(p, inputs):
    env = dict(p.consts, **inputs)
    with np.errstate(all="ignore"):
        for s in p.steps:
            out = s.spec.ref(*resolve(s.args, env), **s.kw)
            for k, o in zip(s.outs, out if isinstance(out, tuple) else (out,)):
                env[k] = np.asarray(o, dtype=np.float64)
    return env


def run_tapegrad(p, leaves, code=None):
    """Exec the program's source on `leaves` (name -> Tensor); returns every name it defined."""
    env = dict(p.consts, **leaves, tg=tg, np=np)
    exec(code or compile(p.body(), f"<program {p.seed}>", "exec"), env)
    return env


def leaves_of(p, arrays=None):
    return {k: tg.tensor(np.array(v, dtype=np.float64), requires_grad=True) for k, v in (arrays or p.inputs).items()}


def rel_err(a, b, floor=1e-6):
    """max |a - b| / max(|b|, 1e-2 max|b|, floor) over the entries: relative, with floors for small entries."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return math.inf
    if not a.size:
        return 0.0
    scale = np.maximum(np.abs(b), max(1e-2 * float(np.max(np.abs(b))), floor))
    err = np.abs(a - b) / scale
    return math.inf if not np.all(np.isfinite(err)) else float(np.max(err))


def fd_grad(f, inputs, eps):
    """Central finite differences of the scalar f(inputs) for each input array."""
    grads = {}
    for k, x in inputs.items():
        g = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            for sign in (1, -1):
                y = x.copy()
                y[i] += sign * eps
                g[i] += sign * f(dict(inputs, **{k: y}))
        grads[k] = g / (2 * eps)
    return grads


@dataclass
class Result:
    seed: int
    errors: dict            # check name -> worst relative error
    failures: list          # messages

    @property
    def ok(self):
        return not self.failures


def check(p, hvp=True):
    """Run every oracle on program `p`; returns a Result (errors per check, failure messages)."""
    errors, failures = {}, []

    def note(kind, what, err):
        errors[kind] = max(errors.get(kind, 0.0), err)
        if not err <= TOL[kind]:
            failures.append(f"{kind} {what}: relative error {err:.3g} > {TOL[kind]:g}")

    code = compile(p.body(), f"<program {p.seed}>", "exec")
    expected = run_numpy(p, p.inputs)
    names = list(p.inputs)
    try:
        leaves = leaves_of(p)
        env = run_tapegrad(p, leaves, code)
        for s in p.steps:
            for k in s.outs:
                note("forward", k, rel_err(env[k].data, expected[k]))
        grads = tg.grad(env[p.loss], [leaves[k] for k in names])
        env = run_tapegrad(p, leaves, code)
        env[p.loss].backward()
    except Exception as e:      # noqa: BLE001  (any exception is a finding, reported with the program)
        return Result(p.seed, errors, [f"raised {type(e).__name__}: {e}"])
    numeric = fd_grad(lambda xs: float(run_numpy(p, xs)[p.loss]), p.inputs, FD_EPS)
    # finite differences round off ~1e-16 * (intermediate magnitudes) / eps: entries below this floor are
    # compared absolutely, at TOL["grad"] * floor, about ten times that rounding
    floor = 1e-3 * (1 + max(float(np.max(np.abs(expected[k]), initial=0)) for s in p.steps for k in s.outs))
    for k, g in zip(names, grads):
        note("grad", f"tg.grad d{p.loss}/d{k}", rel_err(g.data, numeric[k], floor))
        stored = leaves[k].grad if leaves[k].grad is not None else np.zeros(leaves[k].shape)
        note("grad", f"backward {k}.grad", rel_err(stored, numeric[k], floor))
    if hvp and all(s.spec.hvp for s in p.steps):
        try:
            note("hvp", "H v", hvp_error(p, code))
        except Exception as e:  # noqa: BLE001
            failures.append(f"hvp raised {type(e).__name__}: {e}")
    return Result(p.seed, errors, failures)


def hvp_error(p, code):
    """Relative error of H v (double backward) against finite differences of the gradient along v."""
    rng = np.random.default_rng(p.seed + 1)
    v = {k: rng.standard_normal(x.shape) for k, x in p.inputs.items()}
    names = list(p.inputs)
    leaves = leaves_of(p)
    env = run_tapegrad(p, leaves, code)
    gs = tg.grad(env[p.loss], [leaves[k] for k in names], create_graph=True)
    inner = None
    for k, g in zip(names, gs):
        term = (g * v[k]).sum()
        inner = term if inner is None else inner + term
    if not inner.requires_grad:        # the gradient is constant: H v = 0
        hv = [np.zeros(leaves[k].shape) for k in names]
    else:
        hv = [h.data for h in tg.grad(inner, [leaves[k] for k in names])]

    def gradient(sign):
        shifted = leaves_of(p, {k: x + sign * HVP_EPS * v[k] for k, x in p.inputs.items()})
        out = run_tapegrad(p, shifted, code)[p.loss]
        return [g.data for g in tg.grad(out, [shifted[k] for k in names])]
    numeric = [(a - b) / (2 * HVP_EPS) for a, b in zip(gradient(1), gradient(-1))]
    scale = max(float(np.max(np.abs(g.data), initial=0)) for g in gs)
    return rel_err(np.concatenate([h.ravel() for h in hv]), np.concatenate([n.ravel() for n in numeric]),
                   1e-3 * (1 + scale))      # rounding: ~1e-16 |g| / eps


def run_many(start, count, hvp=True):
    """Check programs start..start+count-1; returns (results of failures, worst error per check, op counts)."""
    failed, worst, counts = [], {}, {}
    for seed in range(start, start + count):
        p = generate(seed)
        for op in p.ops():
            counts[op] = counts.get(op, 0) + 1
        r = check(p, hvp)
        for k, e in r.errors.items():
            if e > worst.get(k, (-1.0, None))[0]:
                worst[k] = (e, seed)
        if not r.ok:
            failed.append((r, p))
    return failed, worst, counts


def describe(r, p):
    return f"seed {r.seed}:\n  " + "\n  ".join(r.failures[:5]) + "\n" + p.source()


if __name__ == "__main__":
    for s in map(int, sys.argv[1:]):
        prog = generate(s)
        res = check(prog)
        print(prog.source())
        print("errors:", {k: f"{e:.2e}" for k, e in res.errors.items()})
        print("\n".join(res.failures) or "ok")
