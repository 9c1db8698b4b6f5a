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
    __slots__ = ("id", "kind", "title", "shape", "cluster", "grad", "is_target", "key", "rows")

    def __init__(self, id, kind, title, shape, cluster, grad=None, key=None):
        self.id, self.kind, self.title, self.shape = id, kind, title, shape
        self.cluster, self.grad, self.key = cluster, grad, key
        self.is_target = False
        self.rows = []


class Arrow:
    """A drawn edge. kind: "state", "param" or "data"; grad: ‖∂L/∂value‖ for state edges."""
    __slots__ = ("src", "dst", "kind", "label", "shape", "grad")

    def __init__(self, src, dst, kind, label=None, shape=None, grad=None):
        self.src, self.dst, self.kind, self.label, self.shape, self.grad = src, dst, kind, label, shape, grad


class Picture:
    """Boxes and arrows in a stable order, plus the runs they are grouped by."""

    def __init__(self, boxes, arrows, runs, view, detail):
        self.boxes, self.arrows, self.runs, self.view, self.detail = boxes, arrows, runs, view, detail


def build(graph, view="unrolled", detail="ops", max_steps=None):
    """The Picture of `graph` for one view ("unrolled" | "rolled") and detail ("ops" | "cells")."""
    if view not in ("unrolled", "rolled"):
        raise InvalidValueError(f"draw: view must be 'unrolled' or 'rolled', got {view!r}")
    if detail not in ("ops", "cells"):
        raise InvalidValueError(f"draw: detail must be 'ops' or 'cells', got {detail!r}")
    elided = _elided(graph.runs, max_steps) if view == "unrolled" else {}
    boxes, where = {}, {}
    for node in graph.nodes:
        box = _box(node, graph, view, detail, elided)
        if box is not None:
            box = boxes.setdefault(box.id, box)
            box.is_target = box.is_target or node is graph.target
            if box.id.startswith("p_"):                     # a module's parameters: one row each
                box.rows.append((node.name.rsplit(".", 1)[-1], node.shape))
                if node.grad is not None:                   # coloured by the largest gradient among them
                    box.grad = max(box.grad or 0.0, node.grad)
        where[node] = box
    arrows = _arrows(graph, where, view)
    _cell_grads(graph, where)
    return Picture(list(boxes.values()), arrows, graph.runs, view, detail)


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
    loops = [Arrow(box, box, "state", f"{', '.join(names)}  ×{steps}") for box, (names, steps) in loops.items()]
    return list(arrows.values()) + loops


def _cell_grads(graph, where):
    """A cell box shows the largest gradient among the values leaving it (its h_t, c_t)."""
    for e in graph.edges:
        src = where[e.src]
        if src is not None and src.kind == "cell" and where[e.dst] is not src and e.src.grad is not None:
            src.grad = max(src.grad or 0.0, e.src.grad)
