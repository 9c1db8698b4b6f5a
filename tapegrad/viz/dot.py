"""Drawing: a Picture as a `graphviz.Digraph`, with the styles that make it readable on a slide."""
import warnings
from collections.abc import Iterable, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from ..errors import InvalidValueError
from .colors import NO_GRAD, LogScale, readable
from .graph import Graph, extract
from .layout import Slot, levels, rows, sources_and_sinks, timeline
from .views import Arrow, Box, build
from .views import Picture as View

if TYPE_CHECKING:
    import graphviz

    from .display import Picture

FONT = "Helvetica"
STATE = "#1f4e8c"          # the chain through time
PARAM = "#b9770e"          # shared weights
STYLE = {                  # kind -> node attributes
    "op": dict(shape="box", style="rounded,filled", fillcolor="#eef3fb", color="#4a6fa5"),
    "param": dict(shape="box", style="filled", fillcolor="#fdebd0", color=PARAM, penwidth="1.5"),
    "input": dict(shape="box", style="rounded,filled", fillcolor="#e6f4e4", color="#4c8c3a"),
    "cell": dict(shape="box", style="rounded,filled", fillcolor="#d6e4f5", color=STATE, penwidth="2",
                 fontsize="18", margin="0.25,0.12"),
    "elided": dict(shape="box", style="rounded,dashed", color="#777777", fontsize="16"),
    "proxy": dict(shape="box", style="dashed,filled", fillcolor="#fdebd0", color=PARAM, penwidth="1.5",
                  fontsize="13", margin="0.06,0.03"),
    "equals": dict(shape="plaintext", fontsize="44"),
    "sum": dict(shape="circle", style="filled", fillcolor="#eef3fb", color="#4a6fa5", penwidth="1.5",
                fontsize="18", margin="0.02"),
}
THEMES = {"paper": 1.0, "slide": 1.35}     # theme -> factor on font sizes and line widths
HOLD = 4                   # parallel edges from an anchor to its step (see _unrolled)
TIME = {"LR": ("BT", False), "RL": ("BT", True), "TB": ("LR", False), "BT": ("LR", True)}  # -> (rankdir, reversed)
EDGE = {
    "state": dict(color=STATE, fontcolor=STATE, penwidth="2.5", constraint="false", fontsize="14"),
    "param": dict(color=PARAM, penwidth="1", arrowsize="0.6", constraint="false"),
    "data": dict(color="#555555"),
    "proxy": dict(color=PARAM, penwidth="1", arrowsize="0.6", style="dashed"),
}


def draw(target: Any, view: str = "unrolled", detail: str = "ops", max_steps: int | None = None,
         show_shapes: bool = True, show_grads: bool = False, rankdir: str = "LR", weights: str | None = None,
         grad_scale: LogScale | None = None, theme: str = "paper") -> "Picture":
    """The BPTT picture of a Tensor (what it depends on) or a Tape, as a `graphviz.Digraph`.

    view: "unrolled" (one cluster per time step), "rolled" (each cell once, state as a self-edge ×T)
    or "unfold" (the rolled cell, "=", the unrolled steps, in one figure).
    detail: "ops" (every primitive) or "cells" (one box per cell call and step).
    max_steps: keep the first and last steps of longer sequences, elide the middle into one box.
    show_grads: after backward, colour nodes and state edges by ‖gradient‖ on a log scale.
    rankdir: the way time runs: "LR" (default), "RL", "TB" or "BT"; inside a step values flow
    upward (LR, RL) or rightward (TB, BT).
    weights: how shared parameters are drawn: "labels" (the weight's name on each edge it acts on, no
    parameter nodes; the default at cell detail), "proxies" (a dashed copy inside each step, one legend
    entry; the default at op detail) or "nodes" (each once, with an edge into every step).
    theme: "paper" (default) or "slide": larger text and heavier lines, for a projector.
    grad_scale: with show_grads, the `colors.LogScale` to colour by (an animation keeps one for all frames).
    target may also be a `graph.Graph` already extracted (what `animate_backward` draws each frame from).
    """
    import graphviz

    if rankdir not in TIME:
        raise InvalidValueError(f"draw: rankdir must be one of {tuple(TIME)}, got {rankdir!r}")
    if theme not in THEMES:
        raise InvalidValueError(f"draw: theme must be one of {tuple(THEMES)}, got {theme!r}")
    if show_grads and view != "unrolled":
        raise InvalidValueError("draw: show_grads needs view='unrolled' (the rolled view merges the time steps)")
    graph = target if isinstance(target, Graph) else extract(target)
    picture = build(graph, "unrolled" if view == "unfold" else view, detail, max_steps, weights)
    folded = None
    if view == "unfold":                        # the rolled cell from the same tape, left of the unrolled steps
        folded = build(graph, "rolled", detail, None, weights)
        for box in folded.boxes:
            box.id = "f_" + box.id
    scale = (grad_scale or _scale(picture)) if show_grads else None
    g = graphviz.Digraph(graph_attr=dict(rankdir=TIME[rankdir][0], newrank="true", fontname=FONT,
                                         fontsize=f"{16 * THEMES.get(theme, 1.0):g}",
                                         labelloc="b" if TIME[rankdir][0] == "BT" else "t",
                                         nodesep="0.45" if detail == "cells" else "0.25", ranksep="0.3", pad="0.2",
                                         forcelabels="true"),
                         node_attr=dict(fontname=FONT, fontsize="14"),
                         edge_attr=dict(fontname=FONT, fontsize="12", arrowsize="0.8"))
    style = _Style(show_shapes, scale, detail == "ops", THEMES[theme])
    clustered = _by_cluster(picture.boxes)
    if folded is not None:
        clustered.setdefault(None, []).extend(b for b in folded.boxes if b.cluster is None)
    with g.subgraph() as s:                     # parameters: a row of their own, below everything
        s.attr(rank="min")
        for box in clustered.get(None, ()):
            if box.kind == "param":
                style.node(s, box)
    for box in clustered.get(None, ()):
        if box.kind != "param":
            style.node(g, box)
    if picture.view == "rolled":
        for run in picture.runs:
            _rolled(g, picture, run, clustered, style)
    else:
        _unrolled(g, picture, clustered, style, TIME[rankdir][1], folded)
    for arrow in picture.arrows + (folded.arrows if folded is not None else []):
        style.edge(g, arrow, picture.detail)
    if picture.shared:
        g.node("weights", label=_shared_legend(picture.shared, show_shapes), shape="plain")
    if scale is not None:
        # `note` is an extra attribute animate_backward sets on its scale (LogScale does not declare it)
        g.node("legend", label=scale.legend(*([scale.note] if getattr(scale, "note", None) else [])),  # type: ignore[attr-defined]
               shape="plain")
    from .display import as_picture  # displays inline in Jupyter through tapegrad's backends
    return as_picture(g)


def _unrolled(g: "graphviz.Digraph", picture: View, clustered: dict[Any, list[Box]], style: "_Style", backward: bool,
              folded: View | None = None) -> None:
    """Step clusters on their timelines, runs in rows, held in place by invisible anchors.

    Below each step sits an anchor; a row's anchors share a rank and are chained by flat edges, which
    Graphviz keeps in order, and each anchor holds up the step above it by HOLD parallel invisible
    edges (Graphviz adds up their crossing penalties, so a step sliding out of time order would cost
    more crossings than it could save): the steps line up in time order. A row above another stands
    on the tops of the steps below it.
    """
    slots = timeline(picture, clustered)
    has_in, has_out = sources_and_sinks(picture.arrows + (folded.arrows if folded is not None else []))
    level = levels(picture)
    for a in picture.arrows:                  # a part's level above the anchor is kept inside the step
        if a.kind != "state" and a.src.cluster == a.dst.cluster and a.src in level and a.dst in level:
            style.minlen[a] = max(1, level[a.dst] - level[a.src])
    several = len(picture.runs) > 1
    below = None
    first = True
    for row in rows(picture.runs):
        line = [slot for index in row for slot in slots[index]]
        if folded is not None and first:        # view="unfold": the rolled cell, "=", then the steps
            inner = [b for b in folded.boxes if b.cluster is not None]
            steps = picture.runs[0].steps
            rolled = Slot("f_anchor", inner, "rolled")
            equals = Slot("f_eq", [Box("f_equals", "equals", "=", None, None)], "equals")
            with g.subgraph(name="cluster_f_anchor") as s:
                s.attr(label=f"rolled:  t = {steps[0]} … {steps[-1]}", style="rounded,filled", fillcolor="#f6f6f6",
                       color="#b0b0b0")
                for box in inner:
                    style.node(s, box)
            g.node("f_equals", label="=", **STYLE["equals"])
            line = [rolled, equals] + line
        first = False
        for index in row:
            for i, slot in enumerate(slots[index]):
                with g.subgraph(name=f"cluster_{slot.anchor}") as s:
                    if slot.step is None:
                        s.attr(label="", style="invis")
                    else:
                        label = f"t = {slot.step}"
                        if several and i == 0:
                            label = f"{picture.runs[index].label}:  {label}"
                        s.attr(label=label, style="rounded,filled", fillcolor="#f6f6f6", color="#b0b0b0")
                    for box in slot.boxes:
                        style.node(s, box)
        with g.subgraph() as s:
            s.attr(rank="same")
            for slot in line:
                s.node(slot.anchor, style="invis", shape="point", width="0", height="0", label="")
        order = line[::-1] if backward else line
        for a, b in zip(order, order[1:]):
            g.edge(a.anchor, b.anchor, style="invis")
        for slot in line:
            for box in slot.boxes:
                if box not in has_in:
                    for _ in range(HOLD):
                        g.edge(slot.anchor, box.id, style="invis", minlen=str(level.get(box, 1)))
        above = {slot.step: slot.anchor for slot in line}
        for slot in below or ():              # each step stands on the same step of the row below
            for box in slot.boxes:
                if box not in has_out:
                    g.edge(box.id, above.get(slot.step, order[0].anchor), style="invis")
        below = line


def _rolled(g: "graphviz.Digraph", picture: View, run: Any, clustered: dict[Any, list[Box]], style: "_Style") -> None:
    """A run's cell once, in a cluster labelled with the steps it stands for."""
    with g.subgraph(name=f"cluster_r{run.index}") as c:
        span = f"t = {run.steps[0]} … {run.steps[-1]}"
        c.attr(label=f"{run.label}   {span}" if len(picture.runs) > 1 else span, style="rounded,filled",
               color="#888888", fillcolor="#f6f6f6")
        for box in clustered.get((run.index, None), ()):
            style.node(c, box)


def _shared_legend(shared: Iterable[tuple[str, Sequence[int] | None]], show_shapes: bool) -> str:
    """The legend of the dashed per-step copies: one entry per shared weight."""
    rows = "".join(f'<TR><TD BORDER="1" STYLE="dashed" COLOR="{PARAM}" BGCOLOR="#fdebd0">{escape(name)}</TD>'
                   f'<TD ALIGN="LEFT">{escape(_shape(shape)) if show_shapes and shape is not None else ""}</TD></TR>'
                   for name, shape in shared)
    return (f'<<TABLE BORDER="1" COLOR="#999999" CELLBORDER="0" CELLSPACING="4" CELLPADDING="3">'
            f'<TR><TD COLSPAN="2"><B>shared weights</B></TD></TR>{rows}'
            f'<TR><TD COLSPAN="2" ALIGN="LEFT">dashed: one shared tensor, a copy in each step that reads it'
            f'</TD></TR></TABLE>>')


def _scale(picture: View) -> LogScale:
    """The colour scale of show_grads; an error when no gradient was kept, a warning when only the
    parameters' were (backward ran, but the states' gradients were not retained)."""
    norms = [b.grad for b in picture.boxes if b.grad is not None]
    norms += [a.grad for a in picture.arrows if a.grad is not None]
    states = sorted({name for run in picture.runs for name in run.states.values()})
    looked = (f"∂L/∂{', ∂L/∂'.join(states)} at each step" if states else "the gradients of the recorded values")
    how = ("run the forward inside `with tapegrad.Tape(retain_grads=True) as tape:` and keep `tape` (or call "
           "`.retain_grad()` on the states), then call backward")
    if not norms:
        raise InvalidValueError(f"draw: show_grads=True but no gradient was found (looked for {looked} and the "
                                f"parameters' .grad); {how}")
    inner = [b for b in picture.boxes if b.kind not in ("param", "proxy") and b.grad is not None]
    if not inner and not any(a.grad is not None for a in picture.arrows):
        warnings.warn(f"draw: show_grads=True but only the parameters have gradients; {looked} were not kept, so "
                      f"the steps are drawn white. To see them: {how}", UserWarning, stacklevel=3)
    return LogScale(norms)


def _by_cluster(boxes: Iterable[Box]) -> dict[Any, list[Box]]:
    clustered: dict[Any, list[Box]] = {}
    for box in boxes:
        clustered.setdefault(box.cluster, []).append(box)
    return clustered


class _Style:
    """Node and edge attributes: by kind, plus the gradient colours when there is a scale."""

    def __init__(self, show_shapes: bool, scale: LogScale | None, reverse_state: bool, factor: float = 1.0) -> None:
        self.show_shapes, self.scale, self.reverse_state = show_shapes, scale, reverse_state
        self.factor = factor                    # the theme's: larger text and heavier lines on a slide
        self.minlen: dict[Arrow, int] = {}                        # arrow -> ranks it spans at least (set by the layout)

    def node(self, g: "graphviz.Digraph", box: Box) -> None:
        attrs = dict(STYLE[box.kind])
        if box.is_target:
            attrs["peripheries"] = "2"
        if self.scale is not None and box.kind not in ("elided", "sum"):
            if box.grad is None:
                attrs.update(fillcolor=NO_GRAD, color="#999999")
            else:
                attrs.update(fillcolor=self.scale.color(box.grad), fontcolor=self.scale.font_color(box.grad))
        g.node(box.id, label=self.label(box), **self.themed(attrs, "14"))

    def themed(self, attrs: dict[str, str], fontsize: str) -> dict[str, str]:
        if self.factor != 1.0:
            attrs["fontsize"] = f"{float(attrs.get('fontsize', fontsize)) * self.factor:g}"
            attrs["penwidth"] = f"{float(attrs.get('penwidth', '1')) * self.factor:g}"
        return attrs

    def label(self, box: Box) -> str:
        title = escape(box.title)
        if box.kind in ("param", "cell", "proxy"):
            title = f"<B>{title}</B>"
        if box.extra:                               # weights="labels": the parameters no edge names
            on_dark = self.scale is not None and box.grad is not None and self.scale.font_color(box.grad) == "white"
            title += (f'<BR/><FONT POINT-SIZE="{12 * self.factor:g}" COLOR="{"white" if on_dark else PARAM}">'
                      f'+ {escape(", ".join(box.extra))}</FONT>')
        if box.kind == "proxy":                     # the legend has the shape
            return f"<{title}>"
        if self.show_shapes and box.shape is not None:
            title += f'<BR/><FONT POINT-SIZE="11">{escape(_shape(box.shape))}</FONT>'
        if box.rows:                                # a module's parameters, one per line
            cells = "".join(f"<TR><TD>{escape(name)}{' ' + escape(_shape(shape)) if self.show_shapes else ''}</TD></TR>"
                            for name, shape in box.rows)
            title = f'<TABLE BORDER="0" CELLSPACING="0" CELLPADDING="1"><TR><TD>{title}</TD></TR>{cells}</TABLE>'
        return f"<{title}>"

    def edge(self, g: "graphviz.Digraph", arrow: Arrow, detail: str) -> None:
        attrs = dict(EDGE[arrow.kind])
        if self.minlen.get(arrow, 1) > 1:
            attrs["minlen"] = str(self.minlen[arrow])
        if arrow.label:
            shape = self.show_shapes and detail == "cells" and arrow.shape is not None
            attrs["label"] = arrow.label + (" " + _shape(arrow.shape) if shape else "")
        if arrow.weight:                            # weights="labels": the weight acting on the edge
            text = f'<FONT COLOR="{PARAM}"><B>{escape(arrow.weight)}</B></FONT>'
            if arrow.label:
                text += f'<BR/>{escape(attrs["label"])}'
            attrs["label"] = f"<{text}>"
        if self.scale is not None and arrow.kind == "state" and arrow.grad is not None:
            attrs["color"] = self.scale.color(arrow.grad)
            attrs["fontcolor"] = readable(attrs["color"])      # pale yellow text on white is unreadable
            attrs["penwidth"] = "3.5"
        elif self.scale is not None and arrow.kind == "state":     # no gradient (yet): grey, not blue
            attrs["color"] = attrs["fontcolor"] = "#8c8c8c"
        if arrow.kind == "state" and "label" in attrs and not self.reverse_state:
            if arrow.src is arrow.dst:              # a loop: placed after layout, clear of the edge
                attrs["xlabel"] = attrs.pop("label")
            else:                                   # centred on the edge: an empty row below lifts the text off it
                text = attrs["label"]
                text = text[1:-1] if text.startswith("<") else escape(text)
                lines = text.count("<BR/>") + 1
                size = float(attrs.get("fontsize", "14")) * self.factor
                attrs["label"] = (f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0"><TR><TD>{text}'
                                  f'</TD></TR><TR><TD HEIGHT="{round(lines * size * 1.2)}"> </TD></TR></TABLE>>')
        if (self.reverse_state and arrow.kind == "state" and arrow.src is not arrow.dst
                and "elided" not in (arrow.src.kind, arrow.dst.kind)):
            # h_t leaves the top of its step for the bottom of the next: laid out as an edge from the
            # consumer up to the producer (drawn pointing back), which Graphviz routes between the steps
            attrs.update(constraint="true", dir="back")
            g.edge(arrow.dst.id, arrow.src.id, **self.themed(attrs, "12"))
        else:
            g.edge(arrow.src.id, arrow.dst.id, **self.themed(attrs, "12"))


def _shape(shape: Sequence[int]) -> str:
    return f"({shape[0]},)" if len(shape) == 1 else "(" + ", ".join(str(n) for n in shape) + ")"
