"""The walk-through of docs/gradcheck.md: every output block there is printed by this script.

    python docs/gradcheck_walkthrough.py
"""
import numpy as np

import tapegrad as tg
from tapegrad import check, reference
from tapegrad.testing import hand_from_reference, reference_case


def section(title):
    print(f"\n## {title}\n")


# -- 1. The seed's Elman derivation (min-char-rnn lossFun) ------------------------------------------
section("1. Elman: the seed's hand derivation")
T, D, H, O = 5, 2, 4, 1
rng = np.random.default_rng(1)
P = {"Wxh": rng.normal(0, 0.5, (H, D)), "Whh": rng.normal(0, 0.5, (H, H)), "Why": rng.normal(0, 0.5, (O, H)),
     "bh": rng.normal(0, 0.5, (H, 1)), "by": rng.normal(0, 0.5, (O, 1))}
xs, targets, hprev = rng.normal(size=(T, D, 1)), rng.normal(size=(T, O, 1)), np.zeros((H, 1))
params = {k: tg.tensor(v, requires_grad=True, name=k) for k, v in P.items()}


def loss_fn():
    """The seed's forward pass, with tapegrad ops: step t runs in scope(t=t) and names its state h."""
    p, h, loss = params, tg.tensor(hprev), 0.0
    for t in range(T):
        with tg.scope(t=t):
            h = tg.tanh(p["Wxh"] @ xs[t] + p["Whh"] @ h + p["bh"])
            h.name = "h"
            y = p["Why"] @ h + p["by"]
            loss = loss + ((y - targets[t]) ** 2).sum() * (1 / (2 * T))
    return loss


def hand():
    """The hand-derived gradients: totals, per-step contributions "W@steps" and dL/dh_t "h@steps"."""
    arrays = {k: p.data for k, p in params.items()}
    _, grads, _, steps = reference.elman_loss_fun(xs, targets, hprev, **arrays, per_step=True)
    return hand_from_reference(grads, steps)


print(check.compare(loss_fn, params, hand=hand, per_step=True))

# -- 2. A wrong LSTM derivation -------------------------------------------------------------------
section("2. LSTM: a derivation with a missing o_t")


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def my_lstm_bptt(xs, ys, h0, c0, P):
    """A hand-written LSTM BPTT (tapegrad.reference conventions) with one planted mistake."""
    T, B = len(xs), len(h0)
    hs, cs, gates = {-1: h0}, {-1: c0}, {}
    for t in range(T):
        a = {k: xs[t] @ P[f"W_{k}"] + hs[t - 1] @ P[f"U_{k}"] + P[f"b_{k}"] for k in "ifog"}
        i, f, o, g = sigmoid(a["i"]), sigmoid(a["f"]), sigmoid(a["o"]), np.tanh(a["g"])
        gates[t] = i, f, o, g
        cs[t] = f * cs[t - 1] + i * g
        hs[t] = o * np.tanh(cs[t])
    grads = {k: np.zeros_like(v) for k, v in P.items()}
    steps = {k: [None] * T for k in P}
    dh_steps = [None] * T
    dhnext, dcnext = np.zeros_like(h0), np.zeros_like(c0)
    for t in reversed(range(T)):
        i, f, o, g = gates[t]
        dy = (hs[t] @ P["V"] + P["c"] - ys[t]) / B
        dh = dy @ P["V"].T + dhnext
        dc = dcnext + dh * (1 - np.tanh(cs[t]) ** 2)          # BUG: should be dh * o * (1 - tanh(c_t)^2)
        da = {"i": dc * g * i * (1 - i), "f": dc * cs[t - 1] * f * (1 - f),
              "o": dh * np.tanh(cs[t]) * o * (1 - o), "g": dc * i * (1 - g ** 2)}
        contrib = {"V": hs[t].T @ dy, "c": dy.sum(0)}
        for k in "ifog":
            contrib.update({f"W_{k}": xs[t].T @ da[k], f"U_{k}": hs[t - 1].T @ da[k], f"b_{k}": da[k].sum(0)})
        for k, v in contrib.items():
            grads[k] += v
            steps[k][t] = v
        dh_steps[t] = dh
        dhnext = sum(da[k] @ P[f"U_{k}"].T for k in "ifog")
        dcnext = dc * f
    return hand_from_reference(grads, {"dW_steps": steps, "dh": dh_steps})


lstm = reference_case("lstm_bptt", T=5, B=3, D=2, H=4, O=2)
d = lstm.data
report = check.compare(lstm.loss_fn, lstm.params, per_step=True,
                       hand=lambda: my_lstm_bptt(d["xs"], d["ys"], d["h0"], d["c0"],
                                                 {k: p.data for k, p in lstm.params.items()}))
print(report)

# -- 3. How good are the finite differences? -------------------------------------------------------
section("3. eps sweep of one entry")
print(check.eps_sweep(lstm.loss_fn, lstm.params["U_i"], report["U_i"].worst))

# -- 4. Kinks -----------------------------------------------------------------------------------------
section("4. relu: finite differences across a kink")
W = tg.tensor(np.array([[0.5, -1.0], [2.0, 0.25]]), requires_grad=True, name="W")
x, bias = np.array([[1.0, 0.5]]), np.array([-1.5 + 3e-7, 1.0])   # first pre-activation: 3e-7, near 0


def relu_loss():
    return (tg.relu(x @ W + bias) * np.array([2.0, 3.0])).sum() + 0.5 * (W * W).sum()


relu_report = check.compare(relu_loss, {"W": W})
print(relu_report)
row = relu_report["W"]
print(f"flagged entries {[tuple(map(int, i)) for i in np.argwhere(row.kinked)]}: "
      f"fd {np.round(row.fd[row.kinked], 6).tolist()}, tape {np.round(row.tape[row.kinked], 6).tolist()}")

# -- 5. Your own primitive -------------------------------------------------------------------------------
section("5. A hand-fused Elman cell as a primitive")


def da(g, ans):                        # dL/d(pre-activation) from dL/dh and h = tanh(...)
    return g * (1 - ans * ans)


def fused_cell(dW_rule):
    return tg.defop("elman_cell", lambda x, h, U, W, b: np.tanh(x @ U + h @ W + b),
                    None,                                             # x: data, not differentiated
                    lambda g, ans, x, h, U, W, b: da(g, ans) @ W.T,   # dL/dh_{t-1}
                    lambda g, ans, x, h, U, W, b: x.T @ da(g, ans),   # dL/dU
                    dW_rule,                                          # dL/dW
                    lambda g, ans, x, h, U, W, b: da(g, ans).sum(0),  # dL/db
                    keep="both")


elman = reference_case("elman_bptt", T=4)
for label, dW in [("right", lambda g, ans, x, h, U, W, b: h.T @ da(g, ans)),
                  ("wrong", lambda g, ans, x, h, U, W, b: h.T @ g)]:           # forgot tanh'
    cell, p, d = fused_cell(dW), elman.params, elman.data

    def cell_loss():
        h, loss = tg.tensor(d["h0"]), 0.0
        for t in range(4):
            with tg.scope(t=t):
                h = cell(d["xs"][t], h, p["U"], p["W"], p["b"])
                loss = loss + ((h @ p["V"] + p["c"] - d["ys"][t]) ** 2).sum() * (0.5 / 3)
        return loss
    with tg.Tape() as tape:
        cell_loss()
    print(f"{label} rule, check.sweep(tape):")
    print(check.sweep(tape))
    print()
print("compare with the (right) hand derivation, through the wrong primitive:")
print(check.compare(cell_loss, elman.params, hand=elman.hand))
