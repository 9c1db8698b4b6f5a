"""Every kind of bad input, and the message tapegrad gives for it (the output is docs/errors.md's).

    python docs/errors_examples.py
"""
import os
import tempfile

import numpy as np

import tapegrad as tg
from tapegrad import nn


def show(title, action):
    try:
        action()
    except tg.TapegradError as e:
        kind = type(e).__name__
        bases = "/".join(b.__name__ for b in type(e).__mro__[1:] if b.__module__ == "builtins" and b is not object
                         and b is not Exception and b is not BaseException)
        print(f"## {title}\n{kind} ({bases}): {e}\n")
    else:
        raise AssertionError(f"{title}: no error")


def lstm_matmul():
    h = tg.tensor(np.ones((32, 10), np.float32))
    W = tg.tensor(np.ones((20, 40), np.float32), requires_grad=True)
    with tg.scope("lstm"), tg.scope(t=3):
        return h @ W


def nan_in_forward():
    x = tg.tensor(np.array([1.0, -1.0]), requires_grad=True)
    with tg.detect_anomaly(), tg.scope("cell", t=2), np.errstate(invalid="ignore"):
        tg.log(x)


def stale_parameter():
    W = tg.tensor(np.eye(2), requires_grad=True, name="W_hh")
    opt = tg.optim.SGD([W], lr=0.1)
    loss = (W @ W).sum()
    W.grad = np.ones((2, 2))
    opt.step()                       # parameters updated before backward
    loss.backward()


def twice():
    W = tg.tensor(np.eye(2), requires_grad=True)
    loss = (W @ W).sum()
    loss.backward()
    loss.backward()


def corrupted_checkpoint():
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "model.npz")
    tg.save({"W": np.ones(3)}, path)
    with open(path, "r+b") as f:
        f.truncate(40)
    tg.load(path)


rng = np.random.default_rng(0)
cell = nn.LSTMCell(4, 8, rng=0, name="lstm")
model = nn.Linear(8, 2, rng=0)

show("Shape mismatch in an op, inside a module at a time step", lstm_matmul)
show("Wrong input size to a cell inside unroll",
     lambda: nn.unroll(cell, tg.tensor(np.ones((2, 5, 3), np.float32))))
show("Wrong state passed to a cell", lambda: cell(tg.tensor(np.ones((2, 4), np.float32)),
                                               tg.tensor(np.ones((2, 8), np.float32))))
show("Wrong input size to Linear", lambda: model(tg.tensor(np.ones((3, 5), np.float32))))
show("An integer tensor asked to require grad", lambda: tg.tensor([1, 2, 3], requires_grad=True))
show("float32 mixed with float64", lambda: tg.tensor([1.0]) + tg.tensor(np.ones(1)))
show("cross_entropy with an out-of-range target",
     lambda: tg.cross_entropy(tg.tensor(np.zeros((2, 3))), np.array([1, 3])))
show("cross_entropy with non-integer targets",
     lambda: tg.cross_entropy(tg.tensor(np.zeros((2, 3))), np.array([1.0, 2.0])))
show("lengths longer than the sequence",
     lambda: nn.unroll(cell, tg.tensor(np.ones((2, 5, 4), np.float32)), lengths=[5, 6]))
show("a zero length", lambda: nn.unroll(cell, tg.tensor(np.ones((2, 5, 4), np.float32)), lengths=[5, 0]))
show("Non-scalar backward without a gradient", lambda: (tg.tensor(np.ones(3), requires_grad=True) * 2).backward())
show("Backward twice through a freed graph", twice)
show("Loading a state dict with missing, extra and mis-shaped entries",
     lambda: model.load_state_dict({"W": np.ones((3, 2)), "bias": np.ones(2)}))
show("An optimizer given something that is not a parameter", lambda: tg.optim.Adam([np.ones(3)]))
show("An optimizer given no parameters", lambda: tg.optim.SGD([], lr=0.1))
show("A saved parameter changed in place before backward", stale_parameter)
show("Anomaly mode: the first NaN, with its op, time step and source line", nan_in_forward)
show("A truncated checkpoint file", corrupted_checkpoint)
