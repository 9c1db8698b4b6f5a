"""Memory-efficient backward: keep only a function's inputs, recompute its records during backward.

    outputs = tapegrad.checkpoint(segment, h, c)     # records one `checkpoint` op, not segment's ops

`fn` runs once forward (its records are dropped as soon as it returns, after noting which
parameters it reads), and once more in backward to compute gradients. For an unrolled RNN split
into segments of k steps this keeps about T/k states plus one segment's records instead of all
T steps' records (Chen et al. 2016). Dropout inside `fn` replays the same masks: the random
generator's state is saved at each draw of the first run and restored for the recomputation.
"""
import math

import numpy as np

from . import tape as _tape
from .autodiff import grad
from .errors import GraphError
from .op import Joint, Op
from .tape import Record, enable_grad
from .tensor import Tensor

__all__ = ["checkpoint"]

_RNG_LOG = None      # while fn first runs: list of generator states; while it is recomputed: an iterator


def generator_for(rng):
    """The generator an op draws from: `rng`, or inside a recomputation a replay of the first run's draw."""
    if _RNG_LOG is None:
        return rng
    if isinstance(_RNG_LOG, list):
        _RNG_LOG.append(rng.bit_generator.state)
        return rng
    replay = np.random.Generator(type(rng.bit_generator)())
    replay.bit_generator.state = next(_RNG_LOG)
    return replay


def checkpoint(fn, *args):
    """`fn(*args)` with its records recomputed in backward instead of kept.

    args: Tensors, or nested tuples/lists of them (other values pass through as constants). Every
          computed Tensor fn reads must come in through args; parameters (leaves) may be read freely.
    Returns what fn returns: a Tensor or a nested tuple/list of Tensors, all of one float dtype.
    """
    global _RNG_LOG
    if not _tape.GRAD_ENABLED:
        return fn(*args)
    inputs, rebuild_args = _flatten(args)
    fresh = [Tensor(t.data, t.requires_grad) for t in inputs]
    tapes, _tape.ACTIVE_TAPES[:] = _tape.ACTIVE_TAPES[:], []     # fn's own records are not the tape's
    first, _RNG_LOG = _tape.next_index(), []
    try:
        flat, rebuild = _flatten(fn(*rebuild_args(fresh)))
    finally:
        rng_states, _RNG_LOG, _tape.ACTIVE_TAPES[:] = _RNG_LOG, None, tapes
    params = _parameters_read(flat, fresh, first)
    if not (params or any(t.requires_grad for t in inputs)):
        return rebuild([t.detach() for t in flat])
    single = len(flat) == 1                  # one output is the record's own; several are packed into one
    if single:                               # (an op's output is already read-only; a leaf's array is not ours)
        packed = flat[0].data if flat[0]._node is not None else flat[0].data.copy()
    else:
        packed = np.concatenate([t.data.ravel() for t in flat])
    packed.setflags(write=False)
    parents = tuple(t._node or t for t in inputs) + tuple(params)
    saved = tuple(_compact(t.data) for t in inputs) + tuple(p.data for p in params)
    spec = dict(fn=fn, rebuild_args=rebuild_args, n_inputs=len(inputs), params=params,
                shapes=[t.shape for t in flat], rng_states=rng_states)
    rec = Record(_CHECKPOINT, parents, saved, None, spec, packed.shape, packed.dtype,
                 _tape.CURRENT_SCOPE, _tape.next_index())
    whole = Tensor(packed, True, None, rec)
    for tape in _tape.ACTIVE_TAPES:
        tape.add(rec, whole)
    if single:
        return rebuild([whole])
    pieces, start = [], 0
    for t in flat:
        pieces.append(whole[start:start + t.size].reshape(t.shape))
        start += t.size
    return rebuild(pieces)


def _recompute_grads(g, ans, *saved, fn, rebuild_args, n_inputs, params, shapes, rng_states):
    """Run fn again on the saved inputs and sweep its fresh records with the incoming gradient."""
    global _RNG_LOG
    if isinstance(g, Tensor):
        raise GraphError("checkpoint: create_graph=True through a checkpointed function is not supported")
    fresh = [Tensor(a, True) for a in saved[:n_inputs]]
    _RNG_LOG = iter(rng_states)
    try:
        with enable_grad():
            flat, _ = _flatten(fn(*rebuild_args(fresh)))
    finally:
        _RNG_LOG = None
    used, start = [], 0
    for t, shape in zip(flat, shapes):
        size = math.prod(shape)
        if t.requires_grad:
            used.append((t, g if len(flat) == 1 else g[start:start + size].reshape(shape)))
        start += size
    wrt = fresh + list(params)
    if not used:
        return (None,) * len(wrt)
    return tuple(r.data for r in grad([t for t, _ in used], wrt, [go for _, go in used]))


_CHECKPOINT = Op("checkpoint", None, Joint(_recompute_grads), keep="inputs")


def _compact(array):
    """A view is copied, so that keeping a segment's inputs does not keep the arrays they view alive."""
    return array if array.base is None else np.array(array)


def _parameters_read(flat, fresh, first):
    """Leaf Tensors requiring grad that `flat` depends on (or is), other than fn's inputs `fresh`: its
    parameters. A record older than `first` means fn read a computed Tensor that was not passed in: refused."""
    known, seen, leaves = {id(a) for a in fresh}, set(), []
    frontier = [t._node or t for t in flat]
    while frontier:
        node = frontier.pop()
        if isinstance(node, Record):
            if node in seen:
                continue
            seen.add(node)
            if node.index < first:
                raise GraphError(f"checkpoint: the function reads a computed tensor ({node.op} output of shape "
                                 f"{node.shape}) that is not among its arguments; pass it as an argument")
            frontier.extend(p for p in node.parents if p is not None and p.requires_grad)
        elif node.requires_grad and id(node) not in known:
            known.add(id(node))
            leaves.append(node)
    return leaves


def _flatten(obj):
    """The Tensors in a nested tuple/list structure, and a function rebuilding it from new Tensors
    (other values are kept as they are). The rebuild function holds no reference to the Tensors."""
    if isinstance(obj, Tensor):
        return [obj], _first
    if isinstance(obj, (tuple, list)):
        parts = [_flatten(o) for o in obj]
        sizes = [len(tensors) for tensors, _ in parts]
        subs = [sub for _, sub in parts]
        kind = type(obj)

        def rebuild(ts):
            out, i = [], 0
            for sub, n in zip(subs, sizes):
                out.append(sub(ts[i:i + n]))
                i += n
            return kind(out)
        return [t for tensors, _ in parts for t in tensors], rebuild
    return [], lambda ts: obj


def _first(ts):
    return ts[0]
