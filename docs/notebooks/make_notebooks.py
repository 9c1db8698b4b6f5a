"""Write and execute the notebooks of docs/notebooks/ (outputs included, so that GitHub shows them).

    python docs/notebooks/make_notebooks.py            # needs nbformat, nbclient, ipykernel (the `test` extra)

Each notebook is built from the cells below and run in a real Jupyter kernel; tests/test_notebooks.py runs
them again the same way and checks that the picture cells produced SVG.
"""
import pathlib
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = pathlib.Path(__file__).resolve().parent
PICTURE = "picture"          # cell tag: the cell displays a tapegrad.viz picture (tests require image/svg+xml)

BPTT = [
    ("md", """# BPTT from the tape

An Elman RNN and an LSTM written from tapegrad ops, unrolled by a plain Python loop. Every op is a record
on the tape, labelled with the step's `scope(t=...)`; one reverse sweep over the records is
backpropagation through time. `tapegrad.viz` draws the records: the unrolled graph (one cluster per
step) and the rolled one (the cell once, the state as a self-edge ×T)."""),
    ("code", """import numpy as np
import tapegrad as tg
import tapegrad.viz

H, D, T = 3, 2, 4
rng = np.random.default_rng(0)

def param(name, *shape):
    return tg.tensor(rng.standard_normal(shape) * 0.5, requires_grad=True, name=name)

xs = [tg.tensor(rng.standard_normal((1, D)), name="x") for _ in range(T)]"""),
    ("md", "## Elman: $h_t = \\tanh(x_t W_{xh} + h_{t-1} W_{hh} + b)$, a loss per step"),
    ("code", """W_xh, W_hh, b = param("W_xh", D, H), param("W_hh", H, H), param("b", H)

def elman_loss():
    h, loss = tg.tensor(np.zeros((1, H)), name="h0"), 0
    for t, x in enumerate(xs):
        with tg.scope("rnn"), tg.scope(t=t):
            h = tg.tanh(x @ W_xh + h @ W_hh + b)
            loss = loss + (h * h).sum()
    return loss

with tg.Tape(retain_grads=True) as elman_tape:
    loss = elman_loss()
print(f"{len(elman_tape)} records, loss {loss.item():.4f}")"""),
    ("code", "tg.viz.draw(loss)                     # unrolled: one cluster per time step", PICTURE),
    ("code", "tg.viz.draw(loss, view=\"rolled\")      # the cell once; the state edge says ×T", PICTURE),
    ("md", """After `backward`, the gradient of each step's state is on the tape (`retain_grads=True`).
W_hh's gradient sums one contribution per step; `gradient_flow` plots ‖∂L/∂h_t‖ against t."""),
    ("code", """loss.backward()
flow = tg.viz.gradient_flow(loss)
flow"""),
    ("md", "## LSTM: gates from one product, split four ways"),
    ("code", """W_x, W_h, b4 = param("W_x", D, 4 * H), param("W_h", H, 4 * H), param("b", 4 * H)

def lstm_loss():
    h = c = tg.tensor(np.zeros((1, H)), name="zeros")
    for t, x in enumerate(xs):
        with tg.scope("lstm"), tg.scope(t=t):
            i, f, g, o = tg.split(x @ W_x + h @ W_h + b4, 4, axis=-1)
            c = tg.sigmoid(f) * c + tg.sigmoid(i) * tg.tanh(g)
            h = tg.sigmoid(o) * tg.tanh(c)
    return (h * h).sum()

with tg.Tape(retain_grads=True) as lstm_tape:
    lstm = lstm_loss()
print(f"{len(lstm_tape)} records")"""),
    ("code", "tg.viz.draw(lstm, detail=\"cells\")    # one box per cell call and step", PICTURE),
    ("code", "tg.viz.draw(lstm, view=\"rolled\")", PICTURE),
    ("code", """lstm.backward()
tg.viz.gradient_flow(lstm)           # ‖∂L/∂h_t‖ and ‖∂L/∂c_t‖: the loss is at the last step only"""),
]

CHECK = [
    ("md", """# Checking a hand derivation

A hand-written Elman BPTT (the min-char-rnn `lossFun` layout: column vectors, `dhnext`) with one
planted slip. `tapegrad.check.compare` puts it beside finite differences and the tape, parameter by
parameter and step by step, and names the time step where the derivation first goes wrong (in
backward order: BPTT runs from the last step back)."""),
    ("code", """import numpy as np
import tapegrad as tg
from tapegrad import check

T, D, H = 5, 2, 4
rng = np.random.default_rng(1)
P = {"Wxh": rng.normal(0, 0.5, (H, D)), "Whh": rng.normal(0, 0.5, (H, H)), "bh": rng.normal(0, 0.5, (H, 1))}
xs, hprev = rng.normal(size=(T, D, 1)), np.zeros((H, 1))
params = {k: tg.tensor(v, requires_grad=True, name=k) for k, v in P.items()}

def loss_fn():
    # L = sum_t sum(h_t^2) / 2, step t in scope(t=t), its state named h
    h, loss = tg.tensor(hprev), 0.0
    for t in range(T):
        with tg.scope(t=t):
            h = tg.tanh(params["Wxh"] @ xs[t] + params["Whh"] @ h + params["bh"])
            h.name = "h"
            loss = loss + (h * h).sum() * 0.5
    return loss"""),
    ("md", "The derivation, by hand. The slip: at step `SLIP` the tanh derivative uses $h_{t-1}$ instead of $h_t$."),
    ("code", """SLIP = 3

def hand_bptt(slip=SLIP):
    p = {k: v.data for k, v in params.items()}
    hs = {-1: hprev}
    for t in range(T):
        hs[t] = np.tanh(p["Wxh"] @ xs[t] + p["Whh"] @ hs[t - 1] + p["bh"])
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    steps = {f"{k}@steps": [None] * T for k in p}
    steps["h@steps"] = [None] * T
    dhnext = np.zeros_like(hprev)
    for t in reversed(range(T)):
        dh = hs[t] + dhnext                              # dL/dh_t: its own loss and the later steps
        steps["h@steps"][t] = dh
        h_for_derivative = hs[t - 1] if t == slip else hs[t]     # the slip
        draw = (1 - h_for_derivative ** 2) * dh
        contrib = {"Wxh": draw @ xs[t].T, "Whh": draw @ hs[t - 1].T, "bh": draw}
        for k, v in contrib.items():
            grads[k] += v
            steps[f"{k}@steps"][t] = v
        dhnext = p["Whh"].T @ draw
    return {**grads, **steps}"""),
    ("code", """report = check.compare(loss_fn, params, hand=hand_bptt, per_step=True)
report"""),
    ("code", """print("first divergent time step:", report.first_divergent_step)
assert report.first_divergent_step == SLIP"""),
    ("md", "Fixed, every row agrees with finite differences and the tape:"),
    ("code", """fixed = check.compare(loss_fn, params, hand=lambda: hand_bptt(slip=None), per_step=True)
print("ok:", fixed.ok)
fixed"""),
]

NOTEBOOKS = {"bptt_from_the_tape.ipynb": BPTT, "checking_a_hand_derivation.ipynb": CHECK}


def build(cells):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, text, *tags in cells:
        cell = new_markdown_cell(text) if kind == "md" else new_code_cell(text)
        if tags:
            cell.metadata["tags"] = list(tags)
        nb.cells.append(cell)
    return nb


def execute(nb, timeout=120):
    """Run `nb` in a fresh python3 kernel (nbclient), in this folder; returns it with outputs."""
    from nbclient import NotebookClient
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    return nb


def main(argv=None):
    names = (argv if argv is not None else sys.argv[1:]) or list(NOTEBOOKS)
    for name in names:
        nb = execute(build(NOTEBOOKS[name]))
        for i, cell in enumerate(nb.cells):          # stable ids: regenerating changes only what ran differently
            cell.id = f"cell-{i}"
            cell.pop("execution", None)
            cell.metadata.pop("execution", None)
        nbformat.write(nb, HERE / name)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
