"""Pictures of backpropagation through time, drawn from the tape.

    tapegrad.viz.draw(loss)                            # unrolled, one cluster per time step
    tapegrad.viz.draw(loss, detail="cells", max_steps=4)
    tapegrad.viz.draw(loss, view="rolled")             # the cell once, state as a self-edge ×T
    tapegrad.viz.render(loss, "bptt.svg", show_grads=True)
    tapegrad.viz.gradient_flow(loss)                   # ‖∂L/∂h_t‖ per time step
    tapegrad.viz.draw(loss, view="unfold")             # rolled cell = unrolled steps, one figure
    tapegrad.viz.animate_backward(loss, "sweep.svg")   # the reverse sweep, one frame per time step

Needs the `graphviz` Python package (imported when drawing); files need the system Graphviz `dot`
or the pip package `graphviz-pure`.
"""
from .animate import animate_backward
from .backends import render
from .dot import draw
from .flow import GradientFlow, gradient_flow

__all__ = ["draw", "render", "gradient_flow", "GradientFlow", "animate_backward"]
