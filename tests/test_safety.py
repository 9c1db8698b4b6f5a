"""No silent wrong gradients: saved arrays cannot change behind the tape's back."""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad.tape import mark_written


def test_op_outputs_are_read_only():
    x = tg.tensor(np.ones(3), requires_grad=True)
    h = tg.tanh(x)
    with pytest.raises(ValueError, match="read-only"):
        h.data[0] = 5.0


def test_in_place_update_of_saved_parameter_is_refused_at_backward():
    W = tg.tensor(np.eye(2), requires_grad=True, name="W_hh")
    with tg.scope("rnn", t=4):
        loss = (tg.tensor(np.ones((1, 2))) @ W @ W).sum()
    W.data -= 0.1                      # an optimizer step before backward
    mark_written(W)
    with pytest.raises(tg.GraphError, match=r"W_hh.*modified in place") as info:
        loss.backward()
    assert "matmul" in str(info.value) and "t = 4" in str(info.value)


def test_optimizer_steps_after_backward_are_fine():
    W = tg.tensor(np.eye(2), requires_grad=True)
    opt = tg.optim.SGD([W], lr=0.1)
    for _ in range(3):
        loss = (W @ W).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert np.isfinite(W.data).all()


def test_requires_grad_leaf_from_read_only_array_is_writable():
    h = tg.tanh(tg.tensor(np.ones(2), requires_grad=True))
    p = tg.tensor(h.data, requires_grad=True)
    p.data -= 1.0
    np.testing.assert_allclose(p.data, np.tanh(1.0) - 1.0)


def test_optimizer_step_between_forward_and_backward_is_refused():
    W = tg.tensor(np.eye(2), requires_grad=True, name="W")
    opt = tg.optim.SGD([W], lr=0.1)
    loss = (W @ W).sum()
    W.grad = np.ones((2, 2))
    opt.step()
    with pytest.raises(tg.GraphError, match="modified in place"):
        loss.backward()
