"""What the tape says, placed in time: records and leaves as nodes, grouped into runs of time steps.

A *run* is one unrolled sequence: the consecutive `scope(t=k)` blocks of one module path, e.g. the
T steps of an encoder. A new run starts where the step count restarts (a decoder after its encoder,
layer 2 after layer 1, the backward direction after the forward one). Records made outside any
time scope inherit the step of their inputs when those all come from one step (an output layer
applied to h_t belongs to step t). Edges between different steps of one run carry the recurrent
state.
"""
import numpy as np

from ..tape import Record, Tape
from ..tensor import Tensor
from ..errors import ArgumentError, InvalidValueError


class Node:
    """One value: a recorded op ("op"), a leaf that requires grad ("param"), or another input ("input")."""
    __slots__ = ("id", "kind", "op", "name", "shape", "run", "step", "unit", "key", "grad", "consumers")

    def __init__(self, id, kind, op, name, shape, grad):
        self.id, self.kind, self.op, self.name, self.shape, self.grad = id, kind, op, name, shape, grad
        self.run = self.step = None     # run index and time step, or None outside time
        self.unit = ""                  # module path of the cell call this op belongs to ("" if none)
        self.key = None                 # position inside its step, the same at every step
        self.consumers = []

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
                continue
            src = node_of.get(parent)
            if src is None:
                src = node_of[parent] = _leaf(parent, f"v{rec.index - base}_{pos}")
                nodes.append(src)
            edges.append(Edge(src, node, "param" if src.kind == "param" else "data"))
            src.consumers.append(node)
        node_of[rec] = node
        nodes.append(node)
    runs = _place(records, node_of)
    _mark_states(edges, runs)
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


def _leaf(value, id):
    """Node for an input that is not an op of the graph: a leaf tensor, or a record made before the tape."""
    if isinstance(value, Record):
        return Node(id, "input", value.op, _tensor_name(value), value.shape, None)
    kind = "param" if value.requires_grad else "input"
    return Node(id, kind, None, value.name, value.shape, _grad_norm(value))


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
    for node in node_of.values():
        if node.kind == "input" and not node.placed:
            node.run, node.step = _common_step(node.consumers, first=True)
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
