"""Hand-written numpy BPTT (forward + backward, no framework): the baseline of `bptt.py`.

Batched row-vector convention, x_t of shape (B, D), h_t of shape (B, H), h_0 = 0, c_0 = 0:

    Elman:  h_t = tanh(x_t U + h_{t-1} W + b)
    LSTM:   k_t = act_k(x_t U_k + h_{t-1} W_k + b_k)  for gates k in i, f, o (sigmoid) and g (tanh)
            c_t = f_t * c_{t-1} + i_t * g_t,   h_t = o_t * tanh(c_t)
    GRU:    r_t = sigmoid(x_t U_r + h_{t-1} W_r + b_r),  z_t = sigmoid(x_t U_z + h_{t-1} W_z + b_z)
            n_t = tanh(x_t U_n + (r_t * h_{t-1}) W_n + b_n),  h_t = (1 - z_t) * n_t + z_t * h_{t-1}
    both:   yhat_t = h_t V + c,   loss = sum_t mean((yhat_t - y_t)**2)   (mean over the B*O entries)

Inputs are stacked as xs (T, B, D) and targets ys (T, B, O). Every step function takes
(params, xs, ys) and returns (loss, grads) with grads keyed like params, in the arrays' dtype.
Written for speed in the seeds' style: x_t is multiplied by the input weights inside the time loop
(not hoisted into one big matmul) and each gate has its own matmuls.
"""
import numpy as np

GATES = {"lstm": "ifog", "gru": "rzn"}


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def init_params(cell, D, H, O, rng, dtype=np.float32):
    """Uniform(-1/sqrt(H), 1/sqrt(H)) weights, as in the usual RNN initialisations."""
    s = 1.0 / np.sqrt(H)
    shapes = {"V": (H, O), "c": (O,)}
    if cell == "elman":
        shapes.update(U=(D, H), W=(H, H), b=(H,))
    else:
        for k in GATES[cell]:
            shapes.update({"U" + k: (D, H), "W" + k: (H, H), "b" + k: (H,)})
    return {n: rng.uniform(-s, s, shape).astype(dtype) for n, shape in shapes.items()}


def make_data(B, D, O, T, rng, dtype=np.float32):
    return rng.standard_normal((T, B, D)).astype(dtype), rng.standard_normal((T, B, O)).astype(dtype)


def _output(p, h, y, grads, scale):
    """Loss term of one step; adds dV, dc in place and returns (loss_t, dL/dh_t from the output)."""
    diff = h @ p["V"] + p["c"] - y
    grads["V"] += h.T @ (d := scale * diff)
    grads["c"] += d.sum(0)
    return np.vdot(diff, diff) / diff.size, d @ p["V"].T


def elman_step(p, xs, ys):
    T, B, _ = xs.shape
    H = p["W"].shape[0]
    hs = np.zeros((T + 1, B, H), xs.dtype)
    for t in range(T):
        np.tanh(xs[t] @ p["U"] + hs[t] @ p["W"] + p["b"], out=hs[t + 1])
    grads = {n: np.zeros_like(v) for n, v in p.items()}
    scale = 2.0 / ys[0].size
    loss, dh_next = 0.0, np.zeros((B, H), xs.dtype)
    for t in reversed(range(T)):
        loss_t, dh = _output(p, hs[t + 1], ys[t], grads, scale)
        loss += loss_t
        da = (dh + dh_next) * (1.0 - hs[t + 1] ** 2)
        grads["U"] += xs[t].T @ da
        grads["W"] += hs[t].T @ da
        grads["b"] += da.sum(0)
        dh_next = da @ p["W"].T
    return loss, grads


def lstm_step(p, xs, ys):
    T, B, _ = xs.shape
    H = p["Wi"].shape[0]
    hs = np.zeros((T + 1, B, H), xs.dtype)
    cs = np.zeros((T + 1, B, H), xs.dtype)
    cache = []                                   # per step: gate activations, tanh(c_t)
    for t in range(T):
        a = {k: xs[t] @ p["U" + k] + hs[t] @ p["W" + k] + p["b" + k] for k in GATES["lstm"]}
        gate = {k: _sigmoid(a[k]) for k in "ifo"}
        gate["g"] = np.tanh(a["g"])
        cs[t + 1] = gate["f"] * cs[t] + gate["i"] * gate["g"]
        tc = np.tanh(cs[t + 1])
        hs[t + 1] = gate["o"] * tc
        cache.append((gate, tc))
    grads = {n: np.zeros_like(v) for n, v in p.items()}
    scale = 2.0 / ys[0].size
    loss, dh_next, dc_next = 0.0, np.zeros((B, H), xs.dtype), np.zeros((B, H), xs.dtype)
    for t in reversed(range(T)):
        gate, tc = cache[t]
        loss_t, dh = _output(p, hs[t + 1], ys[t], grads, scale)
        loss += loss_t
        dh += dh_next
        dc = dh * gate["o"] * (1.0 - tc ** 2) + dc_next
        dgate = {"i": dc * gate["g"], "f": dc * cs[t], "o": dh * tc, "g": dc * gate["i"]}
        da = {k: dgate[k] * gate[k] * (1.0 - gate[k]) for k in "ifo"}
        da["g"] = dgate["g"] * (1.0 - gate["g"] ** 2)
        dh_next = 0.0
        for k in GATES["lstm"]:
            grads["U" + k] += xs[t].T @ da[k]
            grads["W" + k] += hs[t].T @ da[k]
            grads["b" + k] += da[k].sum(0)
            dh_next = dh_next + da[k] @ p["W" + k].T
        dc_next = dc * gate["f"]
    return loss, grads


def gru_step(p, xs, ys):
    T, B, _ = xs.shape
    H = p["Wr"].shape[0]
    hs = np.zeros((T + 1, B, H), xs.dtype)
    cache = []                                   # per step: r, z, n, r * h_{t-1}
    for t in range(T):
        x, h = xs[t], hs[t]
        r = _sigmoid(x @ p["Ur"] + h @ p["Wr"] + p["br"])
        z = _sigmoid(x @ p["Uz"] + h @ p["Wz"] + p["bz"])
        rh = r * h
        n = np.tanh(x @ p["Un"] + rh @ p["Wn"] + p["bn"])
        hs[t + 1] = (1.0 - z) * n + z * h
        cache.append((r, z, n, rh))
    grads = {n: np.zeros_like(v) for n, v in p.items()}
    scale = 2.0 / ys[0].size
    loss, dh_next = 0.0, np.zeros((B, H), xs.dtype)
    for t in reversed(range(T)):
        r, z, n, rh = cache[t]
        x, h = xs[t], hs[t]
        loss_t, dh = _output(p, hs[t + 1], ys[t], grads, scale)
        loss += loss_t
        dh += dh_next
        da_n = dh * (1.0 - z) * (1.0 - n ** 2)
        da_z = dh * (h - n) * z * (1.0 - z)
        drh = da_n @ p["Wn"].T
        da_r = drh * h * r * (1.0 - r)
        grads["Wn"] += rh.T @ da_n
        dh_next = dh * z + drh * r
        for k, da in (("r", da_r), ("z", da_z), ("n", da_n)):
            grads["U" + k] += x.T @ da
            grads["b" + k] += da.sum(0)
            if k != "n":
                grads["W" + k] += h.T @ da
                dh_next += da @ p["W" + k].T
    return loss, grads


STEPS = {"elman": elman_step, "lstm": lstm_step, "gru": gru_step}
