"""‖∂L/∂h_t‖ per time step: how much gradient reaches each step's state (vanishing or preserved)."""
from typing import Any

from ..errors import InvalidValueError
from .graph import extract


class GradientFlow:
    """The norms of the gradients of each state value at each step.

    steps:  the time steps, in order
    series: name -> list of norms aligned with `steps` (None where a step has no such value), one
            series per state value ("h", "c"; prefixed by the module for several sequences)
    """

    def __init__(self, steps: list[int], series: dict[str, list[float | None]]) -> None:
        self.steps, self.series = steps, series

    def __repr__(self) -> str:
        names = list(self.series)
        rows = [["t"] + [f"‖∂L/∂{n}‖" for n in names]]
        for i, t in enumerate(self.steps):
            rows.append([str(t)] + ["" if self.series[n][i] is None else f"{self.series[n][i]:.3e}" for n in names])
        widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
        return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)

    def plot(self, ax: Any = None, label: str | None = None) -> Any:
        """Draw each series against t on a log scale (matplotlib); returns the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            ax = plt.subplots(figsize=(6, 3.5))[1]
        for name, norms in self.series.items():
            points = [(t, n) for t, n in zip(self.steps, norms) if n is not None and n > 0]
            ax.semilogy([t for t, _ in points], [n for _, n in points], marker=".",
                        label=f"{label} {name}" if label else name)
        ax.set_xlabel("time step t")
        ax.set_ylabel("‖∂L/∂state_t‖")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        return ax


def gradient_flow(target: Any, plot: bool = True, ax: Any = None, label: str | None = None) -> GradientFlow:
    """The per-step table of ‖∂L/∂h_t‖ (and ‖∂L/∂c_t‖ ...) for a loss after backward; plotted too
    when matplotlib is installed and `plot` is true (on `ax`, series labelled with `label`).

    The state values are the ones passed from step to step; their gradients must have been kept:
    run the forward inside `with tapegrad.Tape(retain_grads=True) as tape:` and keep `tape` alive.
    """
    graph = extract(target)
    at = {(n.run, n.step, n.key): n for n in graph.nodes if n.placed}
    runs = [run for run in graph.runs if run.states]
    if not runs:
        raise InvalidValueError("gradient_flow: no recurrent state found (no value passes from one time step to the "
                         "next inside tapegrad.scope(t=...))")
    steps = sorted({t for run in runs for t in run.steps})
    series: dict[str, list[float | None]] = {}
    for run in runs:
        for key, name in run.states.items():
            nodes = [at.get((run.index, t, key)) for t in steps]
            series[f"{run.label} {name}" if len(runs) > 1 else name] = [n.grad if n else None for n in nodes]
    if all(g is None for norms in series.values() for g in norms):
        raise InvalidValueError("gradient_flow: the state's gradients were not kept; run the forward inside "
                         "`with tapegrad.Tape(retain_grads=True) as tape:`, keep `tape`, and call backward")
    flow = GradientFlow(steps, series)
    if plot and _has_matplotlib():
        flow.plot(ax, label)
    return flow


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
