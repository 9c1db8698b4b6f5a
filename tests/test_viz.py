"""tapegrad.viz: the structure of the drawn graph, determinism, rendering with each backend, errors."""
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import tapegrad as tg
import tapegrad.nn as nn
import tapegrad.viz as viz
from tapegrad.viz import backends
from tapegrad.viz.colors import PALETTE

H = 3


# -- models: hand-written cells, as a lecture writes them --------------------------------------------

def weights(prefix, *shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [tg.tensor(rng.standard_normal(s).astype(np.float32) * 0.5, requires_grad=True, name=f"{prefix}.{n}")
            for n, s in shapes]


def elman(T, seed=0):
    """h_t = tanh(x_t W_xh + h_t-1 W_hh + b), a loss per step; the spec's `scope("cell"), scope(t=k)`."""
    W_xh, W_hh, b = weights("cell", ("W_xh", (2, H)), ("W_hh", (H, H)), ("b", (H,)), seed=seed)
    rng = np.random.default_rng(seed + 1)
    h, losses = tg.tensor(np.zeros((1, H), np.float32), name="h0"), []
    for k in range(T):
        x = tg.tensor(rng.standard_normal((1, 2)).astype(np.float32), name="x")
        with tg.scope("cell"), tg.scope(t=k):
            h = tg.tanh(x @ W_xh + h @ W_hh + b)
            losses.append((h * h).sum())
    return tg.stack(losses).sum()


def lstm(T, seed=0):
    W_x, W_h, b = weights("cell", ("W_x", (2, 4 * H)), ("W_h", (H, 4 * H)), ("b", (4 * H,)), seed=seed)
    rng = np.random.default_rng(seed + 1)
    h = c = tg.tensor(np.zeros((1, H), np.float32), name="zeros")
    for k in range(T):
        x = tg.tensor(rng.standard_normal((1, 2)).astype(np.float32), name="x")
        with tg.scope(t=k), tg.scope("cell"):
            i, f, g, o = tg.split(x @ W_x + h @ W_h + b, 4, axis=-1)
            c = tg.sigmoid(f) * c + tg.sigmoid(i) * tg.tanh(g)
            h = tg.sigmoid(o) * tg.tanh(c)
    return (h * h).sum()


# -- reading the DOT source ----------------------------------------------------------------------------

ATTR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|<.*?>(?= \w+=|$)|\S+)')


def parse(g):
    """clusters: [(name, label, [node ids])], nodes: {id: (text, attrs)}, edges: [(src, dst, attrs)]."""
    clusters, stack, nodes, edges = [], [], {}, []
    for line in g.source.splitlines():
        line = line.strip()
        if m := re.match(r"subgraph (cluster_\S+) \{", line):
            clusters.append([m.group(1), None, []])
            stack.append(clusters[-1])
        elif line.startswith("subgraph") or line == "{":
            stack.append(None)
        elif line == "}":
            if stack:
                stack.pop()
        elif m := re.match(r"(\S+) -> (\S+)(?: \[(.*)\])?$", line):
            edges.append((m.group(1), m.group(2), dict(ATTR.findall(m.group(3) or ""))))
        elif "[" not in line and (m := re.search(r'\blabel="([^"]*)"', line)):    # a cluster's attributes
            if stack and stack[-1] is not None:
                stack[-1][1] = m.group(1)
        elif m := re.match(r"(\w+) \[(.*)\]$", line):
            if m.group(1) in ("graph", "node", "edge"):
                continue
            attrs = dict(ATTR.findall(m.group(2)))
            html = attrs.get("label", "<>")[1:-1]                           # an HTML-like label's contents
            nodes[m.group(1)] = (" ".join(re.sub(r"<[^>]*>", " ", html).split()), attrs)
            for c in stack:
                if c is not None:
                    c[2].append(m.group(1))
    return clusters, nodes, edges


def text(attrs):
    """An edge's label text: its label, or its xlabel (state edges at cell detail are labelled beside the edge)."""
    text = attrs.get("label", attrs.get("xlabel", "")).strip('"')
    if text.startswith("<") and text.endswith(">"):            # an HTML-like label: its text
        text = " ".join(re.sub(r"<[^>]*>", " ", text[1:-1]).split())
    return text


def visible(edges):
    return [e for e in edges if e[2].get("style") != "invis"]


def step_clusters(clusters):
    return [c for c in clusters if c[1] and "t = " in c[1]]


def node_named(nodes, text):
    found = [i for i, (label, _) in nodes.items() if text in (label, label.split(" (")[0])]
    assert len(found) == 1, (text, found)
    return found[0]


# -- structure -----------------------------------------------------------------------------------------

def test_one_cluster_per_step_in_time_order():
    clusters, nodes, _ = parse(viz.draw(elman(4)))
    assert [c[1] for c in step_clusters(clusters)] == [f"t = {k}" for k in range(4)]
    for k, c in enumerate(step_clusters(clusters)):       # x_t, the cell's ops and the step's loss inside
        texts = [nodes[i][0] for i in c[2]]
        assert f"x{'₀₁₂₃'[k]} (1, 2)" in texts and "tanh (1, 3)" in texts and "sum ()" in texts


@pytest.mark.parametrize("detail", ["ops", "cells"])
def test_each_parameter_once_outside_the_steps_with_an_edge_into_every_step(detail):
    T = 4
    clusters, nodes, edges = parse(viz.draw(elman(T), detail=detail, weights="nodes"))
    inside = {i for c in clusters for i in c[2]}
    names = ["cell.W_xh", "cell.W_hh", "cell.b"]
    if detail == "ops":
        sources = [node_named(nodes, n) for n in names]
        assert all("(" in nodes[s][0] for s in sources)                # labelled with the shape
    else:                                                             # one box for the module's parameters
        sources = [node_named(nodes, "cell W_xh")]
        assert nodes[sources[0]][0] == "cell W_xh (2, 3) W_hh (3, 3) b (3,)"
    step_of = {i: k for k, c in enumerate(step_clusters(clusters)) for i in c[2]}
    for s in sources:
        assert s not in inside
        into = [d for src, d, _ in visible(edges) if src == s]
        assert sorted(step_of[d] for d in into) == list(range(T))


def test_cells_view_draws_one_box_per_step_and_a_chain_of_state_edges():
    clusters, nodes, edges = parse(viz.draw(lstm(5), detail="cells", weights="nodes"))
    cells = [i for i, (label, attrs) in nodes.items() if label == "cell"]
    assert len(cells) == 5 and len(step_clusters(clusters)) == 5
    state = [(s, d, text(a)) for s, d, a in visible(edges) if text(a).startswith(("h", "c"))]
    assert sorted(label for *_, label in state) == ["c (1, 3)"] * 4 + ["h (1, 3)"] * 4
    assert all(s in cells and d in cells for s, d, _ in state)


def test_max_steps_keeps_first_and_last_and_elides_the_middle():
    clusters, nodes, edges = parse(viz.draw(elman(8), max_steps=4, weights="nodes"))
    assert [c[1] for c in step_clusters(clusters)] == ["t = 0", "t = 1", "t = 6", "t = 7"]
    elided = node_named(nodes, "… (4 steps)")
    w_hh = node_named(nodes, "cell.W_hh")
    assert len([d for s, d, _ in visible(edges) if s == w_hh]) == 5   # 4 kept steps and the elided box
    assert any(d == elided and a.get("label") == "h" for _, d, a in visible(edges))
    assert any(s == elided and a.get("label") == "h" for s, _, a in visible(edges))
    with pytest.raises(ValueError, match="max_steps"):
        viz.draw(elman(3), max_steps=1)


@pytest.mark.parametrize("model, T, label", [(elman, 4, "h ×4"), (lstm, 3, "h, c ×3")])
def test_rolled_view_draws_the_cell_once_with_a_recurrent_self_edge(model, T, label):
    clusters, nodes, edges = parse(viz.draw(model(T), view="rolled", detail="cells", weights="nodes"))
    loops = [(s, text(a)) for s, d, a in visible(edges) if s == d]
    assert [" ".join(text.split()) for _, text in loops] == [label]
    assert nodes[loops[0][0]][0] == "cell"
    assert [c[1] for c in clusters] == [f"t = 0 … {T - 1}"]


def test_gradient_colours_appear_iff_show_grads():
    with tg.Tape(retain_grads=True) as tape:
        loss = lstm(4)
    loss.backward()
    plain = viz.draw(loss).source
    assert not any(c in plain for c in PALETTE) and "legend" not in plain
    coloured = viz.draw(tape, show_grads=True)
    _, nodes, edges = parse(coloured)
    assert "legend" in nodes and "log scale" in nodes["legend"][0]
    fills = {a.get("fillcolor", "").strip('"') for _, a in nodes.values()}
    assert len(fills & set(PALETTE)) >= 3
    state = [a for _, _, a in visible(edges) if a.get("label") in ("h", "c")]
    assert state and all(a["color"].strip('"') in PALETTE for a in state)
    with pytest.raises(ValueError, match="retain_grads"):
        viz.draw(lstm(2), show_grads=True)


def test_same_program_same_dot():
    first, second = viz.draw(lstm(3)).source, viz.draw(lstm(3)).source   # records numbered differently
    assert first == second
    assert viz.draw(elman(5), detail="cells", max_steps=3).source == viz.draw(elman(5), detail="cells",
                                                                               max_steps=3).source


def encoder_decoder():
    enc = weights("encoder", ("W_x", (2, H)), ("W_h", (H, H)))
    dec = weights("decoder", ("W_x", (2, H)), ("W_h", (H, H)), seed=1)
    h = tg.tensor(np.zeros((1, H), np.float32), name="h0")
    x = tg.tensor(np.ones((1, 2), np.float32), name="x")
    for name, (W_x, W_h), T in (("encoder", enc, 4), ("decoder", dec, 3)):
        with tg.scope(name):
            for k in range(T):
                with tg.scope(t=k), tg.scope("cell"):
                    h = tg.tanh(x @ W_x + h @ W_h)
    return h.sum()


def test_encoder_decoder_continues_the_row_and_hands_over_the_state():
    clusters, nodes, edges = parse(viz.draw(encoder_decoder(), detail="cells", weights="nodes"))
    labels = [c[1] for c in step_clusters(clusters)]
    assert labels == ["encoder:  t = 0", "t = 1", "t = 2", "t = 3", "decoder:  t = 0", "t = 1", "t = 2"]
    last_encoder, first_decoder = step_clusters(clusters)[3][2], step_clusters(clusters)[4][2]
    handover = [a for s, d, a in visible(edges) if s in last_encoder and d in first_decoder]
    assert [text(a) for a in handover] == ["h (1, 3)"]


def test_nn_stacked_and_bidirectional_read_as_rows_of_steps():
    rng = np.random.default_rng(0)
    xs = [tg.tensor(rng.standard_normal((1, 2)), dtype=np.float32, name="x") for _ in range(3)]
    stacked = nn.StackedRNN([nn.LSTMCell(2, H, rng=rng), nn.LSTMCell(H, H, rng=rng)], name="rnn")
    clusters, nodes, _ = parse(viz.draw(stacked(xs)[0].sum(), detail="cells", weights="nodes"))
    assert [c[1] for c in step_clusters(clusters)] == ["rnn.layers.0:  t = 0", "t = 1", "t = 2",
                                                       "rnn.layers.1:  t = 0", "t = 1", "t = 2"]
    assert sorted(label for label, _ in nodes.values() if label in ("layers.0", "layers.1")) == \
        ["layers.0"] * 3 + ["layers.1"] * 3
    assert "initial h, c (1, 3)" in [label for label, _ in nodes.values()]
    bi = nn.Bidirectional(nn.RNNCell(2, H, rng=rng), nn.RNNCell(2, H, rng=rng), name="bi")
    clusters, _, _ = parse(viz.draw(bi(xs)[0].sum(), detail="cells"))
    assert [c[1] for c in step_clusters(clusters)] == ["bi.fwd:  t = 0", "t = 1", "t = 2",
                                                       "bi.bwd:  t = 0", "t = 1", "t = 2"]


def test_targets_and_options():
    with tg.Tape() as tape:
        loss = elman(2)
    assert parse(viz.draw(tape))[0] == parse(viz.draw(loss))[0]
    assert "rankdir=LR" in viz.draw(loss, rankdir="TB").source          # time down, values rightwards
    assert "(1, 3)" not in viz.draw(loss, show_shapes=False).source
    with pytest.raises(ValueError, match="leaf"):
        viz.draw(tg.tensor([1.0], requires_grad=True))
    with pytest.raises(ValueError, match="view"):
        viz.draw(loss, view="folded")
    with pytest.raises(ValueError, match="rankdir"):
        viz.draw(loss, rankdir="XY")


# -- gradient flow --------------------------------------------------------------------------------------

def test_gradient_flow_is_the_norm_of_each_states_gradient():
    with tg.Tape(retain_grads=True) as tape:
        loss = lstm(5)
    loss.backward()
    flow = viz.gradient_flow(loss, plot=False)
    assert flow.steps == [0, 1, 2, 3, 4] and list(flow.series) == ["h", "c"]
    states = [r.tensor() for r in tape.records if r.op == "mul" and r.scope is not None]
    h_grads = [np.linalg.norm(t.grad) for t in states[2::3]]          # each step: f*c, i*g, then h = o*tanh(c)
    np.testing.assert_allclose(flow.series["h"], h_grads, rtol=1e-6)
    assert "‖∂L/∂h‖" in repr(flow) and len(repr(flow).splitlines()) == 6
    with pytest.raises(ValueError, match="retain_grads"):
        viz.gradient_flow(lstm(2), plot=False)


# -- rendering ------------------------------------------------------------------------------------------

def check_file(path, fmt):
    data = open(path, "rb").read()
    if fmt == "svg":
        assert ET.fromstring(data).tag.endswith("svg")
    else:
        assert data.startswith(b"\x89PNG\r\n\x1a\n")


def test_render_with_each_backend_found(tmp_path, monkeypatch):
    """Every backend on PATH renders valid SVG and PNG. CI sets TAPEGRAD_RENDER_BACKENDS=dot,graphviz-pure,
    so there both must be found; elsewhere the backends present are used (and with none, the error)."""
    found = backends.available()
    required = os.environ.get("TAPEGRAD_RENDER_BACKENDS")
    if required:
        assert set(required.split(",")) <= set(found), f"CI needs {required}, found {found}"
    loss = lstm(3)
    for backend in found:
        monkeypatch.setattr(backends, "BACKENDS", (backend,))
        for fmt in ("svg", "png"):
            path = viz.render(loss, tmp_path / f"{backend}.{fmt}", detail="cells")
            assert path == str(tmp_path / f"{backend}.{fmt}")
            check_file(path, fmt)
    if not found:
        with pytest.raises(RuntimeError, match="graphviz-pure"):
            viz.render(loss, tmp_path / "none.svg")


def test_format_comes_from_the_suffix(tmp_path, monkeypatch):
    monkeypatch.setattr(backends, "BACKENDS", ("no-such-layout-program",))
    with pytest.raises(ValueError, match="format"):
        viz.render(elman(2), tmp_path / "figure.gif")
    with pytest.raises(RuntimeError):
        viz.render(elman(2), tmp_path / "figure")                       # no suffix: svg
    assert (tmp_path / "figure.dot").exists()


def test_missing_backend_writes_the_dot_source_and_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(backends, "BACKENDS", ("no-such-layout-program",))
    with pytest.raises(RuntimeError) as err:
        viz.render(elman(2), tmp_path / "out" / "figure.png")
    message = str(err.value)      # what to install; graphviz-pure by name, installed or not (tests/test_backends.py)
    assert "apt-get install graphviz" in message and "graphviz-pure" in message
    source = (tmp_path / "out" / "figure.dot").read_text()
    assert source.startswith("digraph") and "t = 1" in source
    monkeypatch.setattr(backends, "BACKENDS", ("graphviz-pure",))     # no PDF there, found or not
    with pytest.raises(RuntimeError, match="PDF needs the system Graphviz"):
        viz.render(elman(2), tmp_path / "figure.pdf")


def test_tapegrad_imports_without_graphviz():
    code = ("import sys; sys.modules['graphviz'] = None\n"
            "import tapegrad, tapegrad.viz\n"
            "x = tapegrad.tensor([1.0], requires_grad=True)\n"
            "try:\n    tapegrad.viz.draw(x * 2)\nexcept ImportError:\n    print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.getcwd())
    assert out.stdout.strip() == "ok", out.stderr


def test_which_backend():
    assert backends.available("svg") == [b for b in backends.BACKENDS if backends.locate(b)]   # PATH + scripts
    assert "graphviz-pure" not in backends.available("pdf")
