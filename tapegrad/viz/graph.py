"""What the tape says, placed in time: records and leaves as nodes, grouped into runs of time steps.

A *run* is one unrolled sequence: the consecutive `scope(t=k)` blocks of one module path, e.g. the
T steps of an encoder. A new run starts where the step count restarts (a decoder after its encoder,
layer 2 after layer 1, the backward direction after the forward one). Records made outside any
time scope inherit the step of their inputs when those all come from one step (an output layer
applied to h_t belongs to step t). Edges between different steps of one run carry the recurrent
state.
"""
import gc

import numpy as np

from ..errors import ArgumentError, InvalidValueError
from ..tape import Record, Tape
from ..tensor import Tensor


class Node:
    """One value: a recorded op ("op"), a leaf that requires grad ("param"), or another input ("input")."""
    __slots__ = ("id", "kind", "op", "name", "shape", "run", "step", "unit", "key", "grad", "consumers",
                 "parents", "const", "acc", "owner", "leaf", "joined")

    def __init__(self, id, kind, op, name, shape, grad):
        self.id, self.kind, self.op, self.name, self.shape, self.grad = id, kind, op, name, shape, grad
        self.run = self.step = None     # run index and time step, or None outside time
        self.unit = ""                  # module path of the cell call this op belongs to ("" if none)
        self.key = None                 # position inside its step, the same at every step
        self.consumers = []
        self.parents = []               # input nodes in slot order (None for a constant not drawn)
        self.const = None               # for a plain-array input: "x" (data) or "y" (a loss's target)
        self.acc = None                 # accumulator group: a running sum outside any cell (loss = loss + l_t)
        self.owner = None               # for a module parameter with an undotted name: its module's class
        self.leaf = None                # the leaf tensor (params), for the owner lookup
        self.joined = False             # made outside any time scope, placed in the step of its inputs

    @property
    def placed(self):
        return self.step is not None


class Edge:
    """Value `src` used as input of `dst`; kind is "state" (between steps of one run), "param" or "data"."""
    __slots__ = ("src", "dst", "kind")

    def __init__(self, src, dst, kind):
        self.src, self.dst, self.kind = src, dst, kind


class Run:
    """One unrolled sequence: its module path (`label`), steps in time order, direction, state names."""

    def __init__(self, index, path):
        self.index, self.path = index, path
        self.steps = []
        self.reverse = False             # state flows from step k+1 to step k (a backward direction)
        self.states = {}                 # key of a state-producing op -> name ("h", "c", ...)
        self.label = path                # what the picture calls it
        self.follows = None              # the run whose final state this one starts from (encoder -> decoder)


class Graph:
    """Nodes in recording order, edges, runs, and the drawn target (None for a Tape)."""

    def __init__(self, nodes, edges, runs, target):
        self.nodes, self.edges, self.runs, self.target = nodes, edges, runs, target


def extract(target):
    """The Graph of a Tensor (everything it depends on) or of a Tape (everything recorded on it)."""
    records, target_record = _records(target)
    base = records[0].index
    nodes, edges, node_of = [], [], {}
    for rec in records:
        node = Node(f"n{rec.index - base}", "op", rec.op, _tensor_name(rec), rec.shape, _grad_norm(rec.tensor()))
        for pos, parent in enumerate(rec.parents):
            if parent is None:
                src = _constant(rec, pos, f"v{rec.index - base}_{pos}")
                if src is None:
                    node.parents.append(None)
                    continue
                nodes.append(src)
            else:
                src = node_of.get(parent)
                if src is None:
                    src = node_of[parent] = _leaf(parent, f"v{rec.index - base}_{pos}")
                    nodes.append(src)
            edges.append(Edge(src, node, "param" if src.kind == "param" else "data"))
            src.consumers.append(node)
            node.parents.append(src)
        node_of[rec] = node
        nodes.append(node)
    if isinstance(target, Tensor) and target.name and target_record in node_of:    # no Tape: no weakref to it
        node_of[target_record].name = node_of[target_record].name or target.name
    for node in nodes:                        # constants join the step of the record that reads them
        if node.const is not None:
            node_of[(node.id,)] = node
    runs = _place(records, node_of)
    _infer_units(nodes, runs)
    _find_accumulators(nodes, runs)
    _mark_states(edges, runs)
    _drop_unknown_constants(nodes, edges)
    _name_constants(nodes)
    _qualify_parameters(nodes)
    return Graph(nodes, edges, runs, node_of.get(target_record))


def _records(target):
    if isinstance(target, Tape):
        if not target.records:
            raise InvalidValueError("draw: the tape is empty (record ops inside its `with` block)")
        return sorted(target.records, key=_index), None
    if not isinstance(target, Tensor):
        raise ArgumentError(f"draw: expected a Tensor or a Tape, got {type(target).__name__}")
    if target.record is None:
        raise InvalidValueError("draw: this tensor is a leaf, nothing was recorded to make it "
                         "(draw a result computed from tensors with requires_grad=True)")
    seen, stack = {target.record}, [target.record]
    while stack:
        for p in stack.pop().parents:
            if type(p) is Record and p not in seen:
                seen.add(p)
                stack.append(p)
    return sorted(seen, key=_index), target.record


def _index(rec):
    return rec.index


LOSSES = ("mse_loss", "cross_entropy", "sub")     # ops whose second input, a constant, is a target


def _constant(rec, pos, id):
    """Node for a plain array (or number) passed to a recorded op: the record keeps it in `saved` when its
    rule needs it; numbers and 0-d arrays are not drawn. Without `saved` (add, sub keep nothing) the
    node has no shape; it is dropped again if it turns out to start an accumulator (`loss = 0`)."""
    value = rec.saved[pos] if rec.saved is not None and pos < len(rec.saved) else None
    if value is not None and np.ndim(value) == 0:
        return None
    node = Node(id, "input", None, None, None if value is None else tuple(np.shape(value)), None)
    node.const = "y" if rec.op in LOSSES and pos > 0 else "x"
    return node


def _leaf(value, id):
    """Node for an input that is not an op of the graph: a leaf tensor, or a record made before the tape."""
    if isinstance(value, Record):
        return Node(id, "input", value.op, _tensor_name(value), value.shape, None)
    kind = "param" if value.requires_grad else "input"
    node = Node(id, kind, None, value.name, value.shape, _grad_norm(value))
    if kind == "param":
        node.leaf = value
    return node


def _tensor_name(rec):
    t = rec.tensor()
    return t.name if t is not None else None


def _grad_norm(t):
    if t is None or t.grad is None:
        return None
    return float(np.sqrt(np.sum(np.square(t.grad, dtype=np.float64))))


# -- time -----------------------------------------------------------------------------------------

def _time_scope(scope):
    while scope is not None and scope.t is None:
        scope = scope.parent
    return scope


def _place(records, node_of):
    """Assign run, step and unit to every node; return the runs."""
    blocks = {}                              # time scope -> its records, in order of first record
    for rec in records:
        ts = _time_scope(rec.scope)
        if ts is not None:
            blocks.setdefault(ts, []).append(rec)
    runs, current = [], {}                   # current: outer path -> (run, last t, allowed next deltas)
    for ts, recs in blocks.items():
        run = _run_for(ts, recs, runs, current, node_of)
        for rec in recs:
            node_of[rec].run, node_of[rec].step = run.index, ts.t
    # Ops made directly in a run's module are its cell, unless the run calls submodules: then they are
    # glue around the cells (unroll's slicing of the inputs) and stay ops.
    nested = {node_of[r].run for recs in blocks.values() for r in recs if r.scope.path != runs[node_of[r].run].path}
    for recs in blocks.values():
        for rec in recs:
            node = node_of[rec]
            outer = runs[node.run].path
            node.unit = "" if rec.scope.path == outer and node.run in nested else _unit(rec.scope.path, outer)
    for rec in records:                      # ops outside time join the one step all their inputs come from
        node = node_of[rec]
        if not node.placed:
            node.run, node.step = _common_step(node_of[p] for p in rec.parents if isinstance(p, Record))
            node.unit = _unit(rec.scope.path if rec.scope else "", "")
            node.joined = node.placed
    for node in node_of.values():
        if node.kind == "input" and not node.placed:
            node.run, node.step = _common_step(node.consumers, first=True)
            if node.const is not None and node.placed:          # a constant belongs to its reader's cell
                node.unit = node.consumers[0].unit
    for run in runs:
        run.steps.sort()
    _label_runs(runs, node_of)
    _key_nodes(node_of.values())
    return runs


def _run_for(ts, recs, runs, current, node_of):
    """The run of a time scope: the current run of its module path, as the same or the next step, or a new run."""
    outer = ts.parent.path if ts.parent is not None else ""
    t = ts.t
    if outer in current:
        run, last, deltas = current[outer]
        if t == last and any(_at(node_of.get(p), run.index, t) for rec in recs for p in rec.parents):
            return run
        if t - last in deltas:
            current[outer] = (run, t, (t - last,))
            run.steps.append(t)
            return run
    run = Run(len(runs), outer)
    runs.append(run)
    run.steps.append(t)
    current[outer] = (run, t, (1, -1))
    return run


def _at(node, run, step):
    return node is not None and node.run == run and node.step == step


def _common_step(nodes, first=False):
    """(run, step) of the one time step all `nodes` are at, else (None, None).

    Nodes at the same t of different runs (the two directions of a bidirectional layer) count as one
    step: of the last run (an output joins the upper row) or, with `first`, of the first (an input
    joins the lower row).
    """
    places = {(n.run, n.step) for n in nodes}
    steps = {step for _, step in places}
    if len(steps) == 1 and None not in steps:
        return (min if first else max)(places)
    return None, None


def _unit(path, outer):
    """The cell call an op belongs to: its module path cut one module below the run's path."""
    if not path or path == outer:
        return path
    prefix = outer + "." if outer and path.startswith(outer + ".") else ""
    rest = path[len(prefix):].split(".")
    depth = 1
    while depth < len(rest) and rest[depth].isdigit():      # `layers.0` names one module
        depth += 1
    return prefix + ".".join(rest[:depth])


def _label_runs(runs, node_of):
    """A run is labelled by its module path; runs sharing one are told apart by the cell they call."""
    paths = [run.path for run in runs]
    for node in node_of.values():
        run = runs[node.run] if node.kind == "op" and node.placed else None
        if run is not None and paths.count(run.path) > 1 and node.unit and run.label == run.path:
            run.label = node.unit


def _key_nodes(nodes):
    """Give each placed node a key naming its position inside its step (unit, op or name, ordinal)."""
    counts = {}
    for node in nodes:
        if node.placed:
            what = (node.unit, node.op or node.name or node.kind)
            n = counts.get((node.run, node.step, what), 0)
            counts[(node.run, node.step, what)] = n + 1
            node.key = what + (n,)


def _mark_states(edges, runs):
    """Mark the edges that carry state and name the state values.

    State flows between steps of one run (h_t-1 into step t; a value from another module of the step
    fed back, like a decoder's output, is named y), and from a run's final step into the first step
    of a run that takes nothing else from it (an encoder's state handed to its decoder).
    """
    into = {}
    for e in edges:
        s, d = e.src, e.dst
        if s.kind == "op" and s.placed and d.placed and s.run != d.run:
            into.setdefault((s.run, d.run), []).append(e)
    for e in edges:                           # edges come in the order their consumers were recorded
        s, d = e.src, e.dst
        if s.acc is not None or d.acc is not None:     # a running sum is not state (see _find_accumulators)
            continue
        if s.kind == "op" and s.placed and d.placed and s.run == d.run and s.step != d.step:
            e.kind = "state"
            run = runs[s.run]
            run.reverse = d.step < s.step
            if s.key not in run.states:
                names = run.states.values()
                run.states[s.key] = s.name or _fresh(("h", "c") if s.unit == d.unit else ("y",), names)
    _name_initial_states(edges, runs)
    for (a, b), es in sorted(into.items()):
        last = runs[a].steps[0 if runs[a].reverse else -1]
        first = runs[b].steps[-1 if runs[b].reverse else 0]
        if runs[b].follows is None and all(e.src.step == last and e.dst.step == first for e in es):
            runs[b].follows = a
            for e in es:
                e.kind = "state"


def _name_initial_states(edges, runs):
    """An unnamed input that goes where later steps take their state (a cell's zeros) is "initial h"."""
    takes = {}
    for e in edges:
        if e.kind == "state":
            takes.setdefault((e.dst.run, e.dst.key), runs[e.src.run].states[e.src.key])
    initial = {}
    for e in edges:
        name = takes.get((e.dst.run, e.dst.key))
        if e.src.kind == "input" and e.src.name is None and name:
            names = initial.setdefault(e.src, [])
            if name not in names:
                names.append(name)
    for leaf, names in initial.items():
        leaf.name = "initial " + ", ".join(names)


def _fresh(names, taken):
    """The first of `names` not yet used in the run, else the first numbered (h2, y1, ...)."""
    free = [n for n in names if n not in taken]
    return free[0] if free else next(f"{names[0]}{i}" for i in range(1, len(taken) + 2)
                                     if f"{names[0]}{i}" not in taken)


# -- what the tape says beyond the scopes -----------------------------------------------------------

def _owner(param):
    """The Module a Parameter is an attribute of (found through the garbage collector's referrers), or None."""
    from ..nn.module import Module

    for ref in gc.get_referrers(param):
        if isinstance(ref, Module):
            return ref
        if isinstance(ref, dict):
            for obj in gc.get_referrers(ref):
                if isinstance(obj, Module) and getattr(obj, "__dict__", None) is ref:
                    return obj
    return None


def _infer_units(nodes, runs):
    """Cells called outside any scope: a Module called with no name= and no parent records no scope, so its
    ops are found from its parameters. The ops that read a parameter of module M are M's; so is every
    unscoped op of the step on a path from those ops to ops of M (at this step, or at a later step
    through the state): the cell's gates and its h_t, not a readout or loss applied to h_t. The unit
    is named by the module's class (`RNNCell`); an op playing the same part at every step gets the
    same unit at every step (the last step's h_t is read by no later step).
    """
    owners = {}
    for node in nodes:
        if node.kind == "param" and node.leaf is not None and "." not in (node.name or "."):
            module = _owner(node.leaf)
            if module is not None:
                node.owner = type(module).__name__
                owners[node] = module
    if not owners:
        return
    free = [n for n in nodes if n.kind == "op" and n.placed and not n.unit]
    if not free:
        return
    seeds = {}                                # module -> ops reading its parameters
    for param, module in owners.items():
        for c in param.consumers:
            if c.kind == "op" and c.placed and not c.unit:
                seeds.setdefault(id(module), (param.owner, set()))[1].add(c)
    names = {}
    for label, ops in seeds.values():        # two modules of one class: RNNCell, RNNCell2
        n = sum(1 for other in names.values() if other.rstrip("0123456789") == label)
        names[frozenset(ops)] = label if n == 0 else f"{label}{n + 1}"
    unit_of = {}
    for ops, label in names.items():
        up = set(ops)                         # ops that reach one of the module's ops
        stack = list(ops)
        while stack:
            for p in stack.pop().parents:
                if p is not None and p.kind == "op" and not p.unit and p not in up:
                    up.add(p)
                    stack.append(p)
        down = set(ops)                       # ops reached from them within their step
        stack = list(ops)
        while stack:
            n = stack.pop()
            for c in n.consumers:
                if c.kind == "op" and not c.unit and c.run == n.run and c.step == n.step and c not in down:
                    down.add(c)
                    stack.append(c)
        for n in up & down:
            unit_of.setdefault(n, label)
    by_key = {}
    for n, label in unit_of.items():
        by_key.setdefault((n.run, n.key), label)
    for n in free:
        label = unit_of.get(n) or by_key.get((n.run, n.key))
        if label:
            n.unit = label
    for node in nodes:
        if node.const is not None and node.placed and node.consumers and not node.unit:
            node.unit = node.consumers[0].unit


def _find_accumulators(nodes, runs):
    """Running sums outside any cell: `loss = loss + l_t` in the time loop.

    An add (or sub) that takes a value from an earlier step of its run and whose result is read by
    nothing of its run but the next add of the same chain accumulates: the value passed on is not
    state that the step computes with. A chain inside a cell's own scope (below the run's module) is
    left as state. Each chain gets one group number; its adds are drawn as one Σ node.
    """
    def in_cell(n):
        path = runs[n.run].path
        return bool(n.unit) and n.unit != path
    acc = {n for n in nodes if n.kind == "op" and n.op in ("add", "sub") and n.placed and not in_cell(n)
           and any(p is not None and p.kind == "op" and p.placed and p.run == n.run and p.step != n.step
                   for p in n.parents)}
    _outside_chains(nodes)
    if not acc:
        return
    reach = {}                                # node -> the latest step of its run that it feeds
    for n in reversed(nodes):
        reach[n] = max((max(c.step, reach.get(c, c.step)) for c in n.consumers
                        if c.placed and c.run == n.run), default=n.step if n.placed else None) \
            if n.placed else None
    changed = True
    while changed:                            # the result may feed only the chain, or what no later step reads
        changed = False
        for n in list(acc):
            if any(c.placed and c.run == n.run and c not in acc and reach[c] > n.step for c in n.consumers):
                acc.discard(n)
                changed = True
    starts = {p for n in acc for p in n.parents
              if p is not None and p.kind == "op" and p.op in ("add", "sub") and p.placed and p not in acc
              and p.step != n.step and all(c in acc for c in p.consumers)}
    acc |= starts
    group = {}
    for n in sorted(acc, key=lambda n: (n.run, n.step)):
        linked = [group[p] for p in n.parents if p in group]
        group[n] = linked[0] if linked else len(set(group.values()))
    for n, g in group.items():
        n.acc = g
    # what is computed from the sum after the loop (`loss / (2 * T)`) stands above the steps, not in the last one
    stack = [c for n in group for c in n.consumers if c.joined and c.acc is None]
    while stack:
        c = stack.pop()
        if c.placed:
            c.run = c.step = None
            stack.extend(d for d in c.consumers if d.joined)


def _outside_chains(nodes):
    """`loss = loss + l_t` written after the step's `with scope(t=t)` block: adds outside time, each taking
    the previous add and one step's value. A chain of two or more whose results feed only the chain (or
    nothing placed in time) is a running sum too (one Σ); the first add, placed in step 0 because both
    its inputs are there, leaves it."""
    cand = [n for n in nodes if n.kind == "op" and n.op in ("add", "sub") and n.acc is None
            and (not n.placed or n.joined)
            and any(p is not None and p.kind == "op" and p.placed and not p.joined for p in n.parents)]
    group, members = {}, {}
    ok = set(cand)
    for n in cand:
        linked = [group[p] for p in n.parents if p in group]
        g = linked[0] if linked else len(members) + 1000
        group[n] = g
        members.setdefault(g, []).append(n)
    for g, ns in members.items():
        inside = set(ns)
        if len(ns) < 2 or any(c.placed and not c.joined and c not in inside for n in ns for c in n.consumers):
            continue
        if any(c not in inside and c.kind == "op" and c.op in ("add", "sub") and c in ok for n in ns[:-1]
               for c in n.consumers):
            continue
        for n in ns:
            n.acc = g
            n.run = n.step = None


def _drop_unknown_constants(nodes, edges):
    """A constant of unknown shape read by an accumulator is its start (`loss = 0`): not drawn."""
    gone = {n for n in nodes if n.const is not None and n.shape is None and all(c.acc is not None for c in n.consumers)}
    if gone:
        nodes[:] = [n for n in nodes if n not in gone]
        edges[:] = [e for e in edges if e.src not in gone]
        for n in nodes:
            n.parents = [None if p in gone else p for p in n.parents]


def _name_constants(nodes):
    """Plain-array inputs are named by their part: `x` (read by the cell), `y` (a loss's target)."""
    for n in nodes:
        if n.const is not None and n.name is None:
            n.name = n.const


def _qualify_parameters(nodes):
    """A module parameter with an undotted name (its module was the root) is named after its module: the
    cell call's scope when all its readers are in one (`cell.b`), else its module's class (`Linear.b`).
    Two different parameters never share a label: a repeated one gets a number (`b`, `b#2`)."""
    for n in nodes:
        if n.kind != "param" or n.leaf is None or "." in (n.name or "."):
            continue
        units = {c.unit for c in n.consumers if c.kind == "op" and c.unit}
        if len(units) == 1 and (n.owner is not None or _is_parameter(n.leaf)):
            n.name = f"{units.pop()}.{n.name}"
        elif n.owner is not None:
            n.name = f"{n.owner}.{n.name}"
    seen = {}
    for n in nodes:
        if n.kind == "param":
            label = n.name or "param"
            k = seen.get(label, 0) + 1
            seen[label] = k
            if k > 1:
                n.name = f"{label}#{k}"


def _is_parameter(value):
    from ..nn.module import Parameter
    return isinstance(value, Parameter)
