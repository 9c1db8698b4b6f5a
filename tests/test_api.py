"""Issue #17: one calling convention for the verification functions, and the API details a PyTorch or numpy
user expects (reprs, warnings, torch state dicts, `python -m tapegrad`)."""
import re
import subprocess
import sys

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import check, nn
from tapegrad.testing import assert_grads_match, reference_case

rng = np.random.default_rng(0)
W = tg.tensor(rng.normal(size=(3, 3)), requires_grad=True, name="W")
h = tg.tensor(rng.normal(size=(2, 3)), requires_grad=True, name="h")


def with_args(W, h):
    return tg.tanh(h @ W).sum()


def bare():
    return tg.tanh(h @ W).sum()


@pytest.mark.parametrize("fn", [with_args, bare, lambda *ps: tg.tanh(ps[1] @ ps[0]).sum()],
                         ids=["tensors as arguments", "no arguments", "*params"])
def test_every_verification_function_takes_both_forms(fn):
    assert tg.gradcheck(fn, [W, h]).ok
    assert tg.gradgradcheck(fn, [W, h]).ok
    assert check.compare(fn, {"W": W, "h": h}).ok
    assert assert_grads_match(fn, {"W": W, "h": h}).ok
    assert check.eps_sweep(fn, W, (0, 1), params=[W, h]).best < 1e-2


def test_eps_sweep_of_a_one_parameter_function_needs_no_params():
    assert check.eps_sweep(lambda W: (W * W).sum(), W, (0, 0)).tape == pytest.approx(2 * W.data[0, 0])


def test_a_function_of_the_wrong_arity_is_refused_with_both_forms_named():
    with pytest.raises(tg.ArgumentError, match=re.escape("compare: the function takes 1 required positional argument "
                                                         "(W), but there are 2 tensors to check; write it as "
                                                         "`lambda p0, p1: ...`")):
        check.compare(lambda W: W.sum(), {"W": W, "h": h})
    with pytest.raises(tg.ArgumentError, match="or as `lambda: ...` reading them from its closure"):
        tg.gradcheck(lambda a, b, c: a.sum(), [W, h])


def test_reference_case_loss_fn_takes_the_parameters_too():
    case = reference_case("elman_bptt", T=3)
    names = list(case.params)
    report = check.compare(lambda *ps: case.model(dict(zip(names, ps))), case.params, hand=case.hand)
    assert report.ok


# -- PyTorch state dicts: tested against torch's documented equations, written in numpy --------------------
# (torch is not installed here; with torch present the same dicts load into torch.nn modules directly)

def sig(a):
    return 1 / (1 + np.exp(-a))


def torch_cell(kind, sd, x, state, suffix="", nonlinearity="tanh"):
    """One step of torch.nn.RNNCell / LSTMCell / GRUCell from its state dict (torch's docs' equations)."""
    W_ih, W_hh, b_ih, b_hh = (sd[k + suffix] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    if kind == "RNN":
        f = np.tanh if nonlinearity == "tanh" else (lambda a: np.maximum(a, 0))
        h = f(x @ W_ih.T + b_ih + state @ W_hh.T + b_hh)
        return h, h
    if kind == "LSTM":
        h, c = state
        i, f, g, o = np.split(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh, 4, axis=-1)
        c = sig(f) * c + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
        return h, (h, c)
    gi, gh = x @ W_ih.T + b_ih, state @ W_hh.T + b_hh
    (ir, iz, in_), (hr, hz, hn) = np.split(gi, 3, axis=-1), np.split(gh, 3, axis=-1)
    r, z = sig(ir + hr), sig(iz + hz)
    n = np.tanh(in_ + r * hn)
    h = (1 - z) * n + z * state
    return h, h


def torch_rnn(kind, sd, xs, layers, bidirectional):
    """torch.nn.RNN/LSTM/GRU(batch_first=True) forward from its state dict; zero initial states."""
    out = xs
    for k in range(layers):
        directions = []
        for suffix, seq in ((f"_l{k}", out), (f"_l{k}_reverse", out[:, ::-1])) if bidirectional else ((f"_l{k}", out),):
            H = sd["weight_hh" + suffix].shape[1]
            zeros = np.zeros((len(xs), H))
            state, hs = ((zeros, zeros) if kind == "LSTM" else zeros), []
            for t in range(seq.shape[1]):
                h, state = torch_cell(kind, sd, seq[:, t], state, suffix)
                hs.append(h)
            hs = np.stack(hs, 1)
            directions.append(hs if suffix.endswith(f"_l{k}") else hs[:, ::-1])
        out = np.concatenate(directions, -1)
    return out


CELLS = {"RNN": lambda: nn.RNNCell(3, 4, dtype=np.float64, rng=1),
         "LSTM": lambda: nn.LSTMCell(3, 4, dtype=np.float64, rng=1),
         "GRU": lambda: nn.GRUCell(3, 4, reset_after=True, dtype=np.float64, rng=1)}


def random_like(sd, seed):
    r = np.random.default_rng(seed)
    return {k: r.normal(scale=0.5, size=v.shape) for k, v in sd.items()}


def state_for(kind, B=2, H=4):
    r = np.random.default_rng(5)
    h = r.normal(size=(B, H))
    return (h, r.normal(size=(B, H))) if kind == "LSTM" else h


@pytest.mark.parametrize("kind", CELLS)
def test_cell_export_computes_what_torch_computes(kind):
    cell = CELLS[kind]()
    for p in cell.parameters():                  # non-zero biases, so their placement is tested too
        p.data[...] = np.random.default_rng(len(p.name)).normal(scale=0.5, size=p.shape)
    sd = cell.to_torch_state_dict()
    assert sorted(sd) == ["bias_hh", "bias_ih", "weight_hh", "weight_ih"]
    G = {"RNN": 1, "LSTM": 4, "GRU": 3}[kind]
    assert sd["weight_ih"].shape == (G * 4, 3) and sd["weight_hh"].shape == (G * 4, 4)
    x, state = np.random.default_rng(3).normal(size=(2, 3)), state_for(kind)
    ours, _ = cell(tg.tensor(x), tuple(map(tg.tensor, state)) if kind == "LSTM" else tg.tensor(state))
    theirs, _ = torch_cell(kind, sd, x, state)
    np.testing.assert_allclose(ours.data, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", CELLS)
def test_cell_loads_a_torch_state_dict_with_two_biases(kind):
    cell = CELLS[kind]()
    sd = random_like(cell.to_torch_state_dict(), 7)              # both biases non-zero, as torch trains them
    cell.load_torch_state_dict(sd)
    x, state = np.random.default_rng(3).normal(size=(2, 3)), state_for(kind)
    ours, _ = cell(tg.tensor(x), tuple(map(tg.tensor, state)) if kind == "LSTM" else tg.tensor(state))
    np.testing.assert_allclose(ours.data, torch_cell(kind, sd, x, state)[0], rtol=1e-12, atol=1e-12)
    again = CELLS[kind]()
    again.load_torch_state_dict(cell.to_torch_state_dict())      # round trip: same function
    out2, _ = again(tg.tensor(x), tuple(map(tg.tensor, state)) if kind == "LSTM" else tg.tensor(state))
    np.testing.assert_array_equal(out2.data, ours.data)


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_stacked_and_bidirectional_match_torch_multi_layer_rnns(kind, bidirectional):
    if bidirectional:
        model = nn.Bidirectional(CELLS[kind](), CELLS[kind]())
        layers = 1
    else:
        make = CELLS[kind]
        second = {"RNN": nn.RNNCell, "LSTM": nn.LSTMCell, "GRU": lambda d, h, **kw: nn.GRUCell(d, h, reset_after=True,
                                                                                               **kw)}[kind]
        model = nn.StackedRNN([make(), second(4, 4, dtype=np.float64, rng=2)])
        layers = 2
    sd = random_like(model.to_torch_state_dict(), 11)
    expected = {f"{w}_l{k}{s}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") for k in range(layers)
                for s in ([""] + ["_reverse"] * bidirectional)}
    assert set(sd) == expected
    model.load_torch_state_dict(sd)
    xs = np.random.default_rng(4).normal(size=(2, 5, 3))
    out, _ = model(tg.tensor(xs))
    np.testing.assert_allclose(out.data, torch_rnn(kind, sd, xs, layers, bidirectional), rtol=1e-10, atol=1e-12)
    for k, v in model.to_torch_state_dict().items():             # export after load: the same torch function
        if not k.startswith("bias"):
            np.testing.assert_array_equal(v, sd[k])


def test_linear_embedding_and_containers_use_torch_names():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 3, dtype=np.float64, rng=0)
            self.cell = nn.LSTMCell(3, 4, dtype=np.float64, rng=0)
            self.head = nn.Sequential(nn.Linear(4, 6, dtype=np.float64, rng=0), nn.Linear(6, 2, bias=False,
                                                                                         dtype=np.float64, rng=0))
    m = Model()
    sd = m.to_torch_state_dict()
    assert list(sd) == ["embed.weight", "cell.weight_ih", "cell.weight_hh", "cell.bias_ih", "cell.bias_hh",
                        "head.0.weight", "head.0.bias", "head.1.weight"]
    assert sd["head.0.weight"].shape == (6, 4)
    np.testing.assert_array_equal(sd["head.0.weight"], m.head[0].W.data.T)
    sd2 = random_like(sd, 3)
    m.load_torch_state_dict(sd2)
    np.testing.assert_array_equal(m.head[0].W.data, sd2["head.0.weight"].T)
    np.testing.assert_array_equal(m.embed.W.data, sd2["embed.weight"])


def test_torch_state_dict_mismatches_change_nothing():
    cell = nn.LSTMCell(3, 4, dtype=np.float64, rng=0)
    before = cell.state_dict()
    sd = cell.to_torch_state_dict()
    sd["weight_hh"] = sd["weight_hh"].T.copy()[:3]
    sd["extra"] = np.zeros(2)
    del sd["bias_hh"]
    with pytest.raises(tg.CheckpointError, match=r"3 mismatch\(es\)") as e:
        cell.load_torch_state_dict(sd)
    assert "shape mismatch: weight_hh is (3, 16)" in str(e.value) and "missing: bias_hh (16,)" in str(e.value)
    assert "unexpected: extra (2,)" in str(e.value)
    for k, v in cell.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(tg.InvalidValueError, match="reset_after=True"):
        nn.GRUCell(3, 4).to_torch_state_dict()


TORCH_MODELS = {
    "RNNCell": (lambda: nn.RNNCell(3, 4, dtype=np.float64, rng=0), "RNNCell(3, 4)", False),
    "LSTMCell": (lambda: nn.LSTMCell(3, 4, dtype=np.float64, rng=0), "LSTMCell(3, 4)", False),
    "GRUCell": (lambda: nn.GRUCell(3, 4, reset_after=True, dtype=np.float64, rng=0), "GRUCell(3, 4)", False),
    "LSTM x2": (lambda: nn.StackedRNN([nn.LSTMCell(3, 4, dtype=np.float64, rng=0),
                                       nn.LSTMCell(4, 4, dtype=np.float64, rng=1)]),
                "LSTM(3, 4, num_layers=2, batch_first=True)", True),
    "GRU bidirectional": (lambda: nn.Bidirectional(nn.GRUCell(3, 4, reset_after=True, dtype=np.float64, rng=0),
                                                   nn.GRUCell(3, 4, reset_after=True, dtype=np.float64, rng=1)),
                          "GRU(3, 4, num_layers=1, batch_first=True, bidirectional=True)", True),
    "RNN relu bidirectional": (lambda: nn.Bidirectional(nn.RNNCell(3, 4, "relu", dtype=np.float64, rng=0),
                                                        nn.RNNCell(3, 4, "relu", dtype=np.float64, rng=1)),
                               "RNN(3, 4, num_layers=1, nonlinearity='relu', batch_first=True, bidirectional=True)",
                               True),
}


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_with_real_torch_when_installed(name):
    torch = pytest.importorskip("torch")
    from tapegrad.nn.torch_bridge import torch_class
    make, torch_spec, sequence = TORCH_MODELS[name]
    model = make()
    assert torch_class(model) == torch_spec
    theirs = eval("torch.nn." + torch_spec).double()
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.to_torch_state_dict().items()})
    r = np.random.default_rng(0)
    x = r.normal(size=(2, 5, 3) if sequence else (2, 3))

    def compare_outputs():
        ours = model(tg.tensor(x))[0].data
        out = theirs(torch.from_numpy(x))
        out = out[0] if isinstance(out, tuple) else out
        np.testing.assert_allclose(ours, out.detach().numpy(), rtol=1e-10, atol=1e-12)
    compare_outputs()
    with torch.no_grad():                       # torch's own random init, both biases non-zero: the way back
        for p in theirs.parameters():
            p.normal_(0, 0.5)
    model.load_torch_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    compare_outputs()


def test_linear_and_embedding_with_real_torch_when_installed():
    torch = pytest.importorskip("torch")
    lin, emb = nn.Linear(3, 5, dtype=np.float64, rng=0), nn.Embedding(7, 2, dtype=np.float64, rng=0)
    tlin, temb = torch.nn.Linear(3, 5).double(), torch.nn.Embedding(7, 2).double()
    tlin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in lin.to_torch_state_dict().items()})
    temb.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in emb.to_torch_state_dict().items()})
    x, ids = np.random.default_rng(0).normal(size=(4, 3)), np.array([[1, 6], [0, 3]])
    np.testing.assert_allclose(lin(tg.tensor(x)).data, tlin(torch.from_numpy(x)).detach().numpy(), rtol=1e-12)
    np.testing.assert_array_equal(emb(ids).data, temb(torch.from_numpy(ids)).detach().numpy())


# -- examples' progress bars ------------------------------------------------------------------------------

def test_examples_progress_bar_only_on_a_terminal(monkeypatch, capsys):
    import io
    import types
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "examples"))
    try:
        import common
    finally:
        sys.path.pop(0)
    calls = []
    fake = types.ModuleType("tqdm")
    fake.tqdm = lambda it, **kw: calls.append(kw) or it
    monkeypatch.setitem(sys.modules, "tqdm", fake)
    assert list(common.progress(range(500), "steps")) == list(range(500))      # stderr is captured: not a tty
    assert calls == [] and len(capsys.readouterr().err.splitlines()) <= 11
    tty = io.StringIO()
    tty.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", tty)
    assert list(common.progress(range(5), "steps")) == list(range(5))
    assert calls and calls[0]["disable"] is None


# -- python -m tapegrad -----------------------------------------------------------------------------------

def test_python_m_tapegrad_reports_version_backends_extras_and_commands():
    root = __import__("pathlib").Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-m", "tapegrad"], capture_output=True, text=True, cwd=root, timeout=60)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith(f"tapegrad {tg.__version__} (python ")
    assert "render backends (tapegrad.viz.render):" in text and "optional extras:" in text
    for dist in ("graphviz-pure", "matplotlib", "tqdm", "nbclient", "Pillow"):
        assert re.search(rf"^  {re.escape(dist)}\s", text, re.M), dist
    assert "-m tapegrad.demo" in text and "docs/notebooks" in text


def test_python_m_tapegrad_degrades_when_backend_discovery_fails(monkeypatch):
    from tapegrad import __main__ as cli
    from tapegrad.viz import backends

    def broken(*args, **kwargs):
        raise RuntimeError("being rewritten")
    monkeypatch.setattr(backends, "available", broken)
    assert "could not query tapegrad.viz.backends (RuntimeError: being rewritten)" in cli.report()


# -- notebook displays ------------------------------------------------------------------------------------

def test_tape_module_and_tensor_render_as_tables():
    from tapegrad import notebook
    cell = nn.RNNCell(2, 3, dtype=np.float64, rng=0, name="rnn")
    with tg.Tape() as tape:
        out, _ = nn.unroll(cell, tg.tensor(np.ones((1, 2, 2))))
    page, md = tape._repr_html_(), tape._repr_markdown_()
    assert page.startswith("<table><caption>Tape: ") and "<th>module</th><th>t</th>" in page
    assert "<td>rnn</td><td>1</td>" in page                       # a step's record: module and time step
    assert md.splitlines()[2] == "| # | op | inputs | shape | dtype | module | t |"
    assert "over 2 time steps" in md
    mpage, mmd = cell._repr_html_(), cell._repr_markdown_()
    assert "<td>W_x</td><td>(2, 3)</td><td>float64</td><td>6</td><td>-</td>" in mpage
    assert "RNNCell(2, 3): 18 parameters" in mmd and "| W_h | (3, 3) | float64 | 9 | - |" in mmd
    tpage = notebook.tensor_html(out)
    assert "<td>shape</td><td>(1, 2, 3)</td>" in tpage and "stack" in tpage
    assert "| requires_grad | True |" in notebook.tensor_markdown(out)


def test_a_function_with_only_optional_arguments_is_called_bare():
    def loss(scale=1.0):
        return tg.tanh(h @ W).sum() * scale
    assert check.compare(loss, {"W": W, "h": h}).ok
