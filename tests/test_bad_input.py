"""The bad-input table: each case raises the right tapegrad exception, naming the op, shapes and scope."""
import re

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import nn


def f32(*shape):
    return tg.tensor(np.ones(shape, np.float32))


def matmul_in_lstm_step():
    with tg.scope("lstm"), tg.scope(t=3):
        f32(32, 10) @ tg.tensor(np.ones((20, 40), np.float32), requires_grad=True)


def backward_twice():
    W = tg.tensor(np.eye(2), requires_grad=True)
    loss = (W @ W).sum()
    loss.backward()
    loss.backward()


def stale_parameter():
    W = tg.tensor(np.eye(2), requires_grad=True, name="W_hh")
    opt = tg.optim.SGD([W], lr=0.1)
    loss = (W @ W).sum()
    W.grad = np.ones((2, 2))
    opt.step()
    loss.backward()


CELL = nn.LSTMCell(4, 8, rng=0, name="lstm")
LINEAR = nn.Linear(8, 2, rng=0)

CASES = [
    ("matmul shapes, module and step", matmul_in_lstm_step, tg.ShapeError,
     [r"matmul", r"\(32, 10\)", r"\(20, 40\)", r"`lstm`", r"t = 3"]),
    ("add shapes", lambda: f32(2, 3) + f32(4, 3), tg.ShapeError, [r"add", r"\(2, 3\)", r"\(4, 3\)"]),
    ("concat shapes", lambda: tg.concat([f32(2, 3), f32(3, 2)], axis=0), tg.ShapeError, [r"concat", r"\(2, 3\)"]),
    ("reshape size", lambda: f32(2, 3).reshape(4, 2), tg.ShapeError, [r"reshape", r"\(2, 3\)"]),
    ("index out of range", lambda: f32(2, 3)[5], tg.IndexOutOfRange, [r"getitem", r"\(2, 3\)"]),
    ("cell input size in unroll", lambda: nn.unroll(CELL, f32(2, 5, 3)), tg.ShapeError,
     [r"LSTMCell", r"`lstm`", r"\(2, 5, 3\)", r"4"]),
    ("cell state kind", lambda: CELL(f32(2, 4), f32(2, 8)), tg.ShapeError, [r"LSTMCell", r"\(h, c\)", r"\(2, 8\)"]),
    ("cell state shape", lambda: CELL(f32(2, 4), (f32(2, 5), f32(2, 8))), tg.ShapeError,
     [r"LSTMCell", r"\(2, 5\)", r"8"]),
    ("Linear input size", lambda: LINEAR(f32(3, 5)), tg.ShapeError, [r"Linear", r"\(3, 5\)", r"8"]),
    ("integer tensor requiring grad", lambda: tg.tensor([1, 2, 3], requires_grad=True), tg.DTypeError,
     [r"int64", r"\(3,\)"]),
    ("boolean parameter", lambda: nn.Parameter(np.array([True, False])), tg.DTypeError, [r"bool"]),
    ("float32 with float64", lambda: f32(2) * tg.tensor(np.ones(2)), tg.DTypeError,
     [r"mul", r"float32", r"float64"]),
    ("cross_entropy target out of range", lambda: tg.cross_entropy(f32(2, 3), np.array([0, 3])), tg.ShapeError,
     [r"cross_entropy", r"\[0, 3\)", r"\(2, 3\)"]),
    ("cross_entropy float targets", lambda: tg.cross_entropy(f32(2, 3), np.array([0.0, 1.0])), tg.DTypeError,
     [r"cross_entropy", r"float64"]),
    ("cross_entropy target shape", lambda: tg.cross_entropy(f32(2, 3), np.array([0, 1, 2])), tg.ShapeError,
     [r"cross_entropy", r"\(2,\)", r"\(3,\)"]),
    ("lengths past T", lambda: nn.unroll(CELL, f32(2, 5, 4), lengths=[5, 6]), tg.InvalidValueError,
     [r"unroll", r"lengths", r"\[1, 5\]"]),
    ("zero length", lambda: nn.unroll(CELL, f32(2, 5, 4), lengths=[0, 5]), tg.InvalidValueError,
     [r"unroll", r"lengths"]),
    ("lengths shape", lambda: nn.unroll(CELL, f32(2, 5, 4), lengths=[5, 5, 5]), tg.ShapeError,
     [r"unroll", r"\(2,\)", r"\(3,\)"]),
    ("non-scalar backward", lambda: (tg.tensor(np.ones(3), requires_grad=True) * 2).backward(), tg.GraphError,
     [r"backward", r"\(3,\)"]),
    ("backward twice", backward_twice, tg.GraphError, [r"matmul", r"second time", r"retain_graph"]),
    ("parameter changed before backward", stale_parameter, tg.GraphError, [r"matmul", r"W_hh", r"in place"]),
    ("state dict mismatches, all listed", lambda: LINEAR.load_state_dict({"W": np.ones((3, 2)), "x": np.ones(1)}),
     tg.CheckpointError, [r"missing: b", r"unexpected: x", r"W is \(8, 2\).*\(3, 2\)"]),
    ("optimizer given an array", lambda: tg.optim.Adam([np.ones(3)]), tg.DTypeError,
     [r"Adam", r"params\[0\]", r"ndarray"]),
    ("optimizer given nothing", lambda: tg.optim.SGD([], lr=0.1), tg.ShapeError, [r"SGD", r"empty"]),
    ("optimizer given a frozen tensor", lambda: tg.optim.SGD([f32(2)], lr=0.1), tg.DTypeError,
     [r"SGD", r"params\[0\]", r"requires_grad"]),
    ("dropout probability", lambda: tg.dropout(f32(2), 1.5, np.random.default_rng()), tg.InvalidValueError,
     [r"dropout", r"1\.5"]),
    ("reduction name", lambda: tg.mse_loss(f32(2), f32(2), reduction="avg"), tg.InvalidValueError,
     [r"mse_loss", r"avg"]),
]


@pytest.mark.parametrize("name, action, error, patterns", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_a_precise_tapegrad_error(name, action, error, patterns):
    with pytest.raises(error) as info:
        action()
    assert isinstance(info.value, tg.TapegradError)
    for pattern in patterns:
        assert re.search(pattern, str(info.value)), f"{pattern!r} not in: {info.value}"
