"""tapegrad.nn.Module / Parameter, the feed-forward layers and the initializers."""
import numpy as np
import pytest

import tapegrad as tg
import tapegrad.nn as nn
from tapegrad.errors import CheckpointError

F64 = np.float64


class Encoder(nn.Module):
    def __init__(self, dtype=None):
        super().__init__()
        self.embed = nn.Embedding(7, 3, dtype=dtype, rng=0)
        self.cell = nn.GRUCell(3, 4, dtype=dtype, rng=1)

    def forward(self, ids):
        outputs, h = nn.unroll(self.cell, self.embed(ids))
        return h


class Seq2One(nn.Module):
    def __init__(self, dtype=None):
        super().__init__(name="model")
        self.encoder = Encoder(dtype)
        self.heads = {"score": nn.Linear(4, 1, dtype=dtype, rng=2)}
        self.scale = nn.Parameter(np.ones(1, dtype or np.float32))

    def forward(self, ids):
        return self.heads["score"](self.encoder(ids)) * self.scale


# -- Parameter ---------------------------------------------------------------------------------------------
def test_parameter_is_a_named_leaf_that_requires_grad():
    p = nn.Parameter(np.zeros((2, 3)), name="W")
    assert isinstance(p, tg.Tensor) and p.requires_grad and p.is_leaf and p.name == "W"
    assert p.dtype == F64                                     # a float64 array stays float64
    assert nn.Parameter([1.0, 2.0]).dtype == np.float32       # Python floats take the default dtype
    with pytest.raises(tg.DTypeError, match="floating"):
        nn.Parameter(np.arange(3))


# -- naming and discovery ------------------------------------------------------------------------------------
def test_named_parameters_are_dotted_paths_in_assignment_order():
    names = [n for n, _ in Seq2One().named_parameters()]
    assert names == ["encoder.embed.W", "encoder.cell.W_x", "encoder.cell.W_h", "encoder.cell.b",
                     "heads.score.W", "heads.score.b", "scale"]


def test_parameters_know_their_names_whatever_the_construction_order():
    model = Seq2One()
    model.encoder.late = nn.Parameter(np.zeros(2))            # assigned after the encoder was attached
    for name, p in model.named_parameters():
        assert p.name == name
    assert model.encoder.late.name == "encoder.late"


def test_lists_of_modules_and_shared_parameters():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Linear(2, 2, rng=0), nn.Linear(2, 2, rng=1)]
            self.tied = self.layers[0].W                      # the same Parameter twice: listed once
    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["layers.0.W", "layers.0.b", "layers.1.W", "layers.1.b"]
    assert len(net.parameters()) == 4 and net.num_parameters() == 12
    assert net.modules() == [net, net.layers[0], net.layers[1]]


def test_forgetting_super_init_is_a_clear_error():
    class Bad(nn.Module):
        def __init__(self):
            self.W = nn.Parameter(np.zeros(2))
    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Bad()


def test_calls_label_records_with_the_module_path_and_step():
    model = Seq2One()
    with tg.Tape() as tape:
        model(np.array([[1, 2, 3], [4, 5, 6]]))
    paths = {(r.scope.path, r.scope.step) for r in tape if r.scope is not None}
    assert ("model.encoder.embed", None) in paths
    assert ("model.encoder.cell", None) in paths              # the input projection of all steps
    assert {("model.encoder.cell", t) for t in range(3)} <= paths
    assert ("model.heads.score", None) in paths
    used_at_step_1 = {p.name for r in tape if r.scope and r.scope.step == 1 for p in r.parents
                      if isinstance(p, nn.Parameter)}
    assert used_at_step_1 == {"encoder.cell.W_h"}             # W_x and b were used once, before the loop


def test_zero_grad_train_eval():
    model = Seq2One()
    model(np.array([[1, 2]])).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    assert model.eval() is model and not any(m.training for m in model.modules())
    assert all(m.training for m in model.train().modules())


# -- state dicts -------------------------------------------------------------------------------------------
def test_state_dict_round_trip():
    a, b = Seq2One(), Seq2One()
    b.encoder.cell.W_h.data[...] = 0
    state = a.state_dict()
    assert list(state) == [n for n, _ in a.named_parameters()]
    state["scale"][...] = 5                                   # a copy: the model is untouched
    assert a.scale.data[0] == 1
    b.load_state_dict(a.state_dict())
    for (_n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    ids = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(a(ids).data, b(ids).data)


def test_load_state_dict_lists_every_mismatch_and_changes_nothing():
    model = Seq2One()
    before = model.state_dict()
    state = model.state_dict()
    del state["encoder.cell.b"]
    state["encoder.cell.W_x"] = np.zeros((3, 4))
    state["decoder.W"] = np.zeros(2)
    state["scale"] = np.full(1, 9.0)
    with pytest.raises(CheckpointError) as err:
        model.load_state_dict(state)
    msg = str(err.value)
    assert "3 mismatch" in msg
    assert "missing: encoder.cell.b (12,)" in msg
    assert "unexpected: decoder.W (2,)" in msg
    assert "shape mismatch: encoder.cell.W_x is (3, 12)" in msg and "(3, 4) in the state dict" in msg
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


# -- repr ----------------------------------------------------------------------------------------------------
def test_repr_shows_structure_and_parameter_counts():
    text = repr(Seq2One())
    assert text.splitlines()[0] == "Seq2One("
    assert "(encoder): Encoder(" in text
    assert "(embed): Embedding(7, 3)  # 21 parameters: W (7, 3)" in text
    assert "(cell): GRUCell(3, 4)  # 96 parameters: W_x (3, 12), W_h (4, 12), b (12,)" in text
    assert "(heads.score): Linear(4, 1)  # 5 parameters: W (4, 1), b (1,)" in text
    assert "(scale): Parameter (1,)" in text
    assert text.endswith(")  # 123 parameters")


# -- layers --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("module", [nn.Linear(3, 2), nn.Embedding(5, 2), nn.RNNCell(2, 3), nn.LSTMCell(2, 3),
                                    nn.GRUCell(2, 3, reset_after=True)])
def test_dtype_argument(module):
    assert all(p.dtype == np.float32 for p in module.parameters())
    kind = type(module)
    args = {nn.Linear: (3, 2), nn.Embedding: (5, 2)}.get(kind, (2, 3))
    kw = {"reset_after": True} if kind is nn.GRUCell else {}
    assert all(p.dtype == F64 for p in kind(*args, dtype=F64, **kw).parameters())


def test_linear_values_gradients_and_errors():
    lin = nn.Linear(3, 2, dtype=F64, rng=0)
    x = tg.tensor(np.random.default_rng(1).standard_normal((4, 3)), requires_grad=True)
    np.testing.assert_allclose(lin(x).data, x.data @ lin.W.data + lin.b.data)
    tg.gradcheck(lambda *_: lin(x), [x, lin.W, lin.b])
    assert nn.Linear(3, 2, bias=False).num_parameters() == 6
    with pytest.raises(tg.ShapeError, match=r"Linear inside `head`: input has shape \(4, 5\), expected \(\.\.\., 3\)"):
        with tg.scope("head"):
            lin(np.zeros((4, 5)))
    with pytest.raises(tg.DTypeError):
        lin(tg.tensor(np.zeros((4, 3), np.float32)))          # float32 data into a float64 layer


def test_embedding_lookup_gradient_and_errors():
    emb = nn.Embedding(5, 3, dtype=F64, rng=0)
    ids = np.array([[0, 4, 4], [2, 0, 4]])
    np.testing.assert_array_equal(emb(ids).data, emb.W.data[ids])
    tg.gradcheck(lambda W: emb(ids), [emb.W])
    emb(ids).sum().backward()
    np.testing.assert_array_equal(emb.W.grad[:, 0], [2, 0, 1, 0, 3])   # repeated ids accumulate
    with pytest.raises(tg.ShapeError, match=r"ids must lie in \[0, 5\), got values in \[-1, 2\]"):
        emb(np.array([-1, 2]))
    with pytest.raises(tg.DTypeError, match="ids must be integers"):
        emb(np.array([1.0]))


def test_dropout_trains_and_evaluates():
    drop = nn.Dropout(0.5, rng=0)
    x = tg.tensor(np.ones((200, 50)))
    y = drop(x).data
    assert set(np.unique(y)) == {0.0, 2.0} and 0.45 < (y == 0).mean() < 0.55
    assert drop.eval()(x) is x
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        nn.Dropout(1.0)


def test_dropout_is_reproducible():
    x = np.ones((10, 10), np.float32)
    np.testing.assert_array_equal(nn.Dropout(0.3, rng=7)(tg.tensor(x)).data, nn.Dropout(0.3, rng=7)(tg.tensor(x)).data)


def test_sequential():
    seq = nn.Sequential(nn.Linear(3, 4, rng=0), nn.Dropout(0.2), nn.Linear(4, 2, rng=1))
    assert [n for n, _ in seq.named_parameters()] == ["layers.0.W", "layers.0.b", "layers.2.W", "layers.2.b"]
    assert len(seq) == 3 and isinstance(seq[1], nn.Dropout)
    x = np.ones((2, 3), np.float32)
    seq.eval()
    np.testing.assert_allclose(seq(x).data, seq[2](seq[0](x)).data)


# -- init ----------------------------------------------------------------------------------------------------
def test_glorot_bounds_and_spread():
    a = nn.init.glorot_uniform((300, 200), rng=0)
    limit = np.sqrt(6 / 500)
    assert a.dtype == np.float32 and np.abs(a).max() <= limit and np.abs(a).max() > 0.99 * limit
    n = nn.init.glorot_normal((300, 200), rng=0, dtype=F64)
    assert n.dtype == F64 and abs(n.std() - np.sqrt(2 / 500)) < 0.01 * np.sqrt(2 / 500) * 5
    assert nn.init.xavier_uniform is nn.init.glorot_uniform


@pytest.mark.parametrize("shape", [(6, 6), (4, 9), (9, 4)])
def test_orthogonal(shape):
    q = nn.init.orthogonal(shape, rng=0, gain=2.0, dtype=F64)
    small = min(shape)
    gram = q.T @ q if shape[0] >= shape[1] else q @ q.T
    np.testing.assert_allclose(gram, 4.0 * np.eye(small), atol=1e-12)


def test_init_is_reproducible():
    assert np.array_equal(nn.init.orthogonal((4, 4), rng=3), nn.init.orthogonal((4, 4), rng=3))
    nn.init.manual_seed(11)
    a = nn.LSTMCell(3, 4).W_h.data.copy()
    b = nn.LSTMCell(3, 4).W_h.data.copy()
    nn.init.manual_seed(11)
    assert np.array_equal(nn.LSTMCell(3, 4).W_h.data, a) and not np.array_equal(a, b)
    np.testing.assert_array_equal(nn.init.constant((2,), 1.5), [1.5, 1.5])
    assert nn.init.zeros((2, 2), F64).dtype == F64
