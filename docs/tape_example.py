"""The running example of docs/tape.md: a two-step Elman RNN, its tape, and BPTT read off it.

    python docs/tape_example.py
"""
import numpy as np

import tapegrad as tg

rng = np.random.default_rng(0)
W_xh = tg.tensor(rng.standard_normal((2, 3)), requires_grad=True, name="W_xh")
W_hh = tg.tensor(rng.standard_normal((3, 3)) * 0.5, requires_grad=True, name="W_hh")
xs = tg.tensor(rng.standard_normal((2, 1, 2)), name="xs")     # T=2 steps of a (1, 2) input

with tg.Tape() as tape:
    h = tg.tensor(rng.standard_normal((1, 3)) * 0.5, name="h0")
    for t in range(2):
        with tg.scope("rnn", t=t):
            h = tg.tanh(xs[t] @ W_xh + h @ W_hh)
    loss = (h * h).sum()
print(tape)

per_step = {}
tg.grad(loss, [W_hh], retain_graph=True,
        on_edge=lambda rec, i, parent, g: per_step.update({rec.scope.step: g}) if parent is W_hh else None)
loss.backward()
for t, g in sorted(per_step.items()):
    print(f"contribution of step {t} to dL/dW_hh: {np.round(g, 4).tolist()}")
print(f"W_hh.grad (their sum):          {np.round(W_hh.grad, 4).tolist()}")
