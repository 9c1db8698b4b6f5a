"""Reverse mode: one iterative sweep over the records reachable from the outputs.

Records are visited in reverse recording order, so every consumer of a value is processed before
the value's producer and its gradient is complete when reached. Gradients of a value used several
times add up; BPTT's sum over time steps of a shared weight's gradient is exactly that.
"""
from heapq import heappop, heappush
from math import prod
from sys import getrefcount

import numpy as np

from . import anomaly
from . import tape as _tape
from .errors import GraphError, TapegradError
from .indexed import IndexedGrad
from .op import Joint, PerInput, identity
from .tape import Record, describe_scope, gc_paused
from .tensor import Tensor

__all__ = ["backward", "grad", "unbroadcast"]


def backward(output, grad=None, retain_graph=False, create_graph=False):
    """Accumulate d(output)/d(leaf) into the `.grad` of every leaf that requires grad."""
    check_backward_target(output, grad)
    retain_graph = retain_graph or create_graph
    with gc_paused():
        leaves = _sweep([(output, _seed(output, grad, create_graph))], retain_graph, create_graph, store=True)
    for leaf, g in leaves.items():
        _store_grad(leaf, g)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, on_edge=None):
    """Gradients of `outputs` with respect to `inputs`, as a tuple of Tensors; `.grad` is untouched.

    Inputs may be leaves or intermediates. An input the outputs do not depend on gets zeros. With
    `create_graph=True` the results are recorded Tensors, so they can be differentiated again.
    `on_edge(record, i, parent, grad)` observes each per-record contribution (see `_sweep`).
    """
    outputs = _as_tuple(outputs)
    inputs = _as_tuple(inputs)
    grad_outputs = _as_tuple(grad_outputs) if grad_outputs is not None else (None,) * len(outputs)
    if len(grad_outputs) != len(outputs):
        raise GraphError(f"grad: {len(outputs)} outputs but {len(grad_outputs)} grad_outputs")
    for o, g in zip(outputs, grad_outputs):
        check_backward_target(o, g)
    retain_graph = create_graph if retain_graph is None else retain_graph
    seeds = [(o, _seed(o, g, create_graph)) for o, g in zip(outputs, grad_outputs)]
    wanted = {t._node or t for t in inputs}
    with gc_paused():
        found = _sweep(seeds, retain_graph, create_graph, store=False, wanted=wanted, on_edge=on_edge)
    results = []
    for t in inputs:
        g = found.get(t._node or t)
        if g is None:
            g = np.zeros(t.shape, t.dtype)
        results.append(g if isinstance(g, Tensor) else Tensor(np.array(g, dtype=t.dtype)))
    return tuple(results)


def check_backward_target(t, grad):
    if not t.requires_grad:
        raise GraphError(f"backward: tensor of shape {t.shape} does not require grad "
                         "(no input of its graph has requires_grad=True, or it was made under no_grad)")
    if grad is None and t.data.size != 1:
        raise GraphError(f"backward: output has shape {t.shape}; pass `grad` of that shape "
                         "(only a single-element output has an implicit gradient of 1)")


def _as_tuple(x):
    return tuple(x) if isinstance(x, (list, tuple)) else (x,)


def _seed(output, grad, create_graph):
    """The gradient the sweep starts from: ones, or `grad` checked against the output's shape."""
    if grad is None:
        g = np.ones(output.shape, output.dtype)
    elif isinstance(grad, Tensor) and create_graph:
        g = grad
    else:
        try:
            g = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=output.dtype)
        except (TypeError, ValueError) as e:
            raise GraphError(f"backward: grad must be an array of the output's shape {output.shape}: {e}") from None
    if g.shape != output.shape:
        raise GraphError(f"backward: grad has shape {g.shape} but the output has shape {output.shape}")
    return Tensor(g) if create_graph and not isinstance(g, Tensor) else g


def _sweep(seeds, retain_graph, create_graph, store, wanted=(), on_edge=None):
    """Run the reverse sweep. Returns the gradients of leaves (store) or of the `wanted` nodes.

    Records wait in a heap keyed by recording order, entering when they first receive a gradient,
    so the latest record comes out first and only records the outputs depend on are visited.
    on_edge(record, i, parent, grad), if given, sees every gradient a record sends to an input:
    the per-use (per-time-step) contributions that accumulation sums.
    """
    grads, owned, heap = {}, set(), []    # node -> gradient so far; nodes whose array we may add into
    for t, g in seeds:
        node = t._node or t
        if node in grads:
            grads[node] = grads[node] + g
        else:
            grads[node] = g
            if type(node) is Record:
                heappush(heap, (-node.index, node))
    found = {}
    observe = on_edge is not None or _tape.ANOMALY
    while heap:
        rec = heappop(heap)[1]
        g = grads.pop(rec)
        saved, ans = rec.saved, rec.ans
        if rec.freed:
            raise GraphError(f"backward through {rec.op} (record %{rec.index}){describe_scope(rec.scope)} "
                             "a second time: its saved values were freed by the first backward; "
                             "pass retain_graph=True to the first backward to keep them")
        if saved is not None and _tape.LAST_WRITE > rec.index:
            _check_unchanged(rec)
        if rec.stack is not None:                     # recorded in anomaly mode
            anomaly.check_saved(rec)
        if rec in wanted:
            found[rec] = g
        if rec.retain and store:
            out = rec.tensor()
            if out is not None:
                _store_grad(out, g)
        args = saved if saved is not None else rec.parents     # stand-ins for inputs the op does not keep
        if create_graph:
            args, ans = _as_tensors(rec, args, ans)
        rules, params = rec.fn.vjps, rec.params
        try:
            joint = rules.rule(g, ans, *args, **params) if type(rules) is Joint else None
            variadic = rules.rule if type(rules) is PerInput else None
            for i, parent in enumerate(rec.parents):
                if parent is None or not parent.requires_grad:
                    continue
                if joint is not None:
                    gi = joint[i]
                elif variadic is not None:         # the inputs as one tuple: O(1) per input, not O(n)
                    gi = variadic(i, g, ans, args, **params)
                else:
                    rule = rules[i]
                    if rule is identity:
                        gi = g
                    elif rule is None:              # not differentiable in this input (a condition)
                        continue
                    else:
                        gi = rule(g, ans, *args, **params)
                if gi is None:
                    continue
                if gi.shape != parent.shape:
                    gi = unbroadcast(gi, parent.shape, rec, i)
                if not create_graph and gi.dtype is not parent.dtype and gi.dtype != parent.dtype:
                    gi = gi.astype(parent.dtype)
                if observe:
                    _observe(rec, i, parent, gi, on_edge)
                prev = grads.get(parent)      # accumulate (inlined: this is the hottest loop)
                if prev is None and type(parent) is Record:
                    heappush(heap, (-parent.index, parent))
                if type(gi) is IndexedGrad:   # into one owned buffer per parent, not a dense array per slice
                    if parent not in owned:
                        prev = grads[parent] = np.zeros(gi.shape, gi.dtype) if prev is None else np.array(prev)
                        owned.add(parent)
                    gi.add_to(prev)
                elif prev is None:
                    grads[parent] = gi
                elif parent in owned:
                    prev += gi                # an owned entry is always an ndarray (0-d included): in place
                elif (type(gi) is np.ndarray and getrefcount(gi) <= _SOLE and gi.base is None
                      and gi.flags.writeable and type(prev) is np.ndarray and gi.shape == prev.shape
                      and gi.dtype == prev.dtype):
                    gi += prev                # a fresh array only this loop holds (x * x's second rule): add
                    grads[parent] = gi        # into it, not into a third array (a + b is b + a, bit for bit)
                    owned.add(parent)
                else:
                    total = prev + gi
                    if type(total) is np.ndarray:
                        owned.add(parent)
                    elif not isinstance(total, Tensor):   # two 0-d arrays add to a numpy scalar: keep an array
                        total = np.asarray(total)
                        owned.add(parent)
                    grads[parent] = total
        except TapegradError:
            raise
        except Exception as e:
            raise GraphError(f"backward of {rec.op} (record %{rec.index}){describe_scope(rec.scope)} failed: "
                             f"{type(e).__name__}: {e}{anomaly.recorded_at(rec)}") from e
        if not retain_graph and (saved is not None or ans is not None):
            rec.saved = rec.ans = None
            rec.freed = True
        owned.discard(rec)
    if store:
        return grads
    found.update((k, v) for k, v in grads.items() if k in wanted)
    return found


def _sole_reference_count():
    """What getrefcount says of an array that only one local variable holds: a rule's result that nothing
    else (a record, a callback, a view of it) refers to, which the sweep may therefore add into."""
    a = np.empty(0)
    return getrefcount(a)


_SOLE = _sole_reference_count()


def _observe(rec, i, parent, gi, on_edge):
    """Anomaly mode's check of a gradient `rec` sends to input i, and the on_edge callback."""
    if _tape.ANOMALY:
        anomaly.check_backward(rec, i, gi.values if type(gi) is IndexedGrad else gi)
    if on_edge is not None:
        on_edge(rec, i, parent, gi.dense() if type(gi) is IndexedGrad else gi)


def _check_unchanged(rec):
    """Refuse to use a saved leaf array that was changed in place after `rec` saved it."""
    for i, parent in enumerate(rec.parents):
        if isinstance(parent, Tensor) and _tape.written_after(parent, rec.index):
            name = parent.name or f"a leaf of shape {parent.shape}"
            raise GraphError(f"backward through {rec.op} (record %{rec.index}){describe_scope(rec.scope)}: its "
                             f"input {i} ({name}) was modified in place (e.g. by an optimizer step) after the op "
                             "saved it, so its gradient would be wrong; run backward before updating parameters")


def _as_tensors(rec, args, ans):
    """Saved arrays as Tensors linked to their producers, so the rules' own ops are recorded."""
    if rec.saved is not None:
        args = tuple(_linked(a, p) for a, p in zip(args, rec.parents))
    if ans is not None:
        ans = Tensor(ans, True, None, rec)
    return args, ans


def _linked(array, parent):
    if parent is None:                  # a constant stays a constant
        return array
    if isinstance(parent, Tensor):      # a leaf is its own tensor
        return parent
    return Tensor(array, parent.requires_grad, None, parent)


def unbroadcast(g, shape, rec=None, i=None):
    """Sum `g` over the axes broadcasting added, so it has `shape` (arrays and Tensors alike).

    Only what broadcasting produces is undone: extra leading axes, and axes where `shape` has length 1.
    Any other mismatch is a rule returning the wrong shape, refused (never reshaped into a wrong gradient).
    """
    gshape = g.shape
    lead = len(gshape) - len(shape)
    if lead < 0 or any(n != m and n != 1 for n, m in zip(shape, gshape[lead:])):
        where = "" if rec is None else f" of {rec.op} (record %{rec.index}){describe_scope(rec.scope)}, input {i}"
        raise GraphError(f"backward{where}: the rule returned a gradient of shape {gshape} for an input of shape "
                         f"{tuple(shape)}, which broadcasting cannot produce; the op's derivative rule is wrong")
    if g.size == prod(shape):           # the added axes all have length 1: nothing to sum
        return g.reshape(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and gshape[i + lead] != 1)
    if axes:
        g = np.add.reduce(g, axis=axes, keepdims=True) if type(g) is np.ndarray else g.sum(axis=axes, keepdims=True)
    return g.reshape(shape) if lead else g


def _store_grad(t, g):
    """Add `g` into `t.grad`; the stored array is always the tensor's own (never a shared view)."""
    if isinstance(g, Tensor):           # backward(create_graph=True): .grad stays a plain array
        g = g.data
    if t.grad is None:
        t.grad = np.array(g, dtype=t.dtype)
    elif type(t.grad) is np.ndarray:
        t.grad += g                     # in place, 0-d arrays included
    else:                               # a numpy scalar someone stored: `+=` would only rebind a name
        t.grad = np.array(t.grad + g, dtype=t.dtype)
