"""What is drawn: the graph unrolled or rolled, at op or cell detail, with middle steps elided.

Every view maps each graph node to a drawn box (or drops it): the identity for the unrolled op view,
one box per cell call and step for `detail="cells"`, one box for all elided steps of a run, one box
per position in the step for the rolled view. Edges follow the map; duplicates merge, and state
edges that the rolled view folds onto themselves become the recurrent self-edge.
"""
from ..errors import InvalidValueError

SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


class Box:
    """A drawn node. kind: "op", "param", "input", "cell" or "elided"; cluster: (run, step), (run, None) or None.

    key: the box's place inside its step, shared by the boxes that play the same part at every step.
    rows: for a box standing for several parameters, their (name, shape).
    """
    __slots__ = ("id", "kind", "title", "shape", "cluster", "grad", "is_target", "key", "rows", "extra")

    def __init__(self, id, kind, title, shape, cluster, grad=None, key=None):
        self.id, self.kind, self.title, self.shape = id, kind, title, shape
        self.cluster, self.grad, self.key = cluster, grad, key
        self.is_target = False
        self.rows = []
        self.extra = []                    # weights="labels": the parameters it adds that no edge names (+ b)


class Arrow:
    """A drawn edge. kind: "state", "param" or "data"; grad: ‖∂L/∂value‖ for state edges."""
    __slots__ = ("src", "dst", "kind", "label", "shape", "grad", "weight", "origin")

    def __init__(self, src, dst, kind, label=None, shape=None, grad=None):
        self.src, self.dst, self.kind, self.label, self.shape, self.grad = src, dst, kind, label, shape, grad
        self.weight = None                 # weights="labels": the shared weight acting on this edge (W_hh)
        self.origin = None                 # a state edge: the key of the state value it carries


class Picture:
    """Boxes and arrows in a stable order, plus the runs they are grouped by."""

    def __init__(self, boxes, arrows, runs, view, detail, weights="nodes", shared=()):
        self.boxes, self.arrows, self.runs, self.view, self.detail = boxes, arrows, runs, view, detail
        self.weights = weights
        self.shared = list(shared)         # weights="proxies": (name, shape) of each weight drawn per step


WEIGHTS = ("nodes", "labels", "proxies")


def default_weights(detail):
    """The textbook picture at cell detail (weights named on the edges they act on), a dashed copy of each
    weight inside every step at op detail."""
    return "labels" if detail == "cells" else "proxies"


def build(graph, view="unrolled", detail="ops", max_steps=None, weights=None):
    """The Picture of `graph` for one view ("unrolled" | "rolled") and detail ("ops" | "cells").

    weights: "nodes" (each parameter once, an edge into every step that reads it), "labels" (no
    parameter nodes: the weight's name on each edge it acts on, Goodfellow et al. Fig 10.3) or
    "proxies" (a dashed copy of each parameter inside every step that reads it); None: the default of
    the detail (`default_weights`).
    """
    if view not in ("unrolled", "rolled"):
        raise InvalidValueError(f"draw: view must be 'unrolled' or 'rolled', got {view!r}")
    if detail not in ("ops", "cells"):
        raise InvalidValueError(f"draw: detail must be 'ops' or 'cells', got {detail!r}")
    weights = default_weights(detail) if weights is None else weights
    if weights not in WEIGHTS:
        raise InvalidValueError(f"draw: weights must be one of {WEIGHTS}, got {weights!r}")
    elided = _elided(graph.runs, max_steps) if view == "unrolled" else {}
    boxes, where = {}, {}
    for node in graph.nodes:
        box = _box(node, graph, view, detail, elided)
        if box is not None and box.kind == "param" and weights != "nodes":
            where[node] = box                               # drawn per step (proxies) or on edges (labels)
            continue
        if box is not None:
            box = boxes.setdefault(box.id, box)
            box.is_target = box.is_target or node is graph.target
            if box.id.startswith("p_"):                     # a module's parameters: one row each
                box.rows.append((node.name.rsplit(".", 1)[-1], node.shape))
                if node.grad is not None:                   # coloured by the largest gradient among them
                    box.grad = max(box.grad or 0.0, node.grad)
        where[node] = box
    shared = []
    if weights == "nodes":
        arrows = _arrows(graph, where, view)
    else:
        arrows, extra, shared = _weighted_arrows(graph, where, view, weights)
        boxes.update((b.id, b) for b in extra)
    _cell_grads(graph, where)
    return Picture(list(boxes.values()), arrows, graph.runs, view, detail, weights, shared)


def _elided(runs, max_steps):
    """run -> the set of steps drawn as one `…` box: all but the first and last when a run is too long."""
    if max_steps is None:
        return {}
    if max_steps < 2:
        raise InvalidValueError(f"draw: max_steps must be at least 2 (the first and last step), got {max_steps}")
    head, tail = (max_steps + 1) // 2, max_steps // 2
    return {run.index: set(run.steps[head:len(run.steps) - tail]) for run in runs if len(run.steps) > max_steps}


def _box(node, graph, view, detail, elided):
    """The box `node` is drawn in, or None to leave it out."""
    run = node.run
    if node.acc is not None:                                # a running sum: one Σ for the whole chain
        return Box(f"s{node.acc}", "sum", _sum_title(node, graph), None, None, key=("sum", node.acc))
    if node.placed and node.step in elided.get(run, ()):
        if node.kind == "input":
            return None
        n = len(elided[run])
        return Box(f"e{run}", "elided", f"… ({n} step{'s' * (n > 1)})", None, (run, None))
    cell = detail == "cells" and node.kind == "op" and node.unit and node.placed
    module = (node.name or "").rpartition(".")[0]
    if detail == "cells" and node.kind == "param" and module:     # one box per module's parameters
        return Box(f"p_{_slug(module)}", "param", module, None, None)
    if view == "rolled" and node.placed:
        if cell:
            return Box(f"u{run}_{_slug(node.unit)}", "cell", _unit_title(node, graph), None, (run, None))
        return Box(f"k{run}_{_slug(node.key)}", node.kind, _title(node, "ₜ"), node.shape, (run, None))
    cluster = (run, node.step) if node.placed else None
    if cell:
        return Box(f"u{run}_{node.step}_{_slug(node.unit)}", "cell", _unit_title(node, graph), None, cluster,
                   key=("cell", node.unit))
    step = str(node.step).translate(SUBSCRIPTS) if node.placed else ""
    return Box(node.id, node.kind, _title(node, step), node.shape, cluster, node.grad, node.key)


def _sum_title(node, graph):
    """Σ, with the name the user gave the running sum (any of its values' names) or the value it makes."""
    named = [n.name for n in graph.nodes if n.acc == node.acc and n.name]
    if not named:
        last = [n for n in graph.nodes if n.acc == node.acc][-1]
        named = [c.name for c in last.consumers if c.name]
    return f"Σ {named[0]}" if named else "Σₜ"


def _title(node, step=""):
    """An op's name ("h = tanh" when its tensor is named); an input's name, with the step as a subscript
    when the name is a plain identifier (x -> x₃)."""
    if node.kind == "op":
        return f"{node.name} = {node.op}" if node.name else node.op
    name = node.name or node.op or node.kind
    subscript = node.kind == "input" and name.isidentifier() and not name[-1].isdigit()
    return name + step if subscript else name


def _unit_title(node, graph):
    """A cell box's name: its module path below the run's path (the module's own name if they are equal)."""
    outer = graph.runs[node.run].path
    if outer and node.unit.startswith(outer + "."):
        return node.unit[len(outer) + 1:]
    parts = node.unit.split(".")
    return ".".join(parts[-2:]) if len(parts) > 1 and parts[-1].isdigit() else parts[-1]


def _slug(value):
    text = ".".join(str(v) for v in value) if isinstance(value, tuple) else str(value)
    return "".join(c if c.isalnum() else "_" for c in text)


def _arrows(graph, where, view):
    """Edges between boxes; duplicates merge (state edges stay one per state value).

    A state edge the rolled view folds onto one box becomes that box's single self-edge, naming
    every state it carries and the number of steps: "h, c  ×8".
    """
    arrows, loops = {}, {}
    for e in graph.edges:
        src, dst = where[e.src], where[e.dst]
        if src is None or dst is None or (src is dst and not (e.kind == "state" and view == "rolled")):
            continue
        if e.kind != "state":
            arrows.setdefault((src.id, dst.id, None), Arrow(src, dst, e.kind))
            continue
        run = graph.runs[e.src.run]
        name = run.states.get(e.src.key, "state")
        if src is dst:
            names = loops.setdefault(src, ([], len(run.steps)))[0]
            if name not in names:
                names.append(name)
        elif (src.id, dst.id, e.src.key) not in arrows:
            label = f"{name} ×{len(run.steps)}" if view == "rolled" else name
            arrows[(src.id, dst.id, e.src.key)] = Arrow(src, dst, "state", label, e.src.shape, e.src.grad)
            arrows[(src.id, dst.id, e.src.key)].origin = e.src.key
    loops = [Arrow(box, box, "state", f"{', '.join(names)}  ×{steps}") for box, (names, steps) in loops.items()]
    for a in loops:
        a.origin = "loop"
    return list(arrows.values()) + loops


def _cell_grads(graph, where):
    """A cell box shows the largest gradient among the values leaving it (its h_t, c_t)."""
    for e in graph.edges:
        src = where[e.src]
        if src is not None and src.kind == "cell" and where[e.dst] is not src and e.src.grad is not None:
            src.grad = max(src.grad or 0.0, e.src.grad)


def _weighted_arrows(graph, where, view, weights):
    """The arrows when parameters are not drawn once: `labels` names the weight on the edges it acts on (the
    other input of the matmul that reads it) and lists any other parameter in its reader's box (`+ b`);
    `proxies` draws a copy of the parameter in every step cluster that reads it, with a short edge.

    Returns (arrows, the proxy boxes, [(name, shape)] of the parameters drawn as proxies).
    """
    params = [n for n in graph.nodes if n.kind == "param"]
    kept = [e for e in graph.edges if e.src.kind != "param"]
    arrows = _arrows(_Edges(graph, kept), where, view)
    extra, shared = {}, []
    if weights == "proxies":
        for e in graph.edges:
            if e.src.kind != "param" or where.get(e.dst) is None:
                continue
            dst = where[e.dst]
            if dst.kind == "param":
                continue
            cluster = dst.cluster
            tag = "g" if cluster is None else "_".join(str(c) for c in cluster if c is not None) or "r"
            box = extra.get((e.src, cluster))
            if box is None:
                title = e.src.name or "param"
                box = extra[(e.src, cluster)] = Box(f"{e.src.id}_{tag}", "proxy", title, e.src.shape, cluster,
                                                    e.src.grad, key=("proxy", title))
            key = (box.id, dst.id)
            if not any((a.src.id, a.dst.id) == key for a in arrows):
                arrows.append(Arrow(box, dst, "proxy"))
        seen = []
        for p in params:
            if any(src is p for src, _ in extra) and p not in seen:
                seen.append(p)
        shared = [(p.name or "param", p.shape) for p in seen]
        return arrows, list(extra.values()), shared
    # labels: the weight acting on an edge is the parameter operand of the matmul the edge enters
    by_pair = {}
    for a in arrows:
        by_pair.setdefault((a.src.id, a.dst.id), []).append(a)
    short = _short_names(params)
    named = set()
    for e in graph.edges:
        d = e.dst
        if e.src.kind == "param" or d.op != "matmul":
            continue
        ws = [p for p in d.parents if p is not None and p.kind == "param"]
        src, dst = where.get(e.src), where.get(d)
        if not ws or src is None or dst is None:             # src is dst: the rolled view's loop
            continue
        name = short[ws[0]]
        if name.startswith(dst.title + "."):                # next to its box: `W_h`, not `layers.1.W_h`
            name = name[len(dst.title) + 1:]
        for a in by_pair.get((src.id, dst.id), ()):
            if a.weight is None and (a.kind == "state") == (e.kind == "state") and \
                    (a.kind != "state" or a.origin in ("loop", e.src.key)):
                a.weight = name
        named.add(ws[0])
    for p in params:                          # the others (biases) are listed in the boxes that read them
        if p in named:
            continue
        for c in p.consumers:
            box = where.get(c)
            name = short[p]
            if box is not None and name.startswith(box.title + "."):    # `cell + b`, not `cell + cell.b`
                name = name[len(box.title) + 1:]
            if box is not None and box.kind not in ("param", "elided") and name not in box.extra:
                box.extra.append(name)
    return arrows, [], []


def _short_names(params):
    """A parameter's label on an edge: its own name (`W_hh`) unless another parameter has the same one,
    then its dotted name (`encoder.W_h`)."""
    own = {p: (p.name or "param").rsplit(".", 1)[-1] for p in params}
    counts = {}
    for name in own.values():
        counts[name] = counts.get(name, 0) + 1
    return {p: own[p] if counts[own[p]] == 1 else (p.name or "param") for p in params}


class _Edges:
    """A graph with some of its edges (what _arrows reads)."""

    def __init__(self, graph, edges):
        self.edges, self.runs = edges, graph.runs
