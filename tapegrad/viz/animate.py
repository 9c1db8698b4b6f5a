"""The reverse sweep through time, as an animation: frame k shows what backward has reached after k steps.

    tapegrad.viz.animate_backward(loss, "bptt.svg")     # bptt.svg (animated) and bptt_frames/frame_00.svg, ...

The sweep is the real one (`tapegrad.grad` with its `on_edge` hook, the graph retained): each record
it processes sends gradients to its inputs, and a value's gradient is complete when the sweep reaches
the record that made it. A frame colours every value whose gradient is complete by ‖∂L/∂value‖ (one
log scale for all frames) and leaves the rest white, so ∂L/∂h_t arrives one step at a time, from the
last step back to t = 0: shrinking by orders of magnitude in an Elman RNN, carried by c_t in an LSTM.
"""
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidValueError
from .colors import LogScale
from .graph import Graph, _records, extract

if TYPE_CHECKING:
    from ..tensor import Tensor

__all__ = ["animate_backward", "backward_frames"]


def backward_frames(loss: "Tensor") -> tuple[Graph, list[tuple[Any, dict[str, float]]]]:
    """The sweep, step by step: (graph, frames), frames[k] = (t, {node id: ‖∂L/∂value‖}) for the values whose
    gradient is complete once the sweep has done every record of step t, the k-th step from the end
    (of the last run that carries state)."""
    from ..autodiff import grad

    records, _ = _records(loss)
    base = records[0].index
    graph = extract(loss)
    sums: dict[int, np.ndarray] = {}
    order: list[Any] = []                       # record -> gradient of its output so far; records in sweep order
    seen: set[Any] = set()

    def on_edge(rec: Any, i: int, parent: Any, g: Any) -> None:
        if rec not in seen:
            seen.add(rec)
            order.append(rec)
        if parent is not None:
            g = np.asarray(g, dtype=np.float64)
            before = sums.get(id(parent))
            sums[id(parent)] = g if before is None else before + g

    grad(loss, (loss,), retain_graph=True, on_edge=on_edge)
    # a recorded loss has a record (_records above raised otherwise), hence the ignore; unused-ignore: while
    # Tensor.record is unannotated there is nothing to ignore
    norms = {f"n{loss.record.index - base}":  # type: ignore[union-attr, unused-ignore]
             float(np.sqrt(np.sum(np.square(np.ones(loss.shape)))))}
    done: list[tuple[str, float]] = []         # (node id, its norm), in the order the sweep completed them
    for rec in order:
        nid = f"n{rec.index - base}"
        if id(rec) in sums or nid in norms:
            norm = norms.get(nid, float(np.sqrt(np.sum(np.square(sums.get(id(rec), 0.0))))))
            done.append((nid, norm))
    runs = [r for r in graph.runs if r.states] or graph.runs
    if not runs:
        raise InvalidValueError("animate_backward: nothing was recorded inside tapegrad.scope(t=...), so there are "
                                "no time steps to sweep back through")
    run = runs[-1]
    steps = sorted(run.steps, reverse=not run.reverse)
    frames: list[tuple[Any, dict[str, float]]] = []
    position = {nid: k for k, (nid, _) in enumerate(done)}
    for t in steps:                            # the sweep's position once every record of step t is done
        ids = [n.id for n in graph.nodes if n.kind == "op" and n.run == run.index and n.step == t and n.id in position]
        end = max((position[i] for i in ids), default=-1)
        upto = {nid: norm for nid, norm in done[:end + 1]}
        frames.append((t, dict(upto)))
    return graph, frames


def animate_backward(loss: "Tensor", path: Path | str, detail: str = "cells", max_steps: int | None = None,
                     seconds_per_frame: float = 0.8, png: bool = False, **draw_options: Any) -> tuple[str, list[str]]:
    """Draw the reverse sweep through time of `loss` (one frame per time step, last step first) and write
    `path` (an SVG that cycles through the frames, SMIL, no dependency) and the folder `<stem>_frames/`
    of the frames as `frame_00.svg`, `frame_01.svg`, ... (frame k: the sweep has done the last k+1 steps).
    Returns (the animated SVG's path, [the frames' paths]). The same program gives identical files.
    png: also write each frame as `frame_00.png`, ... (for slides that cannot play SVG).

    `loss` must have been recorded with its graph; backward must not have freed it (call this before
    `loss.backward()`, or after `backward(retain_graph=True)`). draw_options go to `draw` (weights, rankdir).
    """
    from .backends import write
    from .dot import draw

    path = Path(path)
    if path.suffix.lower() not in ("", ".svg"):
        raise InvalidValueError(f"animate_backward: writes an animated SVG, got {path.name!r}")
    path = path.with_suffix(".svg")
    graph, frames = backward_frames(loss)
    every = [norm for _, norms in frames for norm in norms.values()]
    scale = LogScale(every or [1.0])
    scale.note = "white: not reached by the sweep yet"  # type: ignore[attr-defined]  # an extra; draw reads it by getattr
    folder = path.with_name(path.stem + "_frames")
    folder.mkdir(parents=True, exist_ok=True)
    for old in list(folder.glob("frame_*.svg")) + list(folder.glob("frame_*.png")):
        old.unlink()
    written: list[Path] = []
    for k, (t, norms) in enumerate(frames):
        for node in graph.nodes:
            node.grad = norms.get(node.id) if node.kind == "op" else None
        g = draw(graph, detail=detail, max_steps=max_steps, show_grads=True, grad_scale=scale, **draw_options)
        g.attr(label=f"backward: the sweep has reached t = {t}", labelloc="t", fontsize="20")
        written.append(write(g.source, folder / f"frame_{k:02d}.svg", "svg"))
        if png:
            write(g.source, folder / f"frame_{k:02d}.png", "png")
    path.write_text(_animated([p.read_text(encoding="utf-8") for p in written], seconds_per_frame), encoding="utf-8")
    return str(path), [str(p) for p in written]


def _animated(frames: Sequence[str], seconds: float) -> str:
    """One SVG showing each frame in turn (SMIL `animate` of each frame's visibility, discrete)."""
    n = len(frames)
    sizes = [re.search(r'<svg[^>]*\bwidth="([\d.]+)pt"[^>]*\bheight="([\d.]+)pt"', f, re.S) for f in frames]
    # every frame is Graphviz SVG, which has width and height in pt, hence the ignores
    width = max(float(m.group(1)) for m in sizes)  # type: ignore[union-attr]
    height = max(float(m.group(2)) for m in sizes)  # type: ignore[union-attr]
    key_times = ";".join(f"{i / n:.4f}" for i in range(n))
    parts = []
    for i, frame in enumerate(frames):
        body = frame[frame.index("<svg"):]
        body = re.sub(r'\bid="', f'id="f{i}_', body)
        body = re.sub(r'url\(#', f'url(#f{i}_', body)
        body = re.sub(r'href="#', f'href="#f{i}_', body)
        values = ";".join("visible" if j == i else "hidden" for j in range(n))
        parts.append(f'<g visibility="{"visible" if i == 0 else "hidden"}">'
                     f'<animate attributeName="visibility" values="{values}" keyTimes="{key_times}" '
                     f'dur="{n * seconds:g}s" calcMode="discrete" repeatCount="indefinite"/>\n{body}</g>')
    return (f'<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'width="{width:g}pt" height="{height:g}pt" viewBox="0 0 {width:g} {height:g}">\n'
            + "\n".join(parts) + "\n</svg>\n")
