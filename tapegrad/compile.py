"""`tapegrad.compile(fn)`: trace a training step once, replay it as a straight-line numpy program.

    step = tapegrad.compile(train_step)      # train_step(*inputs): builds a loss, loss.backward(), returns it
    for xs, ys in batches:
        loss = step(xs, ys)                  # same loss, same .grad arrays as train_step(xs, ys)
        opt.step()
    print(step.source)                       # the Wengert list and its adjoint, as Python

How it works. A call runs `fn` eagerly under a `Tape` while every primitive call is observed (its op,
input arrays, params and scope): that is the trace. Inputs are the call's arguments (arrays become
Tensors), parameters are the leaves requiring grad that the trace found and that are not inputs.
The reverse sweep's decisions (which records, in which order, which rule, where broadcasting is
undone, how gradients accumulate) are worked out once from the trace, and both passes are written
out as Python source (`exec`): each line is one record's `op.forward` with its params, or one rule
call and one accumulation. A program is compiled after two calls with the same input shapes and dtypes
trace the same program with the same constants: a value computed outside tapegrad ops from the
inputs shows up as a constant that changes, and the step then stays eager. Integer and boolean inputs
(targets, indices, lengths, masks) are data once two calls with different values traced the same
program; while their values were the same in both, a call with new values traces once more to see;
where the values change the program (unroll's lengths), the signature gets one program per value.
Later calls replay the program: same kernels, same order, so the numbers are eager's bit for bit.
Each local is deleted after its last use, so a replay holds the live values only, as the eager sweep.
`exact=False` first rewrites the trace (`tapegrad.fusion`: fused and hoisted products, fused elementwise
siblings, common subexpressions) and batches weight gradients: eager's numbers to rounding, fewer calls.

What is baked in, and the guards:
  * Python control flow on tensor values is baked into the trace. `check=True` (every call) or
    `check_every=N` re-runs the step eagerly and raises `CompileError` naming the first record whose
    op or value differs (the eager results are what the call leaves in `.grad`).
  * A step the compiler cannot replay exactly runs eagerly for good, with one warning naming the
    reason: a `Joint` rule (checkpoint, `unroll(checkpoint_every=...)`), a random draw other than
    dropout's, a backward with `grad=`/`create_graph`/twice, `retain_grad`, an in-place write to a
    parameter inside the step (an optimizer step inside `fn`), a returned Python value.
  * Dropout draws its mask in Python at forward time; the replay draws it again, with dropout's own
    expression, from the same generator object (checked at trace time to reproduce the traced mask),
    so a replay consumes the generator exactly as eager does and gets the same masks.
  * Parameters are bound by their `.data` array object, so in-place optimizer updates are seen by
    the next replay; replacing the array (`p.data = new`) makes the next call trace again.
  * A compiled call returns its outputs as new Tensors that are not on a tape (backward already ran).
  * Under an open `Tape`, `no_grad`, or anomaly mode, calls run eagerly.
"""
import ast
import builtins
import collections
import copy
import functools
import gc
import itertools
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from . import autodiff
from . import op as _op
from . import ops as _ops
from . import tape as _tape
from .errors import GraphError
from .indexed import IndexedGrad, is_basic
from .op import Joint, PerInput, identity
from .tape import Record, Tape
from .tensor import Tensor, get_default_dtype

__all__ = ["compile", "Compiled", "CompileError", "CompileWarning"]


class CompileError(GraphError):
    """A compiled step's replay differs from eager execution (raised by check=True / check_every)."""


class CompileWarning(UserWarning):
    """A step runs eagerly because the compiler cannot replay it exactly."""


class _Unsupported(Exception):
    pass


class _Stale(Exception):
    pass


class _Spec:
    """Shape-only stand-in for an input an op does not keep (what eager passes: a Record or leaf)."""
    __slots__ = ("shape", "dtype", "ndim", "size")

    def __init__(self, shape, dtype):
        self.shape, self.dtype, self.ndim = tuple(shape), dtype, len(shape)
        self.size = int(np.prod(shape)) if shape else 1

    def __repr__(self):
        return f"<{self.shape} {self.dtype}>"


class _Value:
    """A value of the trace: an input, a parameter, a constant, or the output of a node."""
    __slots__ = ("kind", "name", "array", "requires_grad", "tensor", "node", "number")

    def __init__(self, kind, name, array, requires_grad=False, tensor=None, node=None, number=None):
        self.kind, self.name, self.array, self.requires_grad = kind, name, array, requires_grad
        self.tensor, self.node, self.number = tensor, node, number

    @property
    def shape(self):
        return np.shape(self.array)

    @property
    def dtype(self):
        return self.array.dtype


class _Node:
    """One primitive call of the trace."""
    __slots__ = ("k", "op", "fn", "inputs", "casts", "datas", "params", "dyn", "out", "value", "scope", "record",
                 "shape")

    def __init__(self, k, op, fn, inputs, casts, datas, params, dyn, scope, record):
        self.k, self.op, self.fn, self.inputs, self.casts, self.datas = k, op, fn, inputs, casts, datas
        self.params, self.dyn, self.scope, self.record = params, dyn, scope, record
        self.out = self.value = self.shape = None


class _CompareOp:
    """Tensor comparisons (`x > 0`) are not primitives; the trace records them as non-differentiable nodes."""
    keep_inputs = keep_ans = False
    vjps = (None, None)

    def __init__(self, ufunc):
        self.name, self.forward = ufunc.__name__, ufunc


# ------------------------------------------------------------------------------------------------------
# tracing

class _Trace:
    def __init__(self, args):
        self.nodes, self.inputs, self.params, self.consts = [], [], [], []
        self.known = {}          # id(Record or Tensor) -> _Value
        self.arrays = {}         # id(array) -> _Value whose array it is
        self.alive = []          # keeps traced objects alive, so ids are not reused
        self.root = None         # the value backward was called on
        self.pending_draw = None  # (generator, p, its state) of a dropout draw about to be recorded
        self.in_backward = False
        self.unsupported = None
        self.result = None
        self.args = args

    def fail(self, reason):
        if self.unsupported is None:
            self.unsupported = reason

    def register(self, key, value):
        self.known[id(key)] = value
        if isinstance(value.array, np.ndarray):
            self.arrays[id(value.array)] = value
        self.alive.append(key)

    def const(self, x):
        if isinstance(x, (bool, int, float, type(None))) and type(x) in (bool, int, float, type(None)):
            return _Value("number", repr(x), np.asarray(x), number=x)
        v = _Value("const", f"c{len(self.consts)}", x)
        self.consts.append(v)
        self.alive.append(x)
        return v

    def array_value(self, a):
        v = self.arrays.get(id(a))
        return v if v is not None and v.array is a else None

    def resolve(self, parent, data):
        """The _Value an op input comes from (parent as eager passes it: Record, leaf Tensor or None)."""
        if parent is None:
            if isinstance(data, np.ndarray):
                v = self.array_value(data)
                if v is not None:            # a raw array of the trace passed back in (x.data)
                    return _Value("alias", v.name, v.array, False, node=v)
            return self.const(data)
        v = self.known.get(id(parent))
        if v is not None:
            return v
        if type(parent) is Record:
            raise _Unsupported(f"op {parent.op} (record %{parent.index}{_scope_text(parent.scope)}) was not "
                               "made through a primitive call the compiler can replay")
        if isinstance(parent, Tensor):
            v = self.array_value(parent.data)
            if v is not None:
                if parent.requires_grad:
                    raise _Unsupported("a leaf requiring grad is made inside the step from a traced array "
                                       "(tapegrad.checkpoint and unroll(checkpoint_every=...) do this)")
                alias = _Value("alias", v.name, v.array, False, node=v)       # detach(): same array, no grad
                self.register(parent, alias)
                return alias
            if parent.requires_grad:
                label = parent.name if isinstance(parent.name, str) and parent.name.isidentifier() else None
                name = f"p_{label}" if label and f"p_{label}" not in {q.name for q in self.params} \
                    else f"p{len(self.params)}"
                v = _Value("param", name, parent.data, True, tensor=parent)
                self.params.append(v)
            else:
                v = self.const(parent.data)
                label = parent.name if isinstance(parent.name, str) and parent.name.isidentifier() else None
                if label and v.kind == "const":
                    v.name = f"c_{label}"
            self.register(parent, v)
            return v
        return self.const(data)

    def add_node(self, op, datas, parents, params, result, grad):
        k = len(self.nodes)
        inputs, casts = [], []
        draw, self.pending_draw = self.pending_draw, None
        if draw is not None:
            if op is not _ops._dropout.op or parents[1] is not None or not isinstance(datas[1], np.ndarray):
                raise _Unsupported("a random draw inside the step that the compiler cannot redraw")
            rng, p, state = draw
            mask = datas[1]
            again = _draw_mask(_generator_at(rng, state), p, mask.shape, mask.dtype)
            if again.dtype != mask.dtype or not np.array_equal(again, mask):
                raise _Unsupported("a dropout mask the compiler cannot redraw")
            mv = _Value("draw", f"m{k}", mask)
            mv.tensor, mv.number = rng, p
            self.alive.append(rng)
        for j, (d, p) in enumerate(zip(datas, parents)):
            if draw is not None and j == 1:
                inputs.append(mv)
                casts.append(None)
                continue
            v = self.resolve(p, d)
            cast = None
            if v.kind not in ("number",) and v.array is not d:
                if isinstance(d, np.ndarray) and np.shape(v.array) == d.shape and v.array.dtype != d.dtype:
                    cast = d.dtype
                elif v.kind == "const":
                    v.array = d
                else:
                    raise _Unsupported(f"op {op.name}: an input array is not the traced value it comes from")
            inputs.append(v)
            casts.append(cast)
        dyn = {}
        for name, val in params.items():
            dyn[name] = self.param_expr(val)
        rec = result._node
        scope = rec.scope if rec is not None else _tape.CURRENT_SCOPE
        node = _Node(k, op, op.forward, inputs, casts, datas, params, dyn, scope, rec)
        node.out, node.shape = result.data, np.shape(result.data)
        rg = bool(grad) and _tape.GRAD_ENABLED and rec is not None and rec.requires_grad
        node.value = _Value("node", f"v{k}", result.data, rg, node=node)
        self.nodes.append(node)
        self.register(rec if rec is not None else result, node.value)
        self.alive.append(result)
        if type(op.vjps) is Joint:
            self.fail(f"op {op.name} has a Joint rule")
        return node

    def param_expr(self, val):
        """None for a static op parameter; else a tuple structure naming the traced arrays inside it."""
        if isinstance(val, np.ndarray):
            v = self.array_value(val)
            return v
        if isinstance(val, tuple) and any(isinstance(e, np.ndarray) for e in val):
            parts = tuple(self.param_expr(e) for e in val)
            return parts if any(p is not None for p in parts) else None
        return None


_ACTIVE: list["_Trace"] = []        # the open trace (one at a time)


def _scope_text(scope):
    return "" if scope is None else f", {scope!r}"


def _traced_record(op, datas, parents, grad, params):
    tr = _ACTIVE[-1] if _ACTIVE else None
    result = _ORIG["record"](op, datas, parents, grad, params)
    if tr is None:
        return result
    if tr.in_backward:
        tr.fail(f"op {op.name} recorded during backward (create_graph)")
        return result
    try:
        tr.add_node(op, datas, parents, params, result, grad)
    except _Unsupported as e:
        tr.fail(str(e))
    return result


def _traced_generator_for(rng):
    """A draw inside the step: dropout's mask is redrawn by the replay from the same generator (checked to
    reproduce the traced mask); any other draw makes the step eager."""
    tr = _ACTIVE[-1] if _ACTIVE else None
    gen = _ORIG["generator_for"](rng)
    if tr is not None:
        frame = sys._getframe(1)
        wrapped = getattr(_ops.dropout, "__wrapped__", None)
        if (wrapped is None or frame.f_code is not wrapped.__code__ or gen is not rng
                or not isinstance(rng, np.random.Generator) or tr.pending_draw is not None):
            tr.fail("a random draw inside the step that the compiler cannot redraw")
        else:
            tr.pending_draw = (rng, float(frame.f_locals["p"]), rng.bit_generator.state)
    return gen


def _draw_mask(rng, p, shape, dtype):
    """dropout's mask, as ops.dropout draws it."""
    return (rng.random(shape) >= p).astype(dtype) / np.asarray(1 - p, dtype)


def _generator_at(rng, state):
    g = np.random.Generator(type(rng.bit_generator)())
    g.bit_generator.state = state
    return g


def _traced_backward(output, grad=None, retain_graph=False, create_graph=False):
    tr = _ACTIVE[-1] if _ACTIVE else None
    if tr is not None:
        if grad is not None or create_graph:
            tr.fail("backward with an explicit grad or create_graph")
        elif tr.root is not None:
            tr.fail("backward called more than once in the step")
        else:
            try:
                tr.root = tr.resolve(output._node or output, output.data)
            except _Unsupported as e:
                tr.fail(str(e))
        tr.in_backward = True
    try:
        return _ORIG["backward"](output, grad, retain_graph, create_graph)
    finally:
        if tr is not None:
            tr.in_backward = False


def _traced_store_grad(t, g):
    tr = _ACTIVE[-1] if _ACTIVE else None
    if tr is not None and not tr.in_backward:
        tr.fail("gradients stored outside Tensor.backward (tapegrad.backward called directly?)")
    return _ORIG["_store_grad"](t, g)


def _traced_comparison(name, original):
    ufunc = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
             "eq": np.equal, "ne": np.not_equal}[name]
    cmp_op = _COMPARE_OPS.setdefault(name, _CompareOp(ufunc))

    def compare(self, other):
        result = original(self, other)
        tr = _ACTIVE[-1] if _ACTIVE else None
        if tr is not None and not tr.in_backward:
            try:
                a = (self._node or self, self.data)
                b = (other._node or other, other.data) if isinstance(other, Tensor) else (None, other)
                tr.add_node(cmp_op, (a[1], b[1]), (a[0], b[0]), {}, result, False)
            except _Unsupported as e:
                tr.fail(str(e))
        return result
    return compare


_ORIG: dict[str, Callable[..., Any]] = {}       # the functions _install replaced, by name
_COMPARE_OPS: dict[str, "_CompareOp"] = {}
_CMP = ("lt", "le", "gt", "ge", "eq", "ne")


def _install():
    _ORIG.update(record=_op.record, generator_for=_ops.generator_for, backward=autodiff.backward,
                 _store_grad=autodiff._store_grad)
    _op.record = _traced_record
    _ops.generator_for = _traced_generator_for
    autodiff.backward = _traced_backward
    autodiff._store_grad = _traced_store_grad
    for name in _CMP:
        _ORIG["cmp_" + name] = Tensor.__dict__[f"__{name}__"]
        setattr(Tensor, f"__{name}__", _traced_comparison(name, _ORIG["cmp_" + name]))


def _uninstall():
    _op.record = _ORIG["record"]
    _ops.generator_for = _ORIG["generator_for"]
    autodiff.backward = _ORIG["backward"]
    autodiff._store_grad = _ORIG["_store_grad"]
    for name in _CMP:
        setattr(Tensor, f"__{name}__", _ORIG["cmp_" + name])


def _trace(fn, args, kwargs):
    """Run fn eagerly on args (Tensors), observing every primitive call. Returns (result, trace)."""
    tr = _Trace(args)
    for j, a in enumerate(_leaves(args)):
        if True:
            if a._node is not None and a.requires_grad:
                tr.fail("an input is a computed Tensor that requires grad (its gradient would leave the step)")
            v = _Value("input", f"x{j}", a.data, a.requires_grad and a._node is None, tensor=a)
            v.node = j
            tr.inputs.append(v)
            tr.register(a._node or a, v)
    last_write = _tape.LAST_WRITE
    _install()
    _ACTIVE.append(tr)
    try:
        with Tape():
            result = fn(*args, **kwargs)
    finally:
        _ACTIVE.pop()
        _uninstall()
    if _tape.LAST_WRITE != last_write:
        tr.fail("an in-place write to a parameter inside the step (an optimizer step inside the compiled function?)")
    for node in tr.nodes:
        if node.record is not None and node.record.retain:
            tr.fail(f"retain_grad on the output of {node.op.name}")
    try:
        tr.result = _structure(tr, result)
    except _Unsupported as e:
        tr.fail(str(e))
    return result, tr


def _structure(tr, obj):
    """The returned object as a structure of _Values (Tensors), None, tuples, lists and dicts."""
    if obj is None:
        return None
    if isinstance(obj, Tensor):
        v = tr.known.get(id(obj._node or obj))
        if v is None:
            raise _Unsupported("the step returns a Tensor that is not a value of the trace")
        return v
    if isinstance(obj, (tuple, list)):
        return type(obj)(_structure(tr, o) for o in obj)
    if isinstance(obj, dict):
        return {k: _structure(tr, o) for k, o in obj.items()}
    raise _Unsupported(f"the step returns a {type(obj).__name__} (a Python value would be baked into the replay)")


# ------------------------------------------------------------------------------------------------------
# comparing two traces (the second call's check, check=True)

def _same_param(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape \
            and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same_param(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return a is b


def _ref(v):
    """How a value is referred to, comparable across traces."""
    if v.kind == "node":
        return ("node", v.node.k)
    if v.kind == "alias":
        return ("alias", _ref(v.node))
    if v.kind == "param":
        return ("param", id(v.tensor))
    if v.kind == "input":
        return ("input", v.node)
    if v.kind == "number":
        return ("number", type(v.number), v.number)
    if v.kind == "draw":
        return ("draw", id(v.tensor), v.number, v.array.shape, v.array.dtype)
    return ("const",)


def _describe(node):
    return f"record %{node.k} ({node.op.name}{_scope_text(node.scope)})"


def _diff(old, new, outputs=None):
    """The first difference between two traces, as text (None if they agree). With `outputs` (the old
    program's values on the new inputs), values are compared too."""
    for a, b in zip(old.nodes, new.nodes):
        if a.op is not b.op:
            return f"{_describe(a)}: the trace ran {a.op.name} here, this call ran {_describe(b)}"
        if len(a.inputs) != len(b.inputs) or any(_ref(x) != _ref(y) for x, y in zip(a.inputs, b.inputs)):
            return f"{_describe(a)}: its inputs come from different values in this call"
        for x, y in zip(a.inputs, b.inputs):
            if x.kind == "const" and not _same_param(np.asarray(x.array), np.asarray(y.array)):
                return (f"{_describe(a)}: a constant input differs between calls (computed outside tapegrad "
                        "ops from data that changes?)")
        if a.shape != b.shape:
            return f"{_describe(a)}: its value has shape {b.shape} in this call, {a.shape} in the trace"
        if a.params.keys() != b.params.keys() or not all(
                (a.dyn[k] is not None) or _same_param(a.params[k], b.params[k]) for k in a.params):
            return f"{_describe(a)}: its parameters differ in this call"
        if outputs is not None and a.value.kind == "node":
            got, want = outputs[a.k], b.out
            if np.shape(got) != np.shape(want) or not np.allclose(got, want, rtol=1e-9, atol=0, equal_nan=True):
                return f"{_describe(a)}: the replay computes a different value than eager execution"
    if len(old.nodes) != len(new.nodes):
        extra = old.nodes[len(new.nodes)] if len(old.nodes) > len(new.nodes) else new.nodes[len(old.nodes)]
        return (f"the trace has {len(old.nodes)} records, this call made {len(new.nodes)} "
                f"(first unmatched: {_describe(extra)})")
    if (old.root is None) != (new.root is None) or (old.root is not None and _ref(old.root) != _ref(new.root)):
        return "backward was called on a different value"
    if [id(p.tensor) for p in old.params] != [id(p.tensor) for p in new.params]:
        return "the step reads different parameters"
    return None


# ------------------------------------------------------------------------------------------------------
# planning the backward sweep (the decisions of autodiff._sweep, made once) and writing the program

def _rule_for(op, i):
    rules = op.vjps
    if type(rules) is PerInput:
        return ("variadic", rules.rule)
    if type(rules) is Joint:
        raise _Unsupported(f"op {op.name} has a Joint rule")
    rule = rules[i]
    if rule is identity:
        return ("identity", None)
    if rule is None:
        return None
    return ("rule", rule)


def _plan_backward(tr):
    """Walk the sweep with the traced arrays. Returns (steps, leaves): steps is a list of
    ("grad", node, origin) / ("edge", node, i, src, how) in sweep order (origin: equal for gradients
    that are one array); leaves the (value) stores in order."""
    root = tr.root
    seed = np.ones(np.shape(root.array), root.array.dtype)
    grads, owned, order = {id(root): seed}, set(), [root]
    vals = {id(root): root}
    origin, fresh = {id(root): 0}, itertools.count(1)     # which gradients are one array (identity rules)
    steps = []
    for node in reversed(tr.nodes):
        key = id(node.value)
        if key not in grads or node.value.kind != "node":
            continue
        g = grads.pop(key)
        o = origin.pop(key)
        steps.append(("grad", node, o))
        args = node.datas if node.op.keep_inputs else tuple(_spec(v, d) for v, d in zip(node.inputs, node.datas))
        ans = node.out if node.op.keep_ans else None
        for i, src in enumerate(node.inputs):
            if src.kind == "alias":
                continue
            if src.kind not in ("node", "param", "input") or not src.requires_grad:
                continue
            how = _rule_for(node.op, i)
            if how is None:
                continue
            kind, rule = how
            if kind == "identity":
                gi = g
            elif kind == "variadic":
                gi = rule(i, g, ans, args, **node.params)
            else:
                gi = rule(g, ans, *args, **node.params)
            if gi is None:
                continue
            gi0 = gi
            shape = np.shape(src.array)
            ub = gi.shape != shape
            if ub:
                before = gi
                gi = autodiff.unbroadcast(gi, shape, node.record, i)
                text = _unbroadcast_text(before.shape, shape)
                if not (text and _check_text(text.format(e="g"), gi, {"g": before})):
                    text = "unbroadcast({e}, " + repr(tuple(shape)) + ")"
                ub = text
            cast = None
            if gi.dtype is not src.array.dtype and gi.dtype != src.array.dtype:
                cast = src.array.dtype
                gi = gi.astype(cast)
            skey = id(src)
            prev = grads.get(skey)
            if prev is None:
                vals[skey] = src
                order.append(src)
            indexed = type(gi) is IndexedGrad
            inline_index = indexed and kind == "rule" and gi.values is g and "index" in node.params \
                and gi.index is node.params["index"] and node.dyn.get("index") is None
            if indexed or prev is not None:          # a sum: a new array
                origin[skey] = next(fresh)
            if indexed:
                basic = is_basic(gi.index)
                if skey not in owned:
                    acc = "zeros" if prev is None else "copy"
                    prev = grads[skey] = np.zeros(gi.shape, gi.dtype) if prev is None else np.array(prev)
                    owned.add(skey)
                else:
                    acc = "into"
                gi.add_to(prev)
            elif prev is None:
                grads[skey], acc = gi, "assign"
                origin[skey] = o if gi is g else next(fresh)
            elif skey in owned:
                prev += gi
                acc = "iadd"
            else:
                total = prev + gi
                acc = "add"
                if type(total) is not np.ndarray:
                    total = np.asarray(total)
                grads[skey] = total
                owned.add(skey)
            spec = _specialize_rule(node, i, kind, g, ans, args, gi0) if kind in ("rule", "variadic") else None
            steps.append(("edge", node, i, src, dict(kind=kind, rule=rule, spec=spec, ub=ub, cast=cast, acc=acc,
                                                       indexed=indexed, inline_index=inline_index,
                                                       basic=indexed and basic, shape=shape,
                                                       gshape=gi.shape, gdtype=gi.dtype)))
        owned.discard(key)
    leaves = [v for v in order if id(v) in grads and v.kind in ("param", "input")]
    return steps, leaves


# Specializations: the same numpy expression an op's forward or rule evaluates, written inline (no Python
# call per record). Each is used only where it reproduces the traced value bit for bit, so a change to
# an op's kernel falls back to calling it.
_RULE_TEXT = {
    ("mul", 0): "{g} * {a1}", ("mul", 1): "{g} * {a0}",
    ("tanh", 0): "{g} * ({one} - {ans} * {ans})", ("sigmoid", 0): "{g} * {ans} * ({one} - {ans})",
    ("sub", 1): "-{g}", ("neg", 0): "-{g}",
}


@functools.lru_cache(maxsize=1024)
def _expression(text):
    return builtins.compile(text, "<specialization>", "eval")


def _check_text(text, expected, env):
    try:
        got = eval(_expression(text), {"np": np}, env)
    except Exception:
        return None
    if type(got) is type(expected) and np.shape(got) == np.shape(expected) and got.dtype == expected.dtype \
            and np.array_equal(got, expected, equal_nan=True):
        return text
    return None


def _transposed_weights(steps):
    """exact=False: the weights W of 2-d products whose input gradient g W^T is needed at two or more steps
    (a recurrent weight). Their rules become np.dot(g, W^T) with W^T made contiguous once per call (BLAS's
    faster form of the product; equal to (W g^T)^T to rounding). Returns those weights' values."""
    edges = collections.defaultdict(list)
    for step in steps:
        if step[0] == "edge" and step[2] == 0 and step[4]["spec"] == _MATMUL_DX:
            y = step[1].inputs[1]
            if y.kind in ("param", "node") and step[1].casts[1] is None:
                edges[id(y)].append(step)
    out = []
    for group in edges.values():
        if len(group) < 2:
            continue
        y = group[0][1].inputs[1]
        for step in group:
            step[4]["spec"] = "np.dot({g}, T_" + y.name + ")"
        out.append(y)
    return out


_MATMUL_DX = "({a1} @ {g}.mT).mT"


def _specialize_rule(node, i, kind, g, ans, args, gi):
    name = node.op.name
    if name == "mse_loss" and _mse_inline(node) and np.ndim(g) == 0 and isinstance(g, (np.ndarray, np.generic)):
        scale = 2 / np.size(node.datas[0]) if node.params["reduction"] == "mean" else 2
        factor = ("(float({g}) * " if type(g) is np.ndarray else "({g} * ") + repr(scale) + ")"   # as _mse_grad
        text = "{d} * " + factor if i == 0 else "-({d} * " + factor + ")"
        env = {"d": np.subtract(*node.datas), "g": g}
        return text if _check_text(text.format(d="d", g="g"), gi, env) else None
    if type(gi) is not np.ndarray or node.params and name != "stack":
        return None
    text = _RULE_TEXT.get((name, i))
    if name == "stack" and set(node.params) == {"axis"}:
        text = "{g}[" + _index_text((slice(None),) * node.params["axis"] + (i,)) + "]"
    if name == "matmul" and len(args) == 2 and all(isinstance(a, np.ndarray) and a.ndim == 2 for a in args) \
            and g.ndim == 2:
        text = _MATMUL_DX if i == 0 else "{a0}.mT @ {g}"
    if text is None:
        return None
    env = {"g": g, "ans": ans, "one": _one(ans), **{f"a{j}": a for j, a in enumerate(args)}}
    names = {"g": "g", "ans": "ans", "one": "one", **{f"a{j}": f"a{j}" for j in range(len(args))}}
    return _check_text(text.format(**names), gi, env) and text


_ONES = {np.dtype(t): np.array(1, t) for t in (np.float16, np.float32, np.float64)}


def _one(a):
    """1 as a 0-d array of a's float dtype (numpy's scalar arithmetic is slower with a Python 1), else 1."""
    return _ONES.get(getattr(a, "dtype", None), 1)


def _unbroadcast_text(gshape, shape):
    """The inline form of autodiff.unbroadcast from gshape to shape (checked against it by the caller)."""
    lead = len(gshape) - len(shape)
    if int(np.prod(gshape)) == int(np.prod(shape)):
        return "({e}).reshape(" + repr(tuple(shape)) + ")"
    if lead > 0 and tuple(gshape[lead:]) == tuple(shape):
        return "np.add.reduce({e}, axis=" + (repr(tuple(range(lead))) if lead > 1 else "0") + ")"
    return None


def _index_text(index):
    """Python subscript syntax for a basic index (ints, slices, None), or None."""
    parts = index if isinstance(index, tuple) else (index,)
    out = []
    for p in parts:
        if p is None:
            out.append("None")
        elif type(p) is int:
            out.append(repr(p))
        elif type(p) is slice and all(v is None or type(v) is int for v in (p.start, p.stop, p.step)):
            t = f"{'' if p.start is None else p.start}:{'' if p.stop is None else p.stop}"
            out.append(t + (f":{p.step}" if p.step is not None else ""))
        else:
            return None
    if isinstance(index, tuple) and len(parts) == 1:
        return out[0] + ","
    return ", ".join(out) if out else "()"


def _specialize_forward(node):
    name, datas, out = node.op.name, node.datas, node.out
    if any(c is not None for c in node.casts) or any(d is not None for d in node.dyn.values()):
        return None
    text = None
    if name == "matmul" and not node.params and len(datas) == 2 and \
            all(isinstance(d, np.ndarray) and d.ndim == 2 for d in datas):
        text = "np.dot({a0}, {a1})"
    elif name == "getitem" and set(node.params) == {"index"}:
        idx = _index_text(node.params["index"])
        if idx is not None:
            text = "{a0}[" + idx + "]"
    if text is None:
        return None
    env = {f"a{j}": d for j, d in enumerate(datas)}
    got = _check_text(text.format(**{k: k for k in env}), out, env)
    return text if got is not None else None


_SIGMOID = "{n} = np.multiply({x}, {half}{out}); np.tanh({n}, out={n}); {n} *= {half}; {n} += {half}"


def _sigmoid_text(node, x, w, into_buffer=False):
    """ops._sigmoid (tanh(x / 2) / 2 + 1/2) as one line of its four ufunc calls on one new array (or on a
    buffer the program keeps), or None: written only where that line gives the traced value bit for bit."""
    data, out = node.datas[0], node.out
    half = _ops._HALF.get(getattr(data, "dtype", None))
    if node.op is not _ops.sigmoid.op or node.params or any(c is not None for c in node.casts) \
            or type(data) is not np.ndarray or data.ndim == 0 or half is None:
        return None
    env = {"x": data, "half": half, "buf": np.empty_like(out)}
    exec(_SIGMOID.format(n="s", x="x", half="half", out=", out=buf" if into_buffer else ""), {"np": np}, env)
    s = env["s"]
    if s.dtype != out.dtype or s.shape != out.shape or not np.array_equal(s, out, equal_nan=True):
        return None
    buf = f", out={w.bind('B', np.empty_like(out))}" if into_buffer else ""
    return _SIGMOID.format(n=node.value.name, x=x, half=w.bind("HALF", half), out=buf)


def _mse_inline(node):
    """Whether mse_loss's reduced forward is written inline, keeping pred - target for its rules: only
    where that reproduces losses._squared_error bit for bit."""
    if node.op.name != "mse_loss" or node.params.get("reduction") not in ("mean", "sum") \
            or any(c is not None for c in node.casts) or any(d is not None for d in node.dyn.values()):
        return False
    p, t = node.datas
    if not (type(p) is np.ndarray and type(t) is np.ndarray and p.shape == t.shape and p.dtype == t.dtype):
        return False
    d = np.subtract(p, t)
    got = np.asarray(np.vdot(d, d) if node.params["reduction"] == "sum" else np.vdot(d, d) / int(d.size))
    return got.dtype == node.out.dtype and np.array_equal(got, node.out, equal_nan=True)


def _spec(v, data):
    if v.kind == "number" or not isinstance(data, np.ndarray):
        return data
    return _Spec(data.shape, data.dtype)


class _Writer:
    def __init__(self):
        self.ns = {"np": np, "Tensor": Tensor, "_draw_mask": _draw_mask, "unbroadcast": autodiff.unbroadcast,
                   "_Stale": _Stale,
                   "_store_grad": autodiff._store_grad}
        self.names = {}
        self.rule_args = {}          # id(node) -> _rule_args(node)

    def bind(self, prefix, obj):
        key = (prefix, id(obj))
        name = self.names.get(key)
        if name is None:
            name = f"{prefix}{len(self.names)}"
            self.names[key] = name
            self.ns[name] = obj
        return name

    def fn_name(self, op):
        f = op.forward
        if isinstance(f, np.ufunc) and getattr(np, f.__name__, None) is f:
            return f"np.{f.__name__}"
        name = f"f_{op.name}"
        if self.ns.get(name, f) is not f:
            return self.bind(name + "_", f)
        self.ns[name] = f
        return name


def _expr(v, w):
    """Source text naming a value in the generated program."""
    if v.kind == "draw":
        return v.name
    if v.kind == "number":
        return repr(v.number)
    if v.kind == "const":
        if v.name.startswith("c_"):
            if w.ns.get(v.name, v.array) is v.array:
                w.ns[v.name] = v.array
                return v.name
        return w.bind("c", v.array)
    if v.kind == "alias":
        return _expr(v.node, w)
    return v.name


def _param_text(node, w):
    """`, **K3` or explicit keywords when a parameter holds a traced array (x[idx] with idx an input)."""
    if not node.params:
        return ""
    if all(d is None for d in node.dyn.values()):
        return ", **" + w.bind("K", node.params)
    parts = []
    for k, val in node.params.items():
        d = node.dyn[k]
        parts.append(f"{k}={_dyn_text(val, d, w)}")
    return ", " + ", ".join(parts)


def _dyn_text(val, d, w):
    if d is None:
        return w.bind("k", val) if not isinstance(val, (int, float, bool, type(None), str)) else repr(val)
    if isinstance(d, _Value):
        return _expr(d, w)
    return "(" + "".join(_dyn_text(x, e, w) + ", " for x, e in zip(val, d)) + ")"


def _comment(node):
    scope = node.scope
    label = repr(scope) if scope is not None else ""
    shape = f"{tuple(np.shape(node.out))} {node.out.dtype}"
    params = "".join(f" {k}=[{_index_text(v)}]" if k == "index" and _index_text(v) is not None
                     else f" {k}={_tape._short(v)}" for k, v in node.params.items())
    return f"# %{node.k} {node.op.name}{params} : {shape}" + (f" | {label}" if label and label != "<root>" else "")


def _batch_kind(node, i, how):
    """"product" for a 2-d matmul's weight-gradient contribution x_t^T g_t, "sum" for a bias's (a (B, N)
    gradient summed over its rows into (N,)), else None."""
    if how["cast"] is not None or how["indexed"]:
        return None
    if i == 1 and how.get("spec") == "{a0}.mT @ {g}" and not how["ub"] and node.casts[0] is None:
        return "product"
    out = np.shape(node.out)
    if how["kind"] == "identity" and how["ub"] and len(out) == 2 and tuple(how["shape"]) == out[1:] \
            and not how["ub"].startswith("unbroadcast"):
        return "sum"
    return None


def _batch_weight_grads(steps):
    """Group, per value, the 2-d matmul weight-gradient contributions x_t^T g_t of its uses (or a bias's
    row sums): the program then computes them as one product X^T G over the stacked steps (one sum of
    the stacked rows), a reordered sum, not bit-identical. Re-derives the accumulation of the value's
    other contributions. Returns {id(value): (value, whether it has other contributions)}."""
    groups = collections.defaultdict(lambda: collections.defaultdict(list))
    for step in steps:
        if step[0] != "edge":
            continue
        _, node, i, src, how = step
        kind = _batch_kind(node, i, how) if src.kind in ("param", "input", "node") else None
        if kind is not None:
            groups[id(src)][kind].append(how)
    batched = {}
    for key, kinds in groups.items():
        kind, hows = max(kinds.items(), key=lambda kv: len(kv[1]))
        if len(hows) < 2:
            continue
        for how in hows:
            how["batch"] = kind
        batched[key] = None
    seen, owned = set(), set()
    for step in steps:
        if step[0] != "edge" or id(step[3]) not in batched:
            continue
        how, key = step[4], id(step[3])
        batched[key] = step[3]
        if how.get("batch"):
            continue
        if how["indexed"]:
            how["acc"] = "zeros" if key not in seen else "into" if key in owned else "copy"
            owned.add(key)
        elif key not in seen:
            how["acc"] = "assign"
        elif key in owned:
            how["acc"] = "iadd"
        else:
            how["acc"] = "add"
            owned.add(key)
        seen.add(key)
    return {k: (v, k in seen) for k, v in batched.items()}


def _tiling(indices, shape):
    """(axis, "concatenate" | "stack", order) when the basic indices cut `shape` into pieces that tile it
    exactly once along one axis (x[:, 0:20], x[:, 20:40], ...; or x[0], x[1], ...), else None."""
    axis, kind, spans = None, None, []
    for index in indices:
        parts = index if isinstance(index, tuple) else (index,)
        ax = len(parts) - 1
        if ax >= len(shape) or any(p != slice(None) for p in parts[:ax]):
            return None
        last = parts[ax]
        if type(last) is int:
            k, start = "stack", last % shape[ax] if -shape[ax] <= last < shape[ax] else None
            stop = None if start is None else start + 1
        elif type(last) is slice and last.step in (None, 1) and last != slice(None):
            k = "concatenate"
            start, stop, _ = last.indices(shape[ax])
        else:
            return None
        if start is None or (axis, kind) not in ((None, None), (ax, k)):
            return None
        axis, kind = ax, k
        spans.append((start, stop))
    order = sorted(range(len(spans)), key=lambda j: spans[j])
    edge = 0
    for j in order:
        if spans[j][0] != edge or spans[j][1] <= edge:
            return None
        edge = spans[j][1]
    return (axis, kind, order) if edge == shape[axis] else None


def _gathers(steps):
    """The gradients that are only getitem pieces tiling their value exactly (an LSTM's gate slices, the
    steps of a hoisted projection): built by one concatenate/stack where they are used, not by adding
    each piece into zeros. {id(value): (axis, kind, [piece gradient's node, in order])}."""
    pieces, other = collections.defaultdict(list), set()
    for step in steps:
        if step[0] != "edge":
            continue
        _, node, _, src, how = step
        if how["inline_index"] and how["basic"] and not how["ub"] and how["cast"] is None \
                and node.out.dtype == how["gdtype"]:
            pieces[id(src)].append((node, how))
        else:
            other.add(id(src))
    plans = {}
    for key, ps in pieces.items():
        if key in other or len(ps) < 2:
            continue
        tiling = _tiling([node.params["index"] for node, _ in ps], ps[0][1]["gshape"])
        if tiling is not None:
            axis, kind, order = tiling
            for _, how in ps:
                how["gathered"] = True
            plans[key] = (axis, kind, [ps[j][0] for j in order])
    return plans


class _Gathers:
    """Where each gathered gradient is built. Pieces along axis 0 (the steps of a hoisted product, the
    outputs of a stack over time) are copied, each as soon as it is final, into rows of a buffer the
    program keeps between calls, so they need not all stay alive until their value's gradient is used;
    pieces along a later axis (a cell's gates, final within a few lines) are joined by one concatenate,
    written straight into its rows when the joined gradient is itself such a piece (one array: the
    sweep's identity rules pass it on unchanged). `slots`: origin -> (buffer, index, rows of its 2-d view)."""

    def __init__(self, plans, steps, w):
        self.plans, self.buf, self.slots, self.by_node, self.arrays = plans, {}, {}, {}, {}
        origin = {id(st[1].value): st[2] for st in steps if st[0] == "grad"}
        self.origin = origin
        for key, (axis, _, nodes) in plans.items():
            if axis != 0:
                continue
            shape = np.shape(nodes[0].inputs[0].array)
            buf = np.empty(shape, nodes[0].out.dtype)
            name = self.buf[key] = w.bind("BG", buf)
            self.arrays[key] = buf
            inner = int(np.prod(shape[1:-1])) if len(shape) > 1 else 1
            for n in nodes:
                index = n.params["index"]
                first = index[0] if isinstance(index, tuple) else index
                a, b = (first, first + 1) if type(first) is int else first.indices(shape[0])[:2]
                slot = (name, _index_text(index), (a * inner, b * inner), buf, n)
                self.by_node[id(n.value)] = slot
                if id(n.value) in origin:
                    self.slots.setdefault(origin[id(n.value)], slot)
        self.columns = {}        # origin of a gate's gradient -> (its rows' slot, its columns) in a time-axis buffer
        for key, (axis, _, nodes) in plans.items():
            slot = self.by_node.get(key)
            if slot is None or axis != np.ndim(nodes[0].inputs[0].array) - 1:
                continue
            width = np.shape(nodes[0].inputs[0].array)[-1]
            for n in nodes:
                index = n.params["index"]
                last = index[-1] if isinstance(index, tuple) else index
                if id(n.value) in origin and type(last) is slice:
                    self.columns.setdefault(origin[id(n.value)], (slot, last.indices(width)[:2]))
        self.in_place = set()
        self.batches = None

    def forward_into(self, node, args, values, backward_names, returned):
        """The line computing a value into the buffer its own gradient is gathered into, or None.

        A hoisted projection (T, B, 4H) is read step by step in the forward and, when no rule keeps it
        or a view of it, never after: its gradient's buffer can hold it until the backward writes the first
        piece, as hand-written code reuses one buffer (only where out= gives the traced value bit for bit)."""
        buf = self.arrays.get(id(node.value))
        if (buf is None or node.params or any(c is not None for c in node.casts)
                or any(np.may_share_memory(node.out, r) for r in returned if isinstance(r, np.ndarray))):
            return None
        if _numpy_ufunc(node):
            forward = node.op.forward
        elif _specialize_forward(node) == "np.dot({a0}, {a1})":
            forward = np.dot
        else:
            return None
        if not _reproduces_into(node, buf, forward) or any(
                v.name in backward_names for v in values
                if isinstance(v.array, np.ndarray) and np.may_share_memory(v.array, node.out)):
            return None
        return f"    {node.value.name} = np.{forward.__name__}({', '.join(args)}, out={self.buf[id(node.value)]})"

    def column_block(self, origins, width, dtype, when, total_at):
        """(strided 2-d view, rows of each g_t) when the g_t (by origin) are the same columns of every
        step's rows of one time-axis buffer, tiling its rows exactly once, each written before sweep step
        `total_at` (`when`: value -> its gradient's step; a GRU's [W_r W_z] and W_n: their G are column
        blocks of the gates' gradient); else None."""
        cols = [self.columns.get(o) for o in origins]
        if None in cols or len({(id(slot[3]), span) for slot, span in cols}) != 1:
            return None
        (_, _, _, buf, _), (c0, c1) = cols[0]
        rows = [slot[2] for slot, _ in cols]
        n = buf.size // buf.shape[-1]
        if c1 - c0 != width or buf.dtype != dtype or len(set(rows)) != len(rows) \
                or sum(b - a for a, b in rows) != n or not all(when[id(slot[4].value)] < total_at for slot, _ in cols):
            return None
        return buf.reshape(n, buf.shape[-1])[:, c0:c1], rows

    def operand_into(self, node, m, w, returned):
        """The line computing a hoisted product x W (`m`, the first operand of `node`, its `+ b`, which is
        computed into its gradient's buffer) into that buffer too, or None: as ops.matmul computes it (one
        2-d product of the rows of a contiguous x), checked bit for bit on the traced arrays. The caller
        has checked that nothing but `node` reads it."""
        buf = self.arrays[id(node.value)]
        if m is None or m.op.name != "matmul" or m.params or any(c is not None for c in m.casts) \
                or not all(isinstance(d, np.ndarray) for d in m.datas) or np.shape(m.out) != buf.shape \
                or m.out.dtype != buf.dtype or not _numpy_ufunc(node) \
                or any(isinstance(r, np.ndarray) and np.may_share_memory(m.out, r) for r in returned):
            return None
        x, y = m.datas
        if y.ndim != 2 or x.ndim < 2 or (x.ndim > 2 and not x.flags.c_contiguous):
            return None
        rows = (int(np.prod(x.shape[:-1])), x.shape[-1])

        def into_rows(x, y, out):
            np.dot(x.reshape(rows), y, out=out.reshape(rows[0], -1))
            return out
        if not _reproduces_into(m, buf, into_rows):
            return None
        a0, a1 = _input_texts(m, w)
        name = self.buf[id(node.value)]
        if x.ndim == 2:
            return f"    {m.value.name} = np.dot({a0}, {a1}, out={name})"
        flat = w.bind("BG", buf.reshape(rows[0], -1))       # ops.matmul's path for a contiguous batch of rows
        return (f"    np.dot({a0}.reshape{rows}, {a1}, out={flat}) if {a0}.flags.c_contiguous "
                f"else np.copyto({name}, {w.fn_name(m.op)}({a0}, {a1})); {m.value.name} = {name}")

    def piece(self, v):
        """The line copying a finished piece's gradient into its slot, or None (none, or already there)."""
        slot = self.by_node.get(id(v))
        if slot is None or self.origin.get(id(v)) in self.in_place:
            return None
        line = f"    {slot[0]}[{slot[1]}] = g_{v.name}"
        return f"{line:<60}  # its rows of the gradient it is a piece of"

    def whole(self, src):
        axis, kind, nodes = self.plans[id(src)]
        what = src.name if src.kind != "node" else f"%{src.node.k}"
        if id(src) in self.buf:
            line = f"    g_{src.name} = {self.buf[id(src)]}"
            return f"{line:<60}  # d/d {what}: its {len(nodes)} pieces' gradients, copied in as they were final"
        pieces = ", ".join(f"g_{n.value.name}" for n in nodes)
        into = self.destination(src) if kind == "concatenate" else None
        if into is not None:
            line = f"    g_{src.name} = np.concatenate(({pieces}), axis={axis}, out={into[0]}[{into[1]}])"
            return f"{line:<60}  # d/d {what}: its {len(nodes)} pieces, side by side in its rows of {into[0]}"
        line = f"    g_{src.name} = np.{kind}(({pieces}), axis={axis})"
        return f"{line:<60}  # d/d {what}: its {len(nodes)} pieces' gradients side by side"

    def destination(self, src):
        """(buffer, index) of the rows a joined gradient can be written into: its slot of a time-axis
        gather, or its rows of a batch's G; None."""
        slot = self.slots.get(self.origin.get(id(src)))
        if slot is not None:
            self.in_place.add(self.origin[id(src)])
            return slot[0], slot[1]
        into = self.batches.g_destination(src) if self.batches is not None else None
        return None if into is None else (into[0], f"{into[1][0]}:{into[1][1]}")


def _returned_values(r):
    if isinstance(r, _Value):
        return [r]
    if isinstance(r, dict):
        r = list(r.values())
    return [x for e in r for x in _returned_values(e)] if isinstance(r, (list, tuple)) else []


def _returned_arrays(r):
    return [v.array for v in _returned_values(r)]


def _buffer_text(node, args, returned, w):
    """Lines computing an elementwise node into a buffer the program keeps between calls (`out=`), or
    None. Used only where it reproduces the traced value bit for bit, and never for a returned value."""
    out, f = node.out, node.op.forward
    if (node.params or np.ndim(out) == 0 or any(c is not None for c in node.casts)
            or any(np.may_share_memory(out, r) for r in returned if isinstance(r, np.ndarray))):
        return None
    name = node.value.name
    if _numpy_ufunc(node):
        if not _reproduces_into(node, np.empty_like(out)):
            return None
        buf = w.bind("B", np.empty_like(out))
        return [f"{name} = np.{f.__name__}({', '.join(args)}, out={buf})"]
    if len(args) == 1:
        text = _sigmoid_text(node, args[0], w, into_buffer=True)
        return None if text is None else [text]
    return None


def _numpy_ufunc(node):
    """Whether a node's forward is a one-output numpy ufunc (np.add, np.tanh, ...), callable with out=."""
    f = node.op.forward
    return isinstance(f, np.ufunc) and f.nout == 1 and getattr(np, f.__name__, None) is f


def _reproduces_into(node, buf, forward=None):
    """Whether the node's ufunc (or `forward`, as np.dot for a 2-d product) computed into `buf` (out=)
    gives its traced value bit for bit."""
    if buf.shape != np.shape(node.out) or buf.dtype != node.out.dtype:
        return False
    try:
        test = (forward or node.op.forward)(*node.datas, out=np.empty_like(buf))
    except Exception:
        return False
    return np.array_equal(test, node.out, equal_nan=True)


def _generate(tr, batch_weight_grads=False, reuse_buffers=False, fuse=False):
    """The program's source and namespace; fuse: with the products rewritten by `fusion.fuse`."""
    if fuse:
        from . import fusion
        tr = copy.copy(tr)
        keep = {id(v) for v in _returned_values(tr.result)} | {id(tr.root)}
        tr.nodes = fusion.fuse(tr.nodes, keep, _Node, _Value)
    w = _Writer()
    returned = _returned_arrays(tr.result)
    lines = []
    sig = [v.name for v in tr.inputs] + [f"T{v.name}" for v in tr.inputs if v.requires_grad]
    lines.append(f"def step({', '.join(sig)}):")
    if tr.params:
        guard = " or ".join(f"{w.bind('P', p.tensor)}.data is not {p.name}" for p in tr.params)
        lines.append(f"    if {guard}:")
        lines.append("        raise _Stale   # a parameter's array was replaced: trace again")
    for p in tr.params:
        w.ns[p.name] = p.array              # the parameter's own array: in-place updates are seen
    if tr.root is not None:                   # the sweep's plan first: the forward may write into its buffers
        steps, leaves = _plan_backward(tr)
        transposed = _transposed_weights(steps) if fuse else []
        batched = _batch_weight_grads(steps) if batch_weight_grads else {}
        gathers = _gathers(steps)
        joins = _Gathers(gathers, steps, w)
        buffers = joins.batches = _Batches(steps, batched, w, joins, tr.nodes)
    else:
        buffers, leaves = None, []
    lines.append("    # forward: the Wengert list (one line per record)")
    hoisted = []                              # (line, node, args): values whose gradient has a gather buffer
    for node in tr.nodes:
        for v in node.inputs:
            if v.kind == "draw":
                draw = (f"    {v.name} = _draw_mask({w.bind('rng', v.tensor)}, {v.number!r}, {v.array.shape}, "
                        f"{w.bind('dt', v.array.dtype)})")
                lines.append(f"{draw:<60}  # dropout's mask, drawn from the step's generator")
        args = _input_texts(node, w)
        into = buffers.x_destination(node, args, returned) if buffers is not None else None
        if into is None and buffers is not None:
            into = buffers.stacked_view(node, returned)
        if into is not None:
            lines.append(f"{into:<60}  {_comment(node)}")
            continue
        buffered = _buffer_text(node, args, returned, w) if reuse_buffers else None
        if buffered is not None:
            for j, text in enumerate(buffered):
                line = f"    {text}"
                lines.append(f"{line:<60}  {_comment(node)}" if j == len(buffered) - 1 else line)
            continue
        inline = _sigmoid_text(node, args[0], w) if len(args) == 1 else None
        if inline is not None:                # ops._sigmoid's four ufunc calls, without the Python call
            lines.append(f"{'    ' + inline:<60}  {_comment(node)}")
            continue
        if _mse_inline(node):                 # the difference kept for backward: one subtraction, not two
            a, b = args
            n = "" if node.params["reduction"] == "sum" else f" / {int(np.size(node.datas[0]))}"
            line = f"    d_{node.value.name} = np.subtract({a}, {b}); {node.value.name} = " \
                   f"np.asarray(np.vdot(d_{node.value.name}, d_{node.value.name}){n})"
            lines.append(f"{line:<60}  {_comment(node)}")
            continue
        spec = _specialize_forward(node)
        if spec is not None:
            call = spec.format(**{f"a{j}": a for j, a in enumerate(args)})
        else:
            call = f"{w.fn_name(node.op)}({', '.join(args)}{_param_text(node, w)})"
        if np.ndim(node.out) == 0:
            call = f"np.asarray({call})"
        line = f"    {node.value.name} = {call}"
        lines.append(f"{line:<60}  {_comment(node)}")
        if tr.root is not None and id(node.value) in joins.arrays:
            hoisted.append((len(lines) - 1, node, args))
    if tr.root is not None:
        backward_from = len(lines)
        lines.append("    # backward: the adjoint, in reverse recording order (g_v = d loss / d v)")
        root = tr.root
        seed = np.ones(np.shape(root.array), root.array.dtype)
        seed.setflags(write=False)
        seed_line = f"    g_{_gname(root)} = {w.bind('ONES', seed)}"
        lines.append(f"{seed_line:<60}  # seed: d loss / d loss = 1")
        for y in transposed:
            line = f"    T_{y.name} = np.ascontiguousarray({_expr(y, w)}.T)"
            lines.append(f"{line:<60}  # once per call: the steps' g @ {y.name}^T read it")
        for step in steps:
            if step[0] == "grad":
                v = step[1].value
                for key in buffers.deferred.pop(id(v), ()):
                    lines.append(buffers.total(*batched.pop(key)))
                if id(v) in batched and id(v) not in buffers.waiting:
                    lines.append(buffers.total(*batched.pop(id(v))))
                if id(v) in gathers:
                    lines.append(joins.whole(v))
                slot_line = joins.piece(v)
                if slot_line is not None:
                    lines.append(slot_line)
                continue
            _, node, i, src, how = step
            if how.get("gathered"):
                continue
            if how.get("batch"):
                line = buffers.term(node, src, how)
                if line is not None:
                    lines.append(line)
                continue
            lines.extend(_edge_lines(node, i, src, how, w))
        for src, others in batched.values():
            lines.append(buffers.total(src, others))
        for v in leaves:
            if id(v) in gathers:
                lines.append(joins.whole(v))
    if hoisted:
        backward_names = set(_NAME.findall("\n".join(lines[backward_from:])))
        values = [n.value for n in tr.nodes]
        producer = {id(n.value): n for n in tr.nodes}
        for i, node, args in hoisted:
            into = joins.forward_into(node, args, values, backward_names, returned)
            if into is None:
                continue
            lines[i] = f"{into:<60}  {_comment(node)}"
            v = node.inputs[0]
            reads = [j for j in range(backward_from) if v.name in _NAME.findall(lines[j].split("#")[0])]
            operand = joins.operand_into(node, producer.get(id(v)), w, returned) \
                if len(reads) == 2 and v.name not in backward_names and args[0] == v.name else None
            if operand is not None:                    # x W itself goes into the buffer; `+ b` then in place
                lines[reads[0]] = f"{operand:<60}  {_comment(producer[id(v)])}"
    lines.append("    # the outputs")
    for v in leaves:
        if v.kind == "param":
            target = w.bind("P", v.tensor)
        else:
            target = f"T{v.name}"
        lines.append(f"    _store_grad({target}, g_{_gname(v)})")
    lines.append(f"    return {_result_text(tr.result, w)}")
    return _free_dead("\n".join(lines) + "\n"), w.ns


_NAME = re.compile(r"[A-Za-z_]\w*")     # the names a line of the program may read


def _free_dead(source):
    """The program with `del` after each local's last use: a value or gradient is freed as soon as
    nothing later reads it (as the eager sweep frees them), so memory is that of the live values, not
    of every value of the step at once. A del reads nothing and changes no result."""
    fn = ast.parse(source).body[0]
    args = {a.arg for a in fn.args.args}
    last = {}
    for stmt in fn.body:
        for n in ast.walk(stmt):
            if type(n) is ast.Name and n.id not in args:
                last[n.id] = max(last.get(n.id, 0), stmt.end_lineno)
    local = {n.id for stmt in fn.body for n in ast.walk(stmt) if type(n) is ast.Name and type(n.ctx) is ast.Store}
    dead = collections.defaultdict(list)
    for name, line in last.items():
        if name in local:
            dead[line].append(name)
    final = fn.body[-1].lineno           # the return: nothing to free after it
    out = []
    for number, line in enumerate(source.splitlines(), 1):
        out.append(line)
        if number in dead and number < final:
            out.append("    del " + ", ".join(sorted(dead[number])))
    return "\n".join(out) + "\n"


class _Batches:
    """The batched gradient terms of each value: every step's x_t and g_t are copied into its rows of two
    buffers the program keeps between calls (as careful hand-written BPTT preallocates them), and the
    total is one product X^T G (or one sum of G's rows) where the value's gradient is used. Where every
    g_t is one array with a row slot of a gathered gradient (the gates' gradient of a cell whose input
    product was hoisted), G is that gathered buffer itself, or a column block of it (a GRU's [W_r W_z]
    and W_n): no copy. A stack of the X rows h_1 ... h_T (the states the output layer reads) is a view
    of the X buffer, which then holds h_0 ... h_T."""

    def __init__(self, steps, batched, w, gathers, forward):
        self.w, self.kind, self.rows, self.bufs, self.shared = w, {}, {}, {}, set()
        self.g_rows, self.x_rows, self.done = {}, {}, set()      # destinations; terms already in their rows
        when = {id(st[1].value): j for j, st in enumerate(steps) if st[0] == "grad"}   # a gradient is final
        terms, last_term = collections.defaultdict(list), {}
        for j, step in enumerate(steps):
            if step[0] == "edge" and step[4].get("batch") and id(step[3]) in batched:
                _, node, _, src, how = step
                self.kind[id(src)] = how["batch"]
                terms[id(src)].append(node)
                last_term[id(src)] = j
        # A batched value that is a gathered piece (W_h[:, :2H]) is read only where its whole is joined:
        # its total waits until then (`deferred`: whole -> pieces), when more of G's rows are written.
        whole = {id(st[1].value): st[3] for st in steps if st[0] == "edge" and st[4].get("gathered")}
        self.deferred = collections.defaultdict(list)
        self.waiting = {key for key in terms if key in whole}      # the deferred keys
        writers = {}                                   # the g_t arrays of a batch with its own G -> its G, rows
        xshape = {}                                    # key -> its X buffer's rows, columns, dtype
        for key, nodes in terms.items():
            x0, g0 = np.shape(nodes[0].inputs[0].array), np.shape(nodes[0].out)
            dtype = nodes[0].out.dtype
            slots = [gathers.slots.get(gathers.origin.get(id(n.value))) for n in nodes]
            buf = slots[0][3] if slots[0] is not None else None
            if key in whole:
                self.deferred[id(whole[key])].append(key)
            at = id(whole[key]) if key in whole else key
            total_at = when.get(at, len(steps))      # the gradient step it is read at, or the end for a leaf
            origins = tuple(gathers.origin.get(id(n.value)) for n in nodes)
            writer = writers.get((origins, g0[1], dtype))
            block = gathers.column_block(origins, g0[1], dtype, when, total_at)
            if buf is None and block is not None:
                self.shared.add(key)                   # G is a column block of the gathered buffer: no copy
                bg, rows = w.bind("BG", block[0]), block[1]
                n = block[0].shape[0]
            elif buf is not None and all(sl is not None and sl[3] is buf and when[id(sl[4].value)] < total_at
                                       for sl in slots) and \
                    buf.shape[-1] == g0[1] and buf.dtype == dtype and \
                    sum(sl[2][1] - sl[2][0] for sl in slots) == buf.size // buf.shape[-1]:
                self.shared.add(key)                   # G is the gathered buffer; X rows follow its rows
                rows = [sl[2] for sl in slots]
                n = buf.size // buf.shape[-1]
                bg = w.bind("BG", buf.reshape(n, buf.shape[-1]))
            elif None not in origins and writer is not None and last_term[writer[2]] < total_at:
                self.shared.add(key)                   # the same g_t as another batch (a bias and its product)
                bg, rows, _ = writer
                n = rows[-1][1]
            else:
                edges = np.cumsum([0] + [np.shape(m.out)[0] for m in nodes]).tolist()
                rows = list(zip(edges[:-1], edges[1:]))
                n = edges[-1]
                bg = w.bind("BG", np.empty((n, g0[1]), dtype))
                for m, r in zip(nodes, rows):              # a gathered g_t can be joined straight into its rows
                    self.g_rows.setdefault(id(m.value), (bg, r, key))
                if None not in origins:
                    writers.setdefault((origins, g0[1], dtype), (bg, rows, key))
            self.bufs[key] = (None, bg)
            for m, r in zip(nodes, rows):
                self.rows[key, id(m)] = r
                if self.kind[key] == "product":
                    self.x_rows.setdefault(id(m.inputs[0]), (key, r, id(m)))
            if self.kind[key] == "product":
                xshape[key] = (n, x0[1], dtype)
        self.views, extra = self._stacked_views(forward, xshape)
        self.x_count = {}                              # key -> its X rows, where the buffer has more after them
        for key, (n, cols, dtype) in xshape.items():
            bx = np.zeros((n + extra.get(key, 0), cols), dtype)
            self.bufs[key] = (w.bind("BX", bx), self.bufs[key][1])
            if key in extra:
                self.x_count[key] = n
        self.x_rows = {v: (self.bufs[key][0], r, w.ns[self.bufs[key][0]], key, m)
                       for v, (key, r, m) in self.x_rows.items()}

    def _stacked_views(self, forward, xshape):
        """The stacks (concats) along axis 0 of values that are consecutive X rows of one batch, h_1 ... h_T
        where the rows hold h_0 ... h_{T-1}: the buffer gets the last value's rows after its own, and the
        stack is a view of rows 1 ... T (careful code's one (T + 1, B, H) array of states), not a copy.
        Returns ({id(stack value): (key, first row, last row)}, {key: extra rows}); the last values join
        x_rows (m: the value's id)."""
        views, extra = {}, {}
        for node in forward:
            if node.op.name not in ("concat", "stack") or node.params.get("axis") != 0 \
                    or any(c is not None for c in node.casts) or len(node.inputs) < 2:
                continue
            *first, last = node.inputs
            dests = [self.x_rows.get(id(v)) for v in first]
            if None in dests or len({d[0] for d in dests}) != 1 or id(last) in self.x_rows:
                continue
            key = dests[0][0]
            n, cols, dtype = xshape[key]
            if key in extra or last.kind != "node" or any(
                    np.ndim(v.array) != 2 or np.shape(v.array)[1] != cols or v.array.dtype != dtype
                    for v in node.inputs) or dests[-1][1][1] != n or any(
                    a[1][1] != b[1][0] for a, b in zip(dests, dests[1:])):
                continue
            extra[key] = np.shape(last.array)[0]
            self.x_rows[id(last)] = (key, (n, n + extra[key]), id(last))
            views[id(node.value)] = (key, dests[0][1][0], n + extra[key])
        return views, extra

    def stacked_view(self, node, returned):
        """The line taking a stack of X rows as a view of their buffer, or None (its values did not all
        go into their rows in the forward, or it is returned)."""
        plan = self.views.get(id(node.value))
        if plan is None or any(isinstance(r, np.ndarray) and np.may_share_memory(node.out, r) for r in returned):
            return None
        key, a, b = plan
        if not all(("x", key, self.x_rows[id(v)][4]) in self.done for v in node.inputs):
            return None
        reshape = f".reshape({np.shape(node.out)})" if node.op.name == "stack" else ""
        return f"    {node.value.name} = {self.bufs[key][0]}[{a}:{b}]{reshape}"

    def x_destination(self, node, args, returned):
        """The line computing an elementwise forward value straight into its rows of a batch's X buffer
        (the h_t of h_t @ W: no copy in the backward), or None; bit for bit as the op computes it."""
        dest = self.x_rows.get(id(node.value))
        if dest is None or node.params or any(c is not None for c in node.casts) or not _numpy_ufunc(node) \
                or any(isinstance(r, np.ndarray) and np.may_share_memory(node.out, r) for r in returned):
            return None
        name, (a, b), bx, key, m = dest
        if not _reproduces_into(node, bx[a:b]):
            return None
        self.done.add(("x", key, m))
        return f"    {node.value.name} = np.{node.op.forward.__name__}({', '.join(args)}, out={name}[{a}:{b}])"

    def g_destination(self, value):
        """(buffer name, rows) where a gathered gradient can be joined straight into a batch's G rows."""
        dest = self.g_rows.get(id(value))
        if dest is None:
            return None
        self.done.add(("g", dest[2], id(value)))
        return dest[0], dest[1]

    def term(self, node, src, how):
        a, b = self.rows[id(src), id(node)]
        bx, bg = self.bufs[id(src)]
        shared = id(src) in self.shared or ("g", id(src), id(node.value)) in self.done
        parts = [] if shared else [f"{bg}[{a}:{b}] = g_{node.value.name}"]
        if bx is not None and ("x", id(src), id(node)) not in self.done:
            parts.insert(0, f"{bx}[{a}:{b}] = {_expr(node.inputs[0], self.w)}")
        if not parts:
            return None                                # g_t is already in its rows
        line = "    " + "; ".join(parts)
        return f"{line:<60}  # d/d {src.name} by {node.op.name} %{node.k}, batched"

    def total(self, src, others):
        bx, bg = self.bufs[id(src)]
        if bx is not None:
            n = self.x_count.get(id(src))
            total, what = f"{bx}{'' if n is None else f'[:{n}]'}.T @ {bg}", "x_t^T g_t as one product"
        else:
            total, what = f"np.add.reduce({bg}, axis=0)", "rows as one sum"
        return f"    g_{src.name} = " + (f"g_{src.name} + {total}" if others else total) + f"  # all steps' {what}"


def _gname(v):
    return v.name


def _edge_lines(node, i, src, how, w):
    g = f"g_{node.value.name}"
    comment = f"# d/d {_expr(src, w) if src.kind != 'node' else '%' + str(src.node.k)} " \
              f"by {node.op.name} %{node.k} input {i}"
    if node.scope is not None and repr(node.scope) != "<root>":
        comment += f" | {node.scope!r}"
    acc_target = f"g_{_gname(src)}"
    kind = how["kind"]
    if how["inline_index"]:
        idx = w.bind("K", node.params)
        lines = []
        if how["acc"] == "zeros":
            lines.append(f"{acc_target} = np.zeros({how['gshape']}, {w.bind('dt', np.dtype(how['gdtype']))})")
        elif how["acc"] == "copy":
            lines.append(f"{acc_target} = np.array({acc_target})")
        if how["basic"]:
            lines.append(f"{acc_target}[{idx}['index']] += {g}")
        else:
            lines.append(f"np.add.at({acc_target}, {idx}['index'], {g})")
        return [f"    {ln:<58}  {comment}" if j == len(lines) - 1 else f"    {ln}" for j, ln in enumerate(lines)]
    ans = node.value.name if node.op.keep_ans else "None"
    args, packed = _rule_args(node, w)
    params = _param_text(node, w)
    if kind == "identity":
        e = g
    elif how["spec"] is not None:
        one = _one(node.out) if "{one}" in how["spec"] else 1
        e = how["spec"].format(g=g, ans=ans, one=w.bind("ONE", one) if type(one) is np.ndarray else "1",
                               d=f"d_{node.value.name}", **{f"a{j}": a for j, a in enumerate(args)})
    elif kind == "variadic":
        e = f"{w.bind('vjp_' + node.op.name + '_', how['rule'])}({i}, {g}, {ans}, {packed}{params})"
    else:
        e = f"{w.bind('vjp_' + node.op.name + '_', how['rule'])}({g}, {ans}, {', '.join(args)}{params})"
    if how["ub"]:
        e = how["ub"].format(e=e)
    if how["cast"] is not None:
        e = f"({e}).astype({w.bind('dt', np.dtype(how['cast']))})"
    acc = how["acc"]
    lines = []
    if how["indexed"]:
        lines.append(f"d = {e}")
        if acc == "zeros":
            lines.append(f"{acc_target} = np.zeros({how['gshape']}, {w.bind('dt', np.dtype(how['gdtype']))})")
        elif acc == "copy":
            lines.append(f"{acc_target} = np.array({acc_target})")
        lines.append(f"d.add_to({acc_target})")
    elif acc == "assign":
        lines.append(f"{acc_target} = {e}")
    elif acc == "iadd":
        lines.append(f"{acc_target} += {e}")
    else:
        lines.append(f"{acc_target} = np.asarray({acc_target} + {e})"
                     if np.ndim(src.array) == 0 else f"{acc_target} = {acc_target} + {e}")
    return [f"    {ln:<58}  {comment}" if j == len(lines) - 1 else f"    {ln}" for j, ln in enumerate(lines)]


def _input_texts(node, w):
    """The source text of a node's inputs as its op receives them (cast where the trace cast them)."""
    return [_expr(v, w) if cast is None else f"{_expr(v, w)}.astype({w.bind('dt', np.dtype(cast))})"
            for v, cast in zip(node.inputs, node.casts)]


def _rule_args(node, w):
    """The source text of a node's rule arguments, and of all of them as one tuple (a variadic rule's),
    worked out once per node: a variadic node of n inputs has n edges."""
    cached = w.rule_args.get(id(node))
    if cached is not None:
        return cached
    if node.op.keep_inputs:
        args = _input_texts(node, w)
        packed = "(" + "".join(a + ", " for a in args) + ")"
    else:                    # shape-only stand-ins: bound once, the tuple too
        specs = tuple(v.number if v.kind == "number" else _spec(v, d) if isinstance(d, np.ndarray) else d
                      for v, d in zip(node.inputs, node.datas))
        args = [_expr(v, w) if v.kind == "number" else w.bind("S" if isinstance(d, np.ndarray) else "k", x)
                for v, d, x in zip(node.inputs, node.datas, specs)]
        packed = w.bind("A", specs)
    w.rule_args[id(node)] = args, packed
    return args, packed


def _result_text(r, w):
    if r is None:
        return "None"
    if isinstance(r, _Value):
        return f"Tensor({_expr(r, w)})"
    if isinstance(r, tuple):
        return "(" + "".join(_result_text(x, w) + ", " for x in r) + ")"
    if isinstance(r, list):
        return "[" + ", ".join(_result_text(x, w) for x in r) + "]"
    return "{" + ", ".join(f"{k!r}: {_result_text(x, w)}" for k, x in r.items()) + "}"


def _interpret_forward(tr, arrays, gens):
    """The trace's forward values on new input arrays (what the program computes), by node index;
    dropout masks are drawn from `gens` (id(generator) -> a copy at the state the program started from)."""
    env, out, masks = {}, {}, {}

    def get(v):
        if v.kind == "draw":
            if v.name not in masks:
                masks[v.name] = _draw_mask(gens[id(v.tensor)], v.number, v.array.shape, v.array.dtype)
            return masks[v.name]
        if v.kind == "input":
            return arrays[v.node]
        if v.kind == "alias":
            return get(v.node)
        if v.kind == "node":
            return env[v.node.k]
        if v.kind == "number":
            return v.number
        return v.array

    for node in tr.nodes:
        args = [get(v) if c is None else get(v).astype(c) for v, c in zip(node.inputs, node.casts)]
        params = {k: (val if node.dyn[k] is None else _subst(val, node.dyn[k], get)) for k, val in node.params.items()}
        o = node.op.forward(*args, **params)
        env[node.k] = out[node.k] = np.asarray(o)
    return out


def _subst(val, d, get):
    if d is None:
        return val
    if isinstance(d, _Value):
        return get(d)
    return tuple(_subst(x, e, get) for x, e in zip(val, d))


# ------------------------------------------------------------------------------------------------------
# the compiled step

class _Entry:
    """One input signature's program. `values`: the integer and boolean inputs of the first trace;
    `guard`: those the program may depend on by value (equal in both tracing calls, so unproven)."""
    __slots__ = ("trace", "program", "source", "eager", "calls", "values", "guard")

    def __init__(self):
        self.trace = self.program = self.source = self.eager = self.values = None
        self.calls = 0
        self.guard = {}


class Compiled:
    """A compiled training step: call it like the function; `.source` is the generated program."""

    def __init__(self, fn, check=False, check_every=None, cache_size=8, batch_weight_grads=False,
                 reuse_buffers=False, exact=True):
        self.fn, self.check, self.check_every, self.cache_size = fn, check, check_every, cache_size
        self.batch_weight_grads, self.reuse_buffers = batch_weight_grads or not exact, reuse_buffers
        self.exact = exact
        self.cache = collections.OrderedDict()
        self.by_value = set()            # signatures keyed by their integer inputs' values too
        self.gave_up = False
        self.warned = set()
        self.traces = self.traces_since_replay = 0
        self.__name__ = getattr(fn, "__name__", "step")
        self.__doc__ = getattr(fn, "__doc__", None)

    @property
    def source(self):
        """The most recently compiled program (forward and backward as Python), or a note if none yet."""
        for entry in reversed(self.cache.values()):
            if entry.source is not None:
                return entry.source
        return f"# {self.__name__}: not compiled yet (a program is written after two calls trace the same step)\n"

    def __str__(self):
        return self.source

    def __repr__(self):
        n = sum(e.program is not None for e in self.cache.values())
        return f"<tapegrad.compile({self.__name__}): {n} program(s), {self.traces} trace(s)>"

    def _warn(self, reason):
        if reason not in self.warned:
            self.warned.add(reason)
            warnings.warn(f"tapegrad.compile({self.__name__}): {reason}; this step runs eagerly",
                          CompileWarning, stacklevel=3)

    def __call__(self, *args, **kwargs):
        if _tape.ACTIVE_TAPES or not _tape.GRAD_ENABLED or _tape.ANOMALY or _ACTIVE:
            return self.fn(*args, **kwargs)
        args = _convert(args)
        if kwargs and _leaves(list(kwargs.values())):
            self._warn("Tensor keyword arguments are not traced as inputs (pass them positionally)")
            return self.fn(*args, **kwargs)
        if self.gave_up:
            return self.fn(*args, **kwargs)
        key = _key(args, kwargs)
        if key in self.by_value:                 # a signature whose program depends on integer input values
            key = _by_value(key, _integer_inputs(args))
        entry = self._entry(key)
        if entry.eager:
            return self.fn(*args, **kwargs)
        if entry.guard and any(not np.array_equal(v, entry.guard[i]) for i, v in _integer_inputs(args).items()
                               if i in entry.guard):
            return self._trace(entry, args, kwargs, key)      # new values of unproven inputs: trace and see
        if entry.program is not None:
            entry.calls += 1
            if self.check or (self.check_every and entry.calls % self.check_every == 0):
                return self._checked(entry, args, kwargs, key)
            try:
                out = entry.program(*_arrays(args))
                self.traces_since_replay = 0
                return out
            except _Stale:
                entry.trace = entry.program = entry.source = None
        return self._trace(entry, args, kwargs, key)

    def _entry(self, key):
        entry = self.cache.get(key)
        if entry is None:
            entry = self.cache[key] = _Entry()
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
        else:
            self.cache.move_to_end(key)
        return entry

    def _trace(self, entry, args, kwargs, key):
        """Trace this call (its results are eager's) and decide what the entry does next: keep the
        trace, compile after a second agreeing one, drop a guard, or key the signature by value."""
        result, tr = _trace(self.fn, args, kwargs)
        self.traces += 1
        self.traces_since_replay += 1
        if self.traces_since_replay > 2 * self.cache_size:
            self.gave_up = True
            self._warn(f"{self.traces_since_replay} calls in a row traced without a replay: the program keeps "
                       "changing from call to call (shapes, or integer inputs such as lengths that change the "
                       "trace)")
            return result
        if tr.unsupported:
            entry.eager = True
            self._warn(tr.unsupported)
            return result
        values = _integer_inputs(args)
        if entry.trace is None:
            entry.trace, entry.values = tr, values
            return result
        diff = _diff(entry.trace, tr)
        changed = [i for i, v in values.items() if not np.array_equal(v, entry.values.get(i, v))]
        if diff is not None and changed and len(key) == len(_key(args, kwargs)):
            # the program depends on integer input values (lengths, a mask): one program per value
            self.by_value.add(key)
            del self.cache[key]
            fresh = self._entry(_by_value(key, values))
            fresh.trace, fresh.values = tr, values
            return result
        if diff is not None:
            entry.eager = True
            self._warn(f"two calls traced different programs ({diff})")
            return result
        if entry.program is not None:            # a guarded input changed and the program did not: proven
            entry.guard = {i: g for i, g in entry.guard.items() if i not in changed}
            return result
        self._compile(entry, tr)
        entry.guard = {i: v for i, v in values.items() if i not in changed}
        return result

    def _compile(self, entry, tr):
        try:
            source, ns = _generate(tr, self.batch_weight_grads, self.reuse_buffers, fuse=not self.exact)
        except _Unsupported as e:
            entry.eager = True
            self._warn(str(e))
            return
        code = compile_source(source, f"<tapegrad.compile {self.__name__}>")
        exec(code, ns)
        entry.program, entry.source = ns["step"], source
        entry.trace = _Skeleton(tr)
        gc.collect()       # the two traces' arrays sit in reference cycles (values <-> nodes): free them now

    def _checked(self, entry, args, kwargs, key):
        """Replay, then run eagerly; raise CompileError at the first difference (eager's results stay)."""
        tr_old = entry.trace
        leaves = [p.tensor for p in tr_old.params] + [a for a in _leaves(args) if a.requires_grad]
        before = [None if t.grad is None else np.array(t.grad) for t in leaves]
        rngs = {id(v.tensor): v.tensor for node in tr_old.nodes for v in node.inputs if v.kind == "draw"}
        states = {k: g.bit_generator.state for k, g in rngs.items()}
        try:
            out = entry.program(*_arrays(args))
        except _Stale:
            entry.trace = entry.program = entry.source = None
            return self._trace(entry, args, kwargs, key)
        replay = [None if t.grad is None else np.array(t.grad) for t in leaves]
        for t, b in zip(leaves, before):
            t.grad = b
        for k, g in rngs.items():          # eager draws the masks the replay drew
            g.bit_generator.state = states[k]
        values = _interpret_forward(tr_old, _arrays(args), {k: _generator_at(g, states[k]) for k, g in rngs.items()})
        result, tr = _trace(self.fn, args, kwargs)
        diff = _diff(tr_old, tr, values)
        if diff is None:
            for t, r in zip(leaves, replay):
                e = t.grad
                if (e is None) != (r is None) or (e is not None and not np.allclose(e, r, rtol=1e-9, atol=0,
                                                                                    equal_nan=True)):
                    diff = f"the gradient of {t.name or 'a parameter of shape ' + str(t.shape)} differs"
                    break
        if diff is not None:
            raise CompileError(f"tapegrad.compile({self.__name__}): the replay diverges from eager execution at "
                               f"{diff}. Python control flow on tensor values is baked into a trace; this call's "
                               "results (left in .grad) are eager's")
        del out
        return result


class _Skeleton:
    """What a compiled entry keeps of its trace for later checks: nodes without the traced arrays' graph."""

    def __init__(self, tr):
        self.nodes, self.params, self.root, self.inputs = tr.nodes, tr.params, tr.root, tr.inputs
        for node in tr.nodes:
            node.datas = tuple(_spec(v, d) if v.kind not in ("const", "number") else d
                               for v, d in zip(node.inputs, node.datas))
            node.record = node.out = node.value.array = None
        for v in tr.inputs:
            v.array = None


def compile_source(source, filename):
    return builtins.compile(source, filename, "exec")


def _convert(obj):
    """Arguments with arrays as Tensors (inside tuples and lists too)."""
    if isinstance(obj, np.ndarray):
        return Tensor(obj)
    if type(obj) in (tuple, list):
        return type(obj)(_convert(o) for o in obj)
    return obj


def _leaves(args):
    """The Tensors among the arguments (inside tuples and lists too), in order: the program's inputs."""
    out = []
    for a in args:
        if isinstance(a, Tensor):
            out.append(a)
        elif type(a) in (tuple, list):
            out.extend(_leaves(a))
    return out


def _arrays(args):
    leaves = _leaves(args)
    return [a.data for a in leaves] + [a for a in leaves if a.requires_grad and a._node is None]


def _integer_inputs(args):
    """{position among the input Tensors: array} of the integer and boolean inputs (targets, indices,
    lengths, masks): a program may have their values baked in, which two tracing calls can disprove."""
    return {i: t.data for i, t in enumerate(_leaves(args)) if t.data.dtype.kind in "iub"}


def _by_value(key, values):
    """A signature's key with its integer inputs' values in it (for programs that depend on them)."""
    return key + (tuple(v.tobytes() for v in values.values()),)


def _describe_arg(a):
    if isinstance(a, Tensor):
        d = a.data
        return ("T", d.shape, d.dtype.str, a.requires_grad, a._node is None)
    if type(a) in (tuple, list):
        return (type(a), tuple(_describe_arg(o) for o in a))
    try:
        hash(a)
        return ("v", type(a), a)
    except TypeError:
        return ("id", id(a))


def _key(args, kwargs):
    parts = [get_default_dtype().str]
    for a in list(args) + [kwargs[k] for k in sorted(kwargs)]:
        parts.append(_describe_arg(a))
    parts.append(tuple(sorted(kwargs)))
    return tuple(parts)


def compile(fn=None, *, check=False, check_every=None, cache_size=8, batch_weight_grads=False,
            reuse_buffers=False, exact=True):
    """Compile a training step `fn(*inputs)` (ordinary eager code that calls `loss.backward()`).

    The first two calls with given input shapes run eagerly and trace; when their traces agree, later
    calls replay a generated straight-line numpy program with eager's numbers (`.source` shows it).
    check=True re-runs every call eagerly and raises CompileError at the first difference;
    check_every=N does so every N-th replay. Up to `cache_size` programs (input shapes) are kept.
    exact=False (the fast program) rewrites the trace first (`tapegrad.fusion`): products of one operand
    with several parameters (a per-gate cell's h @ W_i, h @ W_f, ...) become one product with the
    parameters joined, products of data with one weight (x_t @ U for every t) one product before the
    loop, an output layer read only by the loss one product after it, elementwise work on side-by-side
    gate slices one call, repeated computations one; and it batches weight gradients (below). Loss and
    gradients then agree with eager's to rounding (1e-12 of each array's largest entry in float64).
    batch_weight_grads=True (implied by exact=False) computes each weight's per-step gradient products
    x_t^T g_t as one product over the stacked steps (a bias's row sums as one sum), into buffers the
    program keeps between calls: a reordered sum, not bit for bit.
    reuse_buffers=True computes elementwise records (numpy ufuncs, sigmoid) into buffers the program
    keeps between calls (`out=`; bit-identical): fewer allocations per call, at the price of keeping
    those forward values' memory allocated between calls (per cached program).
    Usable as a decorator: `@tapegrad.compile` or `@tapegrad.compile(exact=False)`.
    """
    args = (check, check_every, cache_size, batch_weight_grads, reuse_buffers, exact)
    if fn is None:
        return lambda f: Compiled(f, *args)
    return Compiled(fn, *args)
