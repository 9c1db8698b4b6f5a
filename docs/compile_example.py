"""The compiled program of the running example of docs/tape.md (a two-step Elman RNN), as printed there.

    python docs/compile_example.py
"""
import numpy as np

import tapegrad as tg

rng = np.random.default_rng(0)
W_xh = tg.tensor(rng.standard_normal((2, 3)), requires_grad=True, name="W_xh")
W_hh = tg.tensor(rng.standard_normal((3, 3)) * 0.5, requires_grad=True, name="W_hh")
h0 = tg.tensor(rng.standard_normal((1, 3)) * 0.5, name="h0")


@tg.compile
def train_step(xs):
    h = h0
    for t in range(2):
        with tg.scope("rnn", t=t):
            h = tg.tanh(xs[t] @ W_xh + h @ W_hh)
    loss = (h * h).sum()
    loss.backward()
    return loss


for _ in range(3):                         # two tracing calls, then the replay
    W_xh.grad = W_hh.grad = None
    xs = rng.standard_normal((2, 1, 2))
    loss = train_step(xs)
print(train_step.source)

W_xh.grad = W_hh.grad = None               # the replay's numbers are eager's
replayed = train_step(xs).item(), W_hh.grad.copy()
W_xh.grad = W_hh.grad = None
eager = train_step.fn(tg.tensor(xs)).item(), W_hh.grad.copy()
print("replay == eager:", replayed[0] == eager[0] and np.array_equal(replayed[1], eager[1]))

# exact=False: a per-gate LSTM written from ops (as docs/cells.md writes cells), two steps; the forward
# half of its program shows the products fused and hoisted and the gates' elementwise work fused.
D, H = 2, 3
gates = {k: (tg.tensor(rng.standard_normal((D, H)), requires_grad=True, name=f"U_{k}"),
             tg.tensor(rng.standard_normal((H, H)), requires_grad=True, name=f"W_{k}"),
             tg.tensor(np.zeros(H), requires_grad=True, name=f"b_{k}")) for k in "ifog"}


@tg.compile(exact=False)
def lstm_step(xs):
    h = c = tg.tensor(np.zeros((1, H)))
    for t in range(2):
        with tg.scope("lstm", t=t):
            a = {k: xs[t] @ U + h @ W + b for k, (U, W, b) in gates.items()}
            c = tg.sigmoid(a["f"]) * c + tg.sigmoid(a["i"]) * tg.tanh(a["g"])
            h = tg.sigmoid(a["o"]) * tg.tanh(c)
    loss = (h * h).sum()
    loss.backward()
    return loss


for _ in range(3):
    lstm_step(rng.standard_normal((2, 1, D)))
print(lstm_step.source.split("    # backward")[0] + "    # backward: ...")
