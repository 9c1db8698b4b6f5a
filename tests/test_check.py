"""tapegrad.check: planted derivation bugs are caught and located; kinks, eps sweep, op sweep, reports."""
import pathlib
import re
import runpy
import warnings

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import check, nn, reference
from tapegrad.testing import assert_grads_match, hand_from_reference, reference_case

T = 5


def elman_bptt(xs, ys, h0, P, bug=None):
    """Hand BPTT of reference_case("elman_bptt"), with an optional planted bug. Returns a hand dict."""
    U, W, b, V, c = (P[k] for k in "UWbVc")
    hs = {-1: h0}
    for t in range(T):
        hs[t] = np.tanh(xs[t] @ U + hs[t - 1] @ W + b)
    steps = {k: [np.zeros_like(v) for _ in range(T)] for k, v in P.items()}
    dh_steps = [np.zeros_like(h0) for _ in range(T)]
    dhnext = np.zeros_like(h0)
    for t in reversed(range(1 if bug == "loop stops one step early" else 0, T)):
        dy = (hs[t] @ V + c - ys[t]) / len(h0)
        dh = dy @ V.T + (0 if bug == "gradient from h_{t+1} dropped" else dhnext)
        da = dh if bug == "missing tanh'" or (bug == "missing tanh' at one step" and t == 2) else (1 - hs[t] ** 2) * dh
        h_in = hs[t] if bug == "state of the wrong step" else hs[t - 1]
        dW = h_in.T @ da
        dW = -dW if bug == "sign of W" else 2 * dW if bug == "factor 2 in W" else dW
        contributions = {"U": xs[t].T @ da, "W": dW.T if bug == "transposed matrix" else dW,
                         "b": da.sum(0), "V": hs[t].T @ dy, "c": dy.sum(0)}
        for k, v in contributions.items():
            steps[k][t] = v
        dh_steps[t] = dh
        dhnext = da @ W.T
    grads = {k: sum(v) for k, v in steps.items()}
    return hand_from_reference(grads, {"dW_steps": steps, "dh": dh_steps})


def planted(bug):
    case = reference_case("elman_bptt", T=T)
    arrays = {k: p.data for k, p in case.params.items()}
    return case, lambda: elman_bptt(case.data["xs"], case.data["ys"], case.data["h0"], arrays, bug)


# bug -> (parameters it makes wrong, first divergent step in backward order, diagnosis fragment)
BUGS = {
    "transposed matrix": ({"W"}, T - 1, "hand is the transpose of the tape's gradient"),
    "missing tanh'": ({"U", "W", "b"}, T - 1, ""),
    "missing tanh' at one step": ({"U", "W", "b"}, 2, ""),
    "gradient from h_{t+1} dropped": ({"U", "W", "b"}, T - 2, ""),
    "state of the wrong step": ({"W"}, T - 1, ""),
    "sign of W": ({"W"}, T - 1, "hand = -tape (sign flipped)"),
    "factor 2 in W": ({"W"}, T - 1, "hand = 2 x tape"),
    "loop stops one step early": ({"U", "W", "b", "V", "c"}, 0, ""),
}
# bug -> (the per-step series that get the diagnosis, its text): the classic BPTT slips, diagnosed per step
STEP_DIAGNOSES = {
    "transposed matrix": ({"W"}, "at every step: hand is the transpose of the tape's gradient"),
    "missing tanh'": ({"U", "W", "b", "h"}, "hand leaves out tanh's derivative (1 - h^2)"),
    "missing tanh' at one step": ({"U", "W", "b", "h"}, "at t = 2 hand leaves out tanh's derivative (1 - h^2)"),
    "gradient from h_{t+1} dropped": ({"U", "W", "b", "h"}, "the recurrent term is missing: hand's dL/dh_t leaves out "
                                                       "the gradient from step t+1 through W"),
    "state of the wrong step": ({"W"}, "off by one in time: hand's product at step t uses the operand of step t+1 "
                                       "(h_t where h_(t-1) belongs)"),
    "sign of W": ({"W"}, "at every step: hand = -tape (sign flipped)"),
    "factor 2 in W": ({"W"}, "at every step: hand = 2 x tape"),
}


@pytest.mark.parametrize("bug", STEP_DIAGNOSES)
def test_classic_bptt_slips_are_diagnosed_per_step(bug):
    series, text = STEP_DIAGNOSES[bug]
    case, hand = planted(bug)
    report = check.compare(case.loss_fn, case.params, hand=hand, per_step=True)
    for name in series:
        step = next(s for s in report.steps if s.name == name + "@steps")
        assert text in step.diagnosis, (name, step.diagnosis)
        if name in case.params:                                  # the parameter table points at it
            assert text in report[name].diagnosis or report[name].diagnosis
    assert text in str(report)


def test_non_square_transposed_hand_is_a_finding():
    case = reference_case("elman_bptt", T=T, D=2, H=5)
    hand = case.hand()
    hand["U"] = hand["U"].T                                      # (5, 2) for a (2, 5) parameter
    report = check.compare(case.loss_fn, case.params, hand=hand)
    u = report["U"]
    assert (u.band, u.blame) == ("wrong", "hand") and not report.ok
    assert u.diagnosis == "hand is the transpose of the tape's gradient (hand (5, 2), parameter (2, 5))"
    assert "U" in str(report) and "MISMATCH in U" in str(report)


def test_per_step_without_per_step_hand_entries_says_why():
    case = reference_case("elman_bptt", T=T)
    totals = {k: v for k, v in case.hand().items() if not k.endswith("@steps")}
    report = check.compare(case.loss_fn, case.params, hand=totals, per_step=True)
    assert report.ok and report.steps == []
    note = next(n for n in report.notes if "per_step=True" in n)
    assert "no per-step entries" in note and "t = 0..4" in note and "'W@steps'" in note and "'h@steps'" in note
    report = check.compare(case.loss_fn, case.params, hand=case.hand)
    assert any("per_step=False, so they are not checked" in n for n in report.notes)


def test_summary_grammar_one_series():
    case, hand = planted("state of the wrong step")
    text = str(check.compare(case.loss_fn, case.params, hand=hand, per_step=True))
    assert "W diverges there" in text and "diverge there" not in text.replace("diverges there", "")


def test_unplanted_hand_code_passes():
    case, hand = planted(None)
    report = check.compare(case.loss_fn, case.params, hand=hand, per_step=True)
    assert report.ok and report.first_divergent_step is None
    assert all(r.band == "fine" and r.judged == ("hand", "tape") for r in report.rows)


@pytest.mark.parametrize("bug", BUGS)
def test_planted_bug_is_attributed_to_its_parameters(bug):
    wrong, _, diagnosis = BUGS[bug]
    case, hand = planted(bug)
    report = check.compare(case.loss_fn, case.params, hand=hand)
    assert not report.ok
    assert {r.name for r in report.rows if not r.ok} == wrong
    for r in report.rows:
        assert r.band == ("wrong" if r.name in wrong else "fine")
        assert r.blame == ("hand" if r.name in wrong else "")
        assert r.tape_fd_rel < 1e-4          # the tape itself agrees with finite differences
    w = report[sorted(wrong)[0]]
    assert w.hand[w.worst] != pytest.approx(w.tape[w.worst], rel=1e-2)
    assert w.max_abs == pytest.approx(np.max(np.abs(w.hand - w.tape)))
    assert diagnosis in w.diagnosis


@pytest.mark.parametrize("bug", BUGS)
def test_planted_bug_is_located_in_time(bug):
    wrong, step, _ = BUGS[bug]
    case, hand = planted(bug)
    report = check.compare(case.loss_fn, case.params, hand=hand, per_step=True)
    assert report.first_divergent_step == step
    for s in report.steps:
        name = s.name.removesuffix("@steps")
        if name in case.params:
            assert s.first == (step if name in wrong else None), s.name
    assert f"first divergent time step (backward order): t = {step}: " in str(report)


def test_steps_shifted_by_one_are_diagnosed():
    case = reference_case("elman_bptt", T=T)
    hand = case.hand()
    hand["W@steps"] = hand["W@steps"][1:] + [np.zeros_like(hand["W"])]   # hand's step t holds step t+1
    report = check.compare(case.loss_fn, case.params, hand=hand, per_step=True)
    w = next(s for s in report.steps if s.name == "W@steps")
    assert w.first == T - 1 and "off by one in time" in w.diagnosis
    assert report["W"].ok           # the total is still right: only the per-step split is wrong
    assert not report.ok


def test_diagnoses_sign_and_factor():
    case = reference_case("elman_bptt", T=3)
    right = case.hand()
    report = check.compare(case.loss_fn, case.params, hand={"V": -right["V"], "c": right["c"] * 3})
    assert "sign flipped" in report["V"].diagnosis and report["V"].signs[0] == 0
    assert "hand = 3 x tape" in report["c"].diagnosis
    assert report["U"].hand is None and report["U"].judged == ("tape", "fd") and report["U"].ok


def test_both_zero_entries_are_no_error():
    w = tg.tensor(np.array([0.5, -0.3, 0.0]), requires_grad=True, name="w")
    unused = tg.tensor(np.ones((2, 2)), requires_grad=True, name="unused")
    loss_fn = lambda: (w * w).sum() + (unused * 0.0).sum()  # noqa: E731
    report = check.compare(loss_fn, {"w": w, "unused": unused}, hand={"w": 2 * w.data, "unused": np.zeros((2, 2))})
    assert report.ok and report["unused"].max_rel == 0 and report["w"].fd[2] == 0
    bad = check.compare(loss_fn, {"w": w, "unused": unused}, hand={"unused": np.eye(2) * 1e-3})
    assert bad["unused"].band == "wrong" and bad["unused"].max_rel == 1.0


def test_tiny_entries_are_judged_on_the_finite_difference_scale():
    """An entry far below what central differences resolve (1e-12 here) is not a relative error."""
    w = tg.tensor(np.array([1.0, 1e-6]), requires_grad=True)
    report = check.compare(lambda: (w * w * w).sum() * (1 / 3), {"w": w})
    assert report.ok and report["w"].tape[1] == pytest.approx(1e-12)


# -- kinks -------------------------------------------------------------------------------------------

KINKED = {   # op -> loss of x whose finite differences cross a kink at x[1] (x[0] is far from any)
    "relu": lambda x: tg.relu(x).sum(),
    "abs": lambda x: tg.abs(x).sum(),
    "clip": lambda x: tg.clip(x, -1.0, 1e-7).sum(),
    "max": lambda x: tg.max(x + tg.tensor(np.array([-3.0, 0.3, 0.0]))),     # x[1] + 0.3 ties x[2]
    "maximum": lambda x: tg.maximum(x, tg.tensor(np.zeros(3))).sum(),
}


@pytest.mark.parametrize("op", KINKED)
def test_finite_difference_across_a_kink_is_flagged_not_an_error(op):
    x = tg.tensor(np.array([0.8, 4e-7, 0.3]), requires_grad=True, name="x")
    loss_fn = lambda: KINKED[op](x) * 1.0  # noqa: E731
    report = check.compare(loss_fn, {"x": x})
    row = report["x"]
    assert row.kinked[1] and not row.kinked[0] and report.ok
    assert "crossed a kink" in str(report) and "kinks" in str(report)
    fd_err = abs(row.fd[1] - row.tape[1]) / max(abs(row.fd[1]), abs(row.tape[1]))
    assert fd_err > 0.1                # unflagged, this entry would read as a wrong gradient
    assert check.compare(loss_fn, {"x": x}, eps=1e-8)["x"].kinks == 0   # eps small enough: no crossing


def test_wrong_hand_is_caught_even_at_a_kink():
    x = tg.tensor(np.array([0.8, 4e-7, -0.3]), requires_grad=True)
    report = check.compare(lambda: tg.relu(x).sum(), {"x": x}, hand={"x": np.array([1.0, 0.0, 0.0])})
    assert report["x"].kinks == 1 and report["x"].band == "wrong" and report["x"].worst == (1,)


@pytest.mark.parametrize("condition", [lambda x: x.data > 0, lambda x: x > 0])
def test_leaky_relu_through_where_is_a_kink(condition):
    x = tg.tensor(np.array([0.5, -2e-7]), requires_grad=True)
    report = check.compare(lambda: tg.where(condition(x), x, x * 0.01).sum(), {"x": x})
    assert report["x"].kinked.tolist() == [False, True] and report.ok


# -- eps sweep ----------------------------------------------------------------------------------------

def test_eps_sweep_shows_truncation_then_round_off():
    W = tg.tensor(np.array([[0.3, -1.2], [0.7, 0.1]]), requires_grad=True, name="W")
    sweep = check.eps_sweep(lambda: (tg.tanh(W) ** 3).sum() + tg.exp(W).sum(), W, (1, 0))
    dominated = [r.truncation > r.round_off for r in sweep.rows]
    assert dominated[0] and not dominated[-1]              # large eps: truncation; tiny eps: round-off
    errors = {r.eps: r.abs_err for r in sweep.rows}
    assert errors[1e-1] > 1e-4 and errors[1e-12] > 1e-6 and errors[sweep.best] < 1e-9
    assert 1e-7 <= sweep.best <= 1e-3
    assert sweep.tape == pytest.approx(3 * np.tanh(0.7) ** 2 * (1 - np.tanh(0.7) ** 2) + np.exp(0.7), rel=1e-14)
    text = str(sweep)
    assert "W[1, 0]" in text and "truncation" in text and "round-off" in text


def test_eps_sweep_marks_kink_crossings():
    x = tg.tensor(np.array([1e-4, 2.0]), requires_grad=True)
    sweep = check.eps_sweep(lambda: tg.abs(x).sum(), x, 0, eps=[1e-2, 1e-3, 1e-6])
    assert [r.kink for r in sweep.rows] == [True, True, False] and sweep.best == 1e-6


# -- sweep: each primitive's rule ------------------------------------------------------------------------

def _bad_tanh():
    return tg.defop("bad_tanh", np.tanh, lambda g, ans, x: g * (1 - ans), keep="ans")


def test_sweep_passes_every_rule_of_the_reference_models():
    for model in ("lstm_bptt", "gru_bptt", "elman_loss_fun"):
        case = reference_case(model, T=3)
        with tg.Tape() as tape:
            case.loss_fn().backward()          # after backward: inputs come from the tape's outputs
        report = check.sweep(tape)
        assert report.ok, str(report)
        ops = {r.op: r for r in report.rows}
        assert {"matmul", "add", "tanh", "sum"} <= set(ops) and ops["matmul"].checked >= 3


def test_sweep_names_a_wrong_rule():
    bad_tanh = _bad_tanh()
    W = tg.tensor(np.random.default_rng(0).normal(size=(3, 3)), requires_grad=True)
    with tg.Tape() as tape:
        h = tg.tensor(np.ones((1, 3)))
        for t in range(3):
            with tg.scope(t=t):
                h = bad_tanh(h @ W)
        h.sum()
    report = check.sweep(tape)
    assert report.wrong == ["bad_tanh"] and not report.ok
    assert "bad_tanh" in str(report) and "WRONG rule" in str(report)


def test_compare_blames_the_tape_and_names_the_primitive():
    """The hand derivation is right but a custom primitive's rule is not: the report says so."""
    bad_tanh = _bad_tanh()
    case = reference_case("elman_bptt", T=3)
    P, d = case.params, case.data

    def loss_fn():
        h, loss = tg.Tensor(d["h0"]), 0.0
        for t in range(3):
            with tg.scope(t=t):
                h = bad_tanh(d["xs"][t] @ P["U"] + h @ P["W"] + P["b"])
                loss = loss + ((h @ P["V"] + P["c"] - d["ys"][t]) ** 2).sum() * (0.5 / 3)
        return loss
    report = check.compare(loss_fn, P, hand=case.hand)
    assert report["W"].blame == "tape" and report["W"].judged == ("tape", "fd")
    assert "the rule of 'bad_tanh' wrong" in str(report)


def test_custom_fused_cell_checked_by_compare_and_sweep():
    """A hand-fused Elman cell as one primitive, as docs/gradcheck.md shows."""
    def forward(x, h, U, W, b):
        return np.tanh(x @ U + h @ W + b)

    def da(g, ans):
        return g * (1 - ans * ans)
    cell = tg.defop("elman_cell", forward,
                    lambda g, ans, x, h, U, W, b: da(g, ans) @ U.T,
                    lambda g, ans, x, h, U, W, b: da(g, ans) @ W.T,
                    lambda g, ans, x, h, U, W, b: x.T @ da(g, ans),
                    lambda g, ans, x, h, U, W, b: h.T @ da(g, ans),
                    lambda g, ans, x, h, U, W, b: da(g, ans).sum(0), keep="both")
    case = reference_case("elman_bptt", T=4)
    P, d = case.params, case.data

    def loss_fn():
        h, loss = tg.Tensor(d["h0"]), 0.0
        for t in range(4):
            with tg.scope(t=t):
                h = cell(d["xs"][t], h, P["U"], P["W"], P["b"])
                h.name = "h"
                loss = loss + ((h @ P["V"] + P["c"] - d["ys"][t]) ** 2).sum() * (0.5 / 3)
        return loss
    report = check.compare(loss_fn, P, hand=case.hand, per_step=True)
    assert report.ok and report.first_divergent_step is None
    with tg.Tape() as tape:
        loss_fn()
    assert check.sweep(tape).ok and "elman_cell" in {r.op for r in check.sweep(tape).rows}


# -- API details -------------------------------------------------------------------------------------------

def test_report_renders_as_text_markdown_and_html():
    case, hand = planted("missing tanh'")
    report = check.compare(case.loss_fn, case.params, hand=hand, per_step=True)
    text, md, page = str(report), report._repr_markdown_(), report._repr_html_()
    assert "param" in text and "wrong (hand)" in text and "MISMATCH in U, W, b" in text
    assert md.startswith("| param |") and "|---|" in md and "**MISMATCH" in md
    assert page.startswith("<table>") and "<td>W@steps</td>" in page and "&#x27;" not in page.split("<p>")[0]


def test_float32_parameters_warn():
    w = tg.tensor(np.array([0.5, -0.3], np.float32), requires_grad=True)
    with pytest.warns(UserWarning, match="not float64"):
        report = check.compare(lambda: (w * w).sum(), {"w": w}, eps=1e-3)
    assert "not float64" in report.notes[0]


def test_float32_check_that_cannot_resolve_the_gradient_is_inconclusive():
    rng = np.random.default_rng(0)
    w = tg.tensor(rng.normal(size=(3, 3)).astype(np.float32), requires_grad=True)
    x = tg.tensor(rng.normal(size=(4, 3)).astype(np.float32))
    with pytest.warns(UserWarning, match="not float64"):
        report = check.compare(lambda w: tg.tanh(x @ w).sum(), {"w": w})
    assert not report.ok and report.inconclusive and report.verdict == "inconclusive"
    assert report["w"].band == "inconclusive" and "resolve only about" in report["w"].diagnosis
    assert "INCONCLUSIVE for w" in str(report) and "check in float64" in str(report)
    w64 = tg.tensor(w.data.astype(np.float64), requires_grad=True)
    x64 = x.data.astype(np.float64)
    assert check.compare(lambda w: tg.tanh(tg.tensor(x64) @ w).sum(), {"w": w64}).verdict == "ok"


def test_tape_disagreement_without_evidence_does_not_blame_smoothness_or_eps():
    w = tg.tensor(np.array([0.5, -1.5, 2.0]), requires_grad=True)
    report = check.compare(lambda w: (w * tg.tensor(w.data)).sum(), {"w": w})     # .data: hidden from the tape
    assert not report.ok and report["w"].blame == "tape"
    text = " ".join(report.notes)
    assert "the tape disagrees with finite differences in w" in text and "check.sweep" in text
    assert "smooth" not in text and "eps is off" not in text and "does not see" in text


def test_tape_disagreement_with_a_kink_on_the_tape_says_so():
    w = tg.tensor(np.array([0.5, -1.5, 2.0]), requires_grad=True)
    report = check.compare(lambda w: tg.relu(w * tg.tensor(w.data)).sum(), {"w": w})
    assert "records kink ops (relu)" in " ".join(report.notes)


def test_params_may_be_a_module_and_hand_a_function():
    """A tapegrad.nn cell unrolled by nn.unroll, which projects the inputs of all steps before the loop."""
    cell = nn.RNNCell(2, 4, dtype=np.float64, rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    xs, ys, V, c = rng.normal(size=(3, T, 2)), rng.normal(size=(T, 3, 2)), rng.normal(size=(4, 2)), rng.normal(size=2)

    def loss_fn():
        out, _ = nn.unroll(cell, tg.tensor(xs))                    # (B, T, H)
        return ((out @ V + c - ys.transpose(1, 0, 2)) ** 2).sum() * (0.5 / 3)

    def hand():
        P = {"U": cell.W_x.data, "W": cell.W_h.data, "b": cell.b.data, "V": V, "c": c}
        _, g, _, steps = reference.elman_bptt(xs.transpose(1, 0, 2), ys, np.zeros((3, 4)), P, per_step=True)
        return {"W_x": g["U"], "W_h": g["W"], "b": g["b"],
                "W_h@steps": steps["dW_steps"]["W"], "W_x@steps": steps["dW_steps"]["U"]}
    report = check.compare(loss_fn, cell, hand=hand, per_step=True)
    assert report.ok and [r.name for r in report.rows] == ["W_x", "W_h", "b"]
    assert [s.name for s in report.steps] == ["W_h@steps"]
    assert "W_x is used outside any scope(t=...)" in report.notes[0] and len(report.notes) == 1


def test_bad_arguments_raise_clear_errors():
    case = reference_case("elman_bptt", T=2)
    right = case.hand()
    with pytest.raises(ValueError, match=r"hand\['W'\] has shape \(4,\) but the parameter has shape \(4, 4\)"):
        check.compare(case.loss_fn, case.params, hand={"W": right["b"]})
    with pytest.raises(tg.InvalidValueError, match="'Wxh', which is not a parameter"):
        check.compare(case.loss_fn, case.params, hand={"Wxh": right["W"]})
    with pytest.raises(ValueError, match="no recorded tensor is named 'state'"):
        check.compare(case.loss_fn, case.params, hand={"state@steps": right["h@steps"]}, per_step=True)
    with pytest.raises(ValueError, match="scalar Tensor"):
        check.compare(lambda: case.params["W"] * 2, case.params)


# -- the pytest helper -------------------------------------------------------------------------------------

def test_assert_grads_match_passes_and_returns_the_report():
    case = reference_case("gru_bptt", T=3)
    assert assert_grads_match(case.loss_fn, case.params, hand=case.hand, per_step=True).ok


def test_assert_grads_match_fails_with_the_report():
    case, hand = planted("gradient from h_{t+1} dropped")
    with pytest.raises(AssertionError) as err:
        assert_grads_match(case.loss_fn, case.params, hand=hand, per_step=True)
    message = str(err.value)
    assert message.startswith("gradients do not match\nparam  shape")
    assert "MISMATCH in U, W, b" in message and f"backward order): t = {T - 2}" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert str(check.compare(case.loss_fn, case.params, hand=hand, per_step=True)) in message


def _rounding_masked(text):
    """The text without what depends on rounding, so on the BLAS: tiny numbers in e-notation, the
    rows of an eps sweep, and all but the first and last cell of rows judged fine (which entry is
    the worst of errors at rounding level is noise)."""
    lines = []
    for line in text.splitlines():
        if re.match(r"\de-\d\d ", line):
            line = "<eps row>"
        elif line.endswith(" fine"):
            line = f"{line.split()[0]} ... fine"
        lines.append(re.sub(r"-?\d\.\d+e-(0[7-9]|[1-9]\d)|0\.00e\+00", "<tiny>", line))
    return "\n".join(lines)


def test_walkthrough_prints_what_the_doc_shows(capsys):
    docs = pathlib.Path(__file__).resolve().parent.parent / "docs"
    runpy.run_path(str(docs / "gradcheck_walkthrough.py"), run_name="__main__")
    printed = _rounding_masked(capsys.readouterr().out)
    blocks = re.findall(r"```text\n(.*?)\n```", (docs / "gradcheck.md").read_text(), re.S)
    assert len(blocks) == 5
    for block in blocks:
        assert _rounding_masked(block) in printed
