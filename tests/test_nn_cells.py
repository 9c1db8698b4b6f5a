"""Recurrent cells: the textbook equations, the lecture's parameter counts, PyTorch's layout, gradients, errors."""
import numpy as np
import pytest

import tapegrad as tg
import tapegrad.nn as nn

F64 = np.float64
B, D, H = 3, 4, 5


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def rand(*shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


# -- the lecture's parameter-count table ---------------------------------------------------------------------
class SequenceRegressor(nn.Module):
    """The lecture's networks: recurrent layer(s) on a 1-d input, then one linear output node per step."""

    def __init__(self, cells):
        super().__init__()
        self.rnn = nn.StackedRNN(cells)
        self.out = nn.Linear(cells[-1].hidden_size, 1)

    def forward(self, xs):
        hs, _ = self.rnn(xs)
        return self.out(hs)


@pytest.mark.parametrize("cells, count", [
    ([nn.RNNCell(1, 5)], 41),
    ([nn.LSTMCell(1, 5)], 146),
    ([nn.RNNCell(1, 10)], 131),
    ([nn.LSTMCell(1, 5), nn.LSTMCell(5, 3)], 252),
    ([nn.GRUCell(1, 5), nn.GRUCell(5, 3)], 190),
    ([nn.LSTMCell(1, 25)], 2726),
], ids=["RNN 5", "LSTM 5", "RNN 10", "LSTM 5-3", "GRU 5-3", "LSTM 25"])
def test_parameter_counts_match_the_lecture_table(cells, count):
    model = SequenceRegressor(cells)
    assert model.num_parameters() == count
    assert model(np.zeros((2, 7, 1), np.float32)).shape == (2, 7, 1)


def test_parameter_names_and_shapes():
    shapes = lambda cell: {n: p.shape for n, p in cell.named_parameters()}   # noqa: E731
    assert shapes(nn.RNNCell(D, H)) == {"W_x": (D, H), "W_h": (H, H), "b": (H,)}
    assert shapes(nn.LSTMCell(D, H)) == {"W_x": (D, 4 * H), "W_h": (H, 4 * H), "b": (4 * H,)}
    assert shapes(nn.GRUCell(D, H)) == {"W_x": (D, 3 * H), "W_h": (H, 3 * H), "b": (3 * H,)}
    assert shapes(nn.GRUCell(D, H, reset_after=True)) == {"W_x": (D, 3 * H), "W_h": (H, 3 * H), "b": (3 * H,),
                                                          "b_hn": (H,)}


def test_initialisation():
    cell = nn.LSTMCell(D, H, rng=0)
    b = cell.b.data.reshape(4, H)
    np.testing.assert_array_equal(b, [[0] * H, [1] * H, [0] * H, [0] * H])   # i f g o: forget bias 1.0
    assert np.all(nn.LSTMCell(D, H, forget_bias=0.0).b.data == 0)
    for k in range(4):                                                        # W_h orthogonal per gate block
        block = cell.W_h.data[:, k * H:(k + 1) * H]
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
    assert np.abs(cell.W_x.data).max() <= np.sqrt(6 / (D + H))                 # Glorot per block
    np.testing.assert_array_equal(nn.GRUCell(D, H, rng=3).W_x.data, nn.GRUCell(D, H, rng=3).W_x.data)


# -- the equations -------------------------------------------------------------------------------------------
def textbook_step(cell, x, state):
    """Each cell's equations in numpy, per gate, from the lecture's formulas (fused blocks unpacked)."""
    Wx, Wh, b = cell.W_x.data, cell.W_h.data, cell.b.data
    blocks = lambda a: [a[..., k * H:(k + 1) * H] for k in range(cell.gates)]  # noqa: E731
    if isinstance(cell, nn.RNNCell):
        f = np.tanh if cell.nonlinearity == "tanh" else (lambda a: np.maximum(a, 0))
        h = f(x @ Wx + state @ Wh + b)
        return h, h
    if isinstance(cell, nn.LSTMCell):
        h, c = state
        (Ui, Uf, Ug, Uo), (Wi, Wf, Wg, Wo), (bi, bf, bg, bo) = blocks(Wx), blocks(Wh), blocks(b)
        i, f, o = sigmoid(x @ Ui + h @ Wi + bi), sigmoid(x @ Uf + h @ Wf + bf), sigmoid(x @ Uo + h @ Wo + bo)
        c_tilde = np.tanh(x @ Ug + h @ Wg + bg)
        c = c * f + c_tilde * i
        h = np.tanh(c) * o
        return h, (h, c)
    (Ur, Uz, Uh), (Wr, Wz, Wh_), (br, bz, bh) = blocks(Wx), blocks(Wh), blocks(b)
    h = state
    z = sigmoid(x @ Uz + h @ Wz + bz)
    r = sigmoid(x @ Ur + h @ Wr + br)
    if cell.reset_after:
        h_tilde = np.tanh(x @ Uh + bh + r * (h @ Wh_ + cell.b_hn.data))
    else:
        h_tilde = np.tanh(x @ Uh + (h * r) @ Wh_ + bh)
    h = (1 - z) * h_tilde + z * h
    return h, h


CELLS = {
    "rnn-tanh": lambda **kw: nn.RNNCell(D, H, **kw),
    "rnn-relu": lambda **kw: nn.RNNCell(D, H, nonlinearity="relu", **kw),
    "lstm": lambda **kw: nn.LSTMCell(D, H, **kw),
    "gru": lambda **kw: nn.GRUCell(D, H, **kw),
    "gru-reset-after": lambda **kw: nn.GRUCell(D, H, reset_after=True, **kw),
}


def randomize(cell, seed=1):
    """Non-trivial biases (the init has zeros) so that every term of the equations matters."""
    for k, p in enumerate(cell.parameters()):
        p.data[...] = rand(*p.shape, seed=seed + k, scale=0.5)
    return cell


def random_state(cell, dtype=F64, seed=5):
    make = lambda s: tg.tensor(rand(B, H, seed=s, scale=0.8).astype(dtype), requires_grad=dtype == F64)  # noqa
    return (make(seed), make(seed + 1)) if isinstance(cell, nn.LSTMCell) else make(seed)


def data(state):
    return tuple(s.data for s in state) if isinstance(state, tuple) else state.data


@pytest.mark.parametrize("kind", CELLS)
def test_cell_step_is_the_textbook_equations(kind):
    cell = randomize(CELLS[kind](dtype=F64, rng=0))
    x = rand(B, D, seed=9)
    state = random_state(cell)
    out, new = cell(tg.tensor(x), state)
    want_out, want_state = textbook_step(cell, x, data(state))
    np.testing.assert_allclose(out.data, want_out, rtol=1e-12, atol=1e-12)
    for got, want in zip(np.atleast_1d(data(new)), np.atleast_1d(want_state)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert out is (new[0] if isinstance(new, tuple) else new)


@pytest.mark.parametrize("kind", CELLS)
def test_none_state_is_zeros(kind):
    cell = randomize(CELLS[kind](dtype=F64, rng=0))
    x = tg.tensor(rand(B, D, seed=2))
    zeros = tg.tensor(np.zeros((B, H)))
    explicit = (zeros, zeros) if isinstance(cell, nn.LSTMCell) else zeros
    np.testing.assert_array_equal(cell(x)[0].data, cell(x, explicit)[0].data)


@pytest.mark.parametrize("kind", CELLS)
def test_cell_gradients_match_finite_differences(kind):
    cell = randomize(CELLS[kind](dtype=F64, rng=0))
    x = tg.tensor(rand(B, D, seed=9), requires_grad=True)
    state = random_state(cell)
    states = list(state) if isinstance(state, tuple) else [state]

    def two_steps(*_):                  # two steps, so the gradient also flows through the new state
        out, s = cell(x, state)
        out2, s2 = cell(x * 0.5, s)
        return tg.concat([out, out2] + (list(s2) if isinstance(s2, tuple) else [s2]), axis=-1)
    tg.gradcheck(two_steps, cell.parameters() + [x] + states)


@pytest.mark.parametrize("kind", CELLS)
def test_cell_split_forward_is_projection_then_recurrence(kind):
    cell = randomize(CELLS[kind](dtype=F64, rng=0))
    x = tg.tensor(rand(B, D, seed=3))
    state = random_state(cell)
    xp = cell.input_projection(x)
    assert xp.shape == (B, cell.gates * H)
    np.testing.assert_array_equal(cell.recurrence(xp, state)[0].data, cell(x, state)[0].data)
    seq = rand(B, 6, D, seed=4)
    np.testing.assert_allclose(cell.input_projection(seq).data[:, 2], cell.input_projection(seq[:, 2]).data,
                               rtol=1e-12)


# -- PyTorch layout --------------------------------------------------------------------------------------------
def torch_rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity):
    a = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    return np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0)


def torch_lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    i, f, g, o = np.split(gates, 4, axis=1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def torch_gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    i_r, i_z, i_n = np.split(x @ w_ih.T + b_ih, 3, axis=1)
    h_r, h_z, h_n = np.split(h @ w_hh.T + b_hh, 3, axis=1)
    r, z = sigmoid(i_r + h_r), sigmoid(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def torch_arrays(gates, seed=0):
    """Hand-built weights in torch.nn.*Cell layout: weight_ih (G*H, D), weight_hh (G*H, H), biases (G*H,)."""
    return (rand(gates * H, D, seed=seed), rand(gates * H, H, seed=seed + 1),
            rand(gates * H, seed=seed + 2), rand(gates * H, seed=seed + 3))


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_load_torch_rnn_cell(nonlinearity):
    w = torch_arrays(1)
    cell = nn.RNNCell(D, H, nonlinearity=nonlinearity, dtype=F64)
    cell.load_torch_weights(*w)
    x, h = rand(B, D, seed=7), rand(B, H, seed=8)
    np.testing.assert_allclose(cell(tg.tensor(x), tg.tensor(h))[0].data, torch_rnn_cell(x, h, *w, nonlinearity),
                               rtol=1e-12)


def test_load_torch_lstm_cell():
    w = torch_arrays(4)
    cell = nn.LSTMCell(D, H, dtype=F64)
    cell.load_torch_weights(*w)
    x, h, c = rand(B, D, seed=7), rand(B, H, seed=8), rand(B, H, seed=9)
    out, (h2, c2) = cell(tg.tensor(x), (tg.tensor(h), tg.tensor(c)))
    want_h, want_c = torch_lstm_cell(x, h, c, *w)
    np.testing.assert_allclose(h2.data, want_h, rtol=1e-12)
    np.testing.assert_allclose(c2.data, want_c, rtol=1e-12)


def test_load_torch_gru_cell():
    w = torch_arrays(3)
    cell = nn.GRUCell(D, H, reset_after=True, dtype=F64)
    cell.load_torch_weights(*w)
    x, h = rand(B, D, seed=7), rand(B, H, seed=8)
    for _ in range(3):                  # a few steps, to compare the recurrence too
        got = cell(tg.tensor(x), tg.tensor(h))[0].data
        h, want = got, torch_gru_cell(x, h, *w)
        np.testing.assert_allclose(got, want, rtol=1e-12)
    with pytest.raises(ValueError, match="reset_after=True"):
        nn.GRUCell(D, H).load_torch_weights(*w)


def test_load_torch_weights_checks_every_shape():
    cell = nn.LSTMCell(D, H)
    w_ih, w_hh, b_ih, b_hh = torch_arrays(4)
    msg = (r"^LSTMCell\(4, 5\).load_torch_weights: weight_ih is \(4, 20\), expected \(20, 4\); "
           r"bias_hh is \(19,\), expected \(20,\)$")
    with pytest.raises(tg.ShapeError, match=msg):
        cell.load_torch_weights(w_ih.T, w_hh, b_ih, b_hh[:-1])
    cell.load_torch_weights(w_ih, w_hh)                    # biases default to zeros
    assert np.all(cell.b.data == 0)


# -- errors ----------------------------------------------------------------------------------------------------
class Encoder(nn.Module):
    def __init__(self):
        super().__init__(name="encoder")
        self.lstm = nn.LSTMCell(D, H)

    def forward(self, xs, state=None):
        return nn.unroll(self.lstm, xs, state)


def test_wrong_input_size_names_module_shapes_and_step():
    cell = nn.LSTMCell(D, H)
    with pytest.raises(tg.ShapeError, match=r"^LSTMCell: input x has shape \(3, 7\), expected \(batch, 4\)"):
        cell(np.zeros((B, 7), np.float32))
    with pytest.raises(tg.ShapeError, match=r"^LSTMCell inside `encoder.lstm`: input x has shape \(3, 6, 7\)"):
        Encoder()(np.zeros((B, 6, 7), np.float32))
    x7 = np.zeros((B, 7), np.float32)
    with pytest.raises(tg.ShapeError, match=r"^LSTMCell inside `encoder.lstm` at t = 0: input x has shape \(3, 7\)"):
        Encoder()([x7, x7])
    with pytest.raises(tg.ShapeError, match=r"one step takes x of shape \(batch, 4\), got \(3, 6, 4\); run a sequence"):
        cell(np.zeros((B, 6, D), np.float32))


def test_wrong_state_names_module_shapes_and_step():
    lstm, gru = nn.LSTMCell(D, H, name="lstm"), nn.GRUCell(D, H)
    x = np.zeros((B, D), np.float32)
    h = tg.tensor(np.zeros((B, H), np.float32))
    with pytest.raises(tg.ShapeError, match=r"^LSTMCell inside `lstm`: state must be \(h, c\), got Tensor \(3, 5\)"):
        lstm(x, h)
    with pytest.raises(tg.ShapeError, match=r"state c has shape \(3, 4\), expected \(batch, hidden_size\) = \(3, 5\)"):
        lstm(x, (h, tg.tensor(np.zeros((B, 4), np.float32))))
    with pytest.raises(tg.ShapeError, match=r"^LSTMCell inside `encoder.lstm` at t = 0: state h has shape \(2, 5\)"):
        Encoder()([x, x], (h[:2], h[:2]))
    with pytest.raises(tg.ShapeError, match=r"^GRUCell: state must be h, got a tuple of 2"):
        gru(x, (h, h))
    with pytest.raises(tg.DTypeError, match="float64"):      # float64 state into float32 weights
        gru(x, tg.tensor(np.zeros((B, H))))
