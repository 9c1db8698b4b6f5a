"""tapegrad.viz on the code people write (issue #15): one test per misdrawn pattern, the textbook option,
the unfold view, the backward animation. Structure is read from the DOT source (see test_viz.parse)."""
import re
import warnings

import numpy as np
import pytest
from test_viz import elman, parse, step_clusters, visible

import tapegrad as tg
import tapegrad.nn as nn
import tapegrad.viz as viz
from tapegrad.viz.colors import PALETTE, contrast, readable

H = 3


def running_loss(T=4):
    """tapegrad.demo's rnn_loss: named weight tensors, numpy inputs, `loss = loss + l_t` in the loop."""
    rng = np.random.default_rng(0)
    p = lambda n, *s: tg.tensor(rng.standard_normal(s).astype(np.float32) * 0.5, requires_grad=True, name=n)  # noqa
    W_xh, W_hh, b_h, W_hy, b_y = p("W_xh", 2, H), p("W_hh", H, H), p("b_h", H), p("W_hy", H, 1), p("b_y", 1)
    xs = rng.standard_normal((T, 1, 2)).astype(np.float32)
    ys = rng.standard_normal((T, 1, 1)).astype(np.float32)
    h, loss = np.zeros((1, H), np.float32), 0
    for t in range(T):
        with tg.scope("rnn"), tg.scope(t=t):
            h = tg.tanh(xs[t] @ W_xh + h @ W_hh + b_h)
            loss = loss + tg.mse_loss(h @ W_hy + b_y, ys[t], reduction="sum")
    return loss / (2 * T)


def hand_loop(T=4, named=True, keep=None):
    """A cell and a readout called directly in the loop, no parent Module."""
    rng = np.random.default_rng(0)
    cell = nn.RNNCell(2, H, rng=rng, name="cell" if named else None)
    head = nn.Linear(H, 1, rng=rng, name="head" if named else None)
    if keep is not None:
        keep.extend([cell, head])
    h, loss = None, 0.0
    for t in range(T):
        with tg.scope(t=t):
            out, h = cell(rng.standard_normal((1, 2)).astype(np.float32), h)
            loss = loss + tg.mse_loss(head(out), np.ones((1, 1), np.float32))
    return loss


def labels(nodes):
    return [text for text, _ in nodes.values()]


def edge_label(attrs):
    text = attrs.get("label", attrs.get("xlabel", "")).strip('"')
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return " ".join(re.sub(r"<[^>]*>", " ", text).split())


# -- row 1: a running loss is an accumulator, not a cell state ------------------------------------------

def test_running_loss_is_one_sum_not_a_state_edge():
    T = 4
    clusters, nodes, edges = parse(viz.draw(running_loss(T)))
    states = [edge_label(a) for _, _, a in visible(edges) if a.get("color", "").strip('"') == "#1f4e8c"]
    assert states == ["h"] * (T - 1)                               # no `c`: nothing else crosses the steps
    inside = {i for c in clusters for i in c[2]}
    sums = [i for i, (text, _) in nodes.items() if text.startswith("Σ")]
    assert len(sums) == 1 and sums[0] not in inside
    step_of = {i: k for k, c in enumerate(step_clusters(clusters)) for i in c[2]}
    into = sorted(step_of[s] for s, d, _ in visible(edges) if d == sums[0] and s in step_of)
    assert into == list(range(T))                                  # each step's loss flows into the Σ
    assert all(nodes[s][0].startswith("mse_loss") for s, d, _ in visible(edges) if d == sums[0])
    div = [i for i, (text, _) in nodes.items() if text.startswith("div")]
    assert div and div[0] not in inside                            # loss / 2T stands above the steps
    _, _, rolled = parse(viz.draw(running_loss(T), view="rolled", detail="cells"))
    loops = [edge_label(a) for s, d, a in visible(rolled) if s == d]
    assert loops == [f"W_hh h ×{T}"]                               # not "h, c ×4"


def test_running_loss_added_after_the_step_block_is_one_named_sum():
    rng = np.random.default_rng(0)
    W = tg.tensor(rng.standard_normal((H, H)), requires_grad=True, name="W_hh")
    U = tg.tensor(rng.standard_normal((2, H)), requires_grad=True, name="W_xh")
    h, loss = np.zeros((1, H)), 0
    for t in range(4):
        with tg.scope(t=t):
            h = tg.tanh(rng.standard_normal((1, 2)) @ U + h @ W)
            l_t = (h * h).sum()
        loss = loss + l_t                                          # outside the time scope
    loss.name = "loss"
    clusters, nodes, edges = parse(viz.draw(loss))
    assert [t for t in labels(nodes) if t.startswith("Σ")] == ["Σ loss"]
    assert not [t for t in labels(nodes) if t.startswith("add ()")]          # the chain of adds is the Σ
    assert [edge_label(a) for _, _, a in visible(edges) if a.get("color", "").strip('"') == "#1f4e8c"] == ["h"] * 3


# -- row 2: plain numpy inputs are drawn --------------------------------------------------------------

def test_numpy_inputs_are_input_nodes_with_their_step():
    clusters, nodes, _ = parse(viz.draw(running_loss(4)))
    for k, c in enumerate(step_clusters(clusters)):
        texts = [nodes[i][0] for i in c[2]]
        sub = "₀₁₂₃"[k]
        assert f"x{sub} (1, 2)" in texts and f"y{sub} (1, 1)" in texts     # the data and the loss's target
    assert "initial h (1, 3)" in labels(nodes)                             # h = np.zeros(...) before the loop


# -- row 3: a cell called in a hand loop is a unit; its parameters are qualified ------------------------

def test_hand_called_cell_is_boxed_and_its_parameters_qualified():
    clusters, nodes, edges = parse(viz.draw(hand_loop(named=True), detail="cells", weights="nodes"))
    assert sorted(t for t in labels(nodes) if t in ("cell", "head")) == ["cell"] * 4 + ["head"] * 4
    params = [t for t in labels(nodes) if t.startswith(("cell W", "head W"))]
    assert sorted(params) == ["cell W_x (2, 3) b (3,) W_h (3, 3)", "head W (3, 1) b (1,)"]
    _, nodes, _ = parse(viz.draw(hand_loop(named=True), weights="nodes"))
    names = [t.split(" (")[0] for t, a in nodes.values() if "fdebd0" in a.get("fillcolor", "")]
    assert sorted(names) == ["cell.W_h", "cell.W_x", "cell.b", "head.W", "head.b"]
    keep = []                                                      # no name=: the module's class names it
    _, nodes, _ = parse(viz.draw(hand_loop(named=False, keep=keep), detail="cells"))
    assert labels(nodes).count("RNNCell + b") == 4
    _, nodes, _ = parse(viz.draw(hand_loop(named=False, keep=keep), weights="nodes"))
    names = [t.split(" (")[0] for t, a in nodes.values() if "fdebd0" in a.get("fillcolor", "")]
    assert len(names) == len(set(names)) == 5 and "RNNCell.b" in names and "Linear.b" in names


def test_no_parameter_label_twice():
    for model in (running_loss, hand_loop, lambda: hand_loop(named=False)):
        _, nodes, _ = parse(viz.draw(model(), weights="nodes"))
        names = [t.split(" (")[0] for t, a in nodes.values() if "fdebd0" in a.get("fillcolor", "")]
        assert len(names) == len(set(names)), names


# -- row 4: op detail keeps each weight inside its step --------------------------------------------------

def test_ops_detail_draws_a_dashed_copy_of_each_weight_inside_every_step():
    T = 4
    clusters, nodes, edges = parse(viz.draw(running_loss(T)))
    proxies = {i for i, (_, a) in nodes.items() if "dashed" in a.get("style", "")}
    steps = step_clusters(clusters)
    where = {i: k for k, c in enumerate(steps) for i in c[2]}
    assert all(p in where for p in proxies)
    for c in steps:                                                # the same weights in every step
        assert sorted(nodes[i][0] for i in c[2] if i in proxies) == ["W_hh", "W_hy", "W_xh", "b_h", "b_y"]
    for s, d, _ in visible(edges):                                 # no parameter edge leaves its step
        if s in proxies:
            assert where[d] == where[s]
    assert sum(1 for s, d, _ in visible(edges) if where.get(s) is not None and where.get(d) is not None
               and where[s] != where[d] and s in proxies) == 0
    assert "legend" not in nodes and "shared weights" in nodes["weights"][0]
    assert nodes["weights"][0].count("W_hh") == 1                  # one legend entry per weight


# -- row 5: no silent blank overlay -------------------------------------------------------------------

def test_show_grads_without_retained_gradients_says_what_to_do():
    loss = elman(3)
    with pytest.raises(ValueError, match=r"retain_grads.*") as err:
        viz.draw(loss, show_grads=True)                            # before backward: nothing at all
    assert "∂L/∂h" in str(err.value)
    loss.backward()                                                # parameters have .grad, the states not
    with pytest.warns(UserWarning, match=r"∂L/∂h.*retain_grads"):
        viz.draw(loss, show_grads=True)
    with tg.Tape(retain_grads=True) as tape:
        loss = elman(3)
    loss.backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        viz.draw(loss, show_grads=True)
    del tape


# -- row 6: legibility --------------------------------------------------------------------------------

def test_gradient_labels_are_readable_and_the_loop_label_clear_of_its_edge():
    assert contrast(PALETTE[0]) < 3                                # the pale end as a line colour
    assert all(contrast(readable(c)) >= 4.5 for c in PALETTE)      # ... is darkened for text
    with tg.Tape(retain_grads=True) as tape:
        loss = elman(4)
    loss.backward()
    _, _, edges = parse(viz.draw(loss, detail="cells", show_grads=True))
    state = [a for _, _, a in visible(edges) if a.get("penwidth") == "3.5"]
    assert state and all(contrast(a["fontcolor"].strip('"')) >= 4.5 for a in state)
    _, _, edges = parse(viz.draw(elman(4), view="rolled", detail="cells"))
    loops = [a for s, d, a in visible(edges) if s == d]
    assert loops and all("xlabel" in a and "label" not in a for a in loops)
    del tape


def test_slide_theme_enlarges_text_and_lines():
    _, paper, _ = parse(viz.draw(elman(3), detail="cells"))
    _, slide, edges = parse(viz.draw(elman(3), detail="cells", theme="slide"))
    cell = next(i for i, (t, _) in paper.items() if t.startswith("cell"))
    assert float(slide[cell][1]["fontsize"]) > float(paper[cell][1]["fontsize"])
    assert all(float(a["penwidth"]) >= 1.35 for _, _, a in visible(edges))
    with pytest.raises(ValueError, match="theme"):
        viz.draw(elman(2), theme="dark")


# -- the textbook picture -----------------------------------------------------------------------------

def test_textbook_weights_are_named_on_the_edges_they_act_on():
    clusters, nodes, edges = parse(viz.draw(elman(4), detail="cells", weights="labels"))
    assert not any("W_hh" in t or "W_xh" in t for t in labels(nodes))     # no parameter nodes
    cells = {i for i, (t, _) in nodes.items() if t.startswith("cell")}
    assert len(cells) == 4 and all(nodes[i][0] == "cell + b" for i in cells)
    state = [edge_label(a) for s, d, a in visible(edges) if s in cells and d in cells]
    assert state == ["W_hh h (1, 3)"] * 3
    xs = [edge_label(a) for s, d, a in visible(edges) if nodes[s][0].startswith("x") and d in cells]
    assert xs == ["W_xh"] * 4
    steps = step_clusters(clusters)
    for s, d, _ in visible(edges):                                 # no edge longer than one step
        ks = [k for k, c in enumerate(steps) if s in c[2] or d in c[2]]
        assert len(ks) <= 2 and (len(ks) < 2 or abs(ks[0] - ks[1]) <= 1)
    assert viz.draw(elman(4), detail="cells").source == viz.draw(elman(4), detail="cells", weights="labels").source
    with pytest.raises(ValueError, match="weights"):
        viz.draw(elman(2), weights="edges")


# -- fold / unfold in one figure ------------------------------------------------------------------------

def test_unfold_draws_the_rolled_cell_equals_the_unrolled_steps():
    clusters, nodes, edges = parse(viz.draw(elman(4), view="unfold", detail="cells"))
    names = [c[1] for c in clusters]
    assert names[0] == "rolled:  t = 0 … 3" and [c[1] for c in step_clusters(clusters)][1:] == \
        [f"t = {k}" for k in range(4)]
    rolled = set(clusters[0][2])
    loops = [edge_label(a) for s, d, a in visible(edges) if s == d and s in rolled]
    assert loops == ["W_hh h ×4"]
    assert nodes["f_equals"][0] == "" or "=" in viz.draw(elman(4), view="unfold").source
    order = [s for s, d, a in edges if a.get("style") == "invis" and s.startswith(("f_", "a"))
             and d.startswith(("f_", "a")) and s != d]
    assert order[:2] == ["f_anchor", "f_eq"]                       # rolled, "=", then t = 0, 1, ...


# -- the backward animation -----------------------------------------------------------------------------

def sweep_loss(T):
    rng = np.random.default_rng(0)
    cell = nn.RNNCell(2, H, rng=rng)
    _, h = nn.unroll(cell, [tg.tensor(rng.standard_normal((1, 2)), dtype=np.float32, name="x") for _ in range(T)])
    return (h * h).sum(), cell


def test_animation_one_frame_per_step_deterministic(tmp_path):
    T = 5
    loss, cell = sweep_loss(T)
    path, frames = viz.animate_backward(loss, tmp_path / "a" / "sweep.svg")
    assert len(frames) == T and all(f.endswith(f"frame_{k:02d}.svg") for k, f in enumerate(frames))
    loss2, cell2 = sweep_loss(T)
    path2, frames2 = viz.animate_backward(loss2, tmp_path / "b" / "sweep.svg")
    for f, g in zip(frames + [path], frames2 + [path2]):
        assert open(f, "rb").read() == open(g, "rb").read()
    texts = [open(f, encoding="utf-8").read() for f in frames]
    coloured = [sum(t.count(f'fill="{c}"') for c in PALETTE) for t in texts]
    assert coloured == sorted(coloured) and coloured[0] < coloured[-1]     # the sweep goes back step by step
    assert f"reached t = {T - 1}" in texts[0] and "reached t = 0" in texts[-1]
    animated = open(path, encoding="utf-8").read()
    assert animated.count("<animate ") == T and 'calcMode="discrete"' in animated
    loss.backward()                                                # the sweep retained the graph
