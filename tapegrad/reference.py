"""Hand-derived backpropagation through time in plain numpy, float64.

These are the known-good derivations that tapegrad's tape and gradcheck are compared
against. They follow the seed documents: a forward loop stores every state, then a backward
loop adds up the weight gradients and carries ``dhnext`` back one step at a time.
This module imports nothing but numpy.

Two conventions:

* ``elman_loss_fun`` is the min-char-rnn ``lossFun`` from the cos-regression seed. It uses
  column vectors: ``h_t = tanh(Wxh x_t + Whh h_{t-1} + bh)``, ``y_t = Why h_t + by``,
  ``loss = sum_t sum((y_t - target_t)**2) / (2T)``.
* ``elman_bptt``, ``lstm_bptt`` and ``gru_bptt`` use batched row vectors: ``xs`` (T, B, D),
  ``ys`` (T, B, O), states (B, H). Each has a linear head ``yhat_t = h_t V + c`` and
  ``loss = sum_t 0.5 * sum((yhat_t - ys[t])**2) / B``.

Every function returns ``(loss, grads, last_state)``. ``grads`` has the same keys as the
parameters. With ``per_step=True`` it returns ``(loss, grads, last_state, steps)``:
``steps["dW_steps"][name][t]`` is the gradient through the use of parameter ``name`` at
step t, and these add up to ``grads[name]``. ``steps["dh"][t]`` is the total derivative
dL/dh_t, which includes the paths through later steps.
"""

import numpy as np

__all__ = ["elman_loss_fun", "elman_bptt", "lstm_bptt", "gru_bptt"]

# (input weight, recurrent weight, bias) of each pre-activation ``x Wx + h Wh + b``.
_ELMAN = ("U", "W", "b")
_LSTM_GATES = {g: (f"W_{g}", f"U_{g}", f"b_{g}") for g in "ifog"}
_GRU_GATES = {g: (f"U_{g}", f"W_{g}", f"b_{g}") for g in "zrh"}
_HEAD = ("V", "c")
_ELMAN_KEYS = _ELMAN + _HEAD
_LSTM_KEYS = tuple(k for names in _LSTM_GATES.values() for k in names) + _HEAD
_GRU_KEYS = tuple(k for names in _GRU_GATES.values() for k in names) + _HEAD


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _sigmoid(a):
    # Equal to 1 / (1 + exp(-a)), but it cannot overflow.
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def _take(params, names):
    """Return the named parameters as float64 arrays, in a new dict. A missing name raises KeyError."""
    return {k: _f64(params[k]) for k in names}


def _zero_grads(params, T, per_step):
    """Return zero totals and, when per_step is set, a list of T slots for each parameter."""
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    dW_steps = {k: [None] * T for k in params} if per_step else None
    return grads, dW_steps


def _accumulate(grads, dW_steps, t, contributions):
    """Add step t's contributions to the totals, and record them when dW_steps is on."""
    for k, d in contributions.items():
        grads[k] += d
        if dW_steps is not None:
            dW_steps[k][t] = d


def _result(loss, grads, last, dW_steps, dh):
    if dW_steps is None:
        return loss, grads, last
    return loss, grads, last, {"dW_steps": dW_steps, "dh": dh}


def _affine(x, h, params, names):
    """Return x @ Wx + h @ Wh + b, where names = (Wx, Wh, b)."""
    wx, wh, b = names
    return x @ params[wx] + h @ params[wh] + params[b]


def _affine_grads(da, x, h, names):
    """Return the gradients of _affine's (Wx, Wh, b), given da = dL/d(pre-activation)."""
    wx, wh, b = names
    return {wx: x.T @ da, wh: h.T @ da, b: da.sum(axis=0)}


def _head(h, y, params):
    """Return the loss term 0.5 * sum((h V + c - y)**2) / B of one step, and dL/dyhat."""
    err = h @ params["V"] + params["c"] - y
    return 0.5 * np.sum(err**2) / len(h), err / len(h)


def _head_grads(dy, h, params):
    """Return the gradients of V and c, and dL/dh through the head, given dy = dL/dyhat."""
    return {"V": h.T @ dy, "c": dy.sum(axis=0)}, dy @ params["V"].T


def elman_loss_fun(inputs, targets, hprev, Wxh, Whh, Why, bh, by, clip=None, per_step=False):
    """Compute the cos-regression seed's min-char-rnn ``lossFun`` and the exact gradient of its loss.

    inputs: T values or D-vectors. targets: T values or O-vectors. hprev: (H, 1).
    Wxh (H, D), Whh (H, H), Why (O, H), bh (H, 1), by (O, 1).
    h_t = tanh(Wxh x_t + Whh h_{t-1} + bh), y_t = Why h_t + by,
    loss = sum_t sum((y_t - target_t)**2) / (2T). When O == 1 this is the seed's loss.
    Returns (loss, grads, hlast). grads has keys "Wxh" "Whh" "Why" "bh" "by"; hlast is (H, 1).
    With per_step=True it also returns {"dW_steps", "dh"}, with dh[t] of shape (H, 1).
    The seed differs in two ways: it does not divide dy by T, so its gradients are T times
    these, and it always clips. Here clip=None means no clipping; a number clips every total
    gradient to [-clip, clip] with np.clip. The per-step values are always unclipped.
    """
    Wxh, Whh, Why, bh, by = (_f64(p) for p in (Wxh, Whh, Why, bh, by))
    T = len(inputs)
    xs, ts, hs, ys = {}, {}, {}, {}
    hs[-1] = _f64(hprev)
    loss = 0.0
    for t in range(T):  # forward pass
        xs[t] = _f64(inputs[t]).reshape(-1, 1)
        ts[t] = _f64(targets[t]).reshape(-1, 1)
        hs[t] = np.tanh(Wxh @ xs[t] + Whh @ hs[t - 1] + bh)
        ys[t] = Why @ hs[t] + by
        loss += np.sum(np.square(ys[t] - ts[t]))
    loss /= 2 * T

    grads, dW_steps = _zero_grads(dict(Wxh=Wxh, Whh=Whh, Why=Why, bh=bh, by=by), T, per_step)
    dh_steps = [None] * T
    dhnext = np.zeros_like(hs[-1])
    for t in reversed(range(T)):  # backward pass
        dy = (ys[t] - ts[t]) / T
        dh = Why.T @ dy + dhnext
        dhraw = (1 - hs[t] * hs[t]) * dh  # through tanh
        _accumulate(grads, dW_steps, t, {
            "Wxh": dhraw @ xs[t].T, "Whh": dhraw @ hs[t - 1].T,
            "Why": dy @ hs[t].T, "bh": dhraw, "by": dy,
        })
        dhnext = Whh.T @ dhraw
        dh_steps[t] = dh
    if clip is not None:
        for dparam in grads.values():
            np.clip(dparam, -clip, clip, out=dparam)
    return _result(float(loss), grads, hs[T - 1], dW_steps, dh_steps)


def elman_bptt(xs, ys, h0, params, per_step=False):
    """Run a batched Elman RNN with a linear head, and backpropagate through time.

    xs (T, B, D), ys (T, B, O), h0 (B, H).
    params: U (D, H), W (H, H), b (H,), V (H, O), c (O,).
    h_t = tanh(x_t U + h_{t-1} W + b), yhat_t = h_t V + c,
    loss = sum_t 0.5 * sum((yhat_t - ys[t])**2) / B.
    Returns (loss, grads, hT), plus {"dW_steps", "dh"} when per_step is set; dh[t] is (B, H).
    """
    params = _take(params, _ELMAN_KEYS)
    xs, ys = _f64(xs), _f64(ys)
    T = len(xs)
    hs, dys = {-1: _f64(h0)}, {}
    loss = 0.0
    for t in range(T):
        hs[t] = np.tanh(_affine(xs[t], hs[t - 1], params, _ELMAN))
        loss_t, dys[t] = _head(hs[t], ys[t], params)
        loss += loss_t

    grads, dW_steps = _zero_grads(params, T, per_step)
    dh_steps = [None] * T
    dhnext = np.zeros_like(hs[-1])
    for t in reversed(range(T)):
        head, dh_out = _head_grads(dys[t], hs[t], params)
        dh = dh_out + dhnext
        da = (1 - hs[t] ** 2) * dh
        _accumulate(grads, dW_steps, t, {**head, **_affine_grads(da, xs[t], hs[t - 1], _ELMAN)})
        dhnext = da @ params["W"].T
        dh_steps[t] = dh
    return _result(float(loss), grads, hs[T - 1], dW_steps, dh_steps)


def lstm_bptt(xs, ys, h0, c0, params, per_step=False):
    """Run a batched LSTM with a linear head, and backpropagate through time.

    xs (T, B, D), ys (T, B, O), h0 and c0 (B, H).
    params: W_i W_f W_o W_g (D, H), U_i U_f U_o U_g (H, H), b_i b_f b_o b_g (H,), V (H, O), c (O,).
    i, f, o = sigmoid(x W_k + h U_k + b_k), g = tanh(x W_g + h U_g + b_g),
    c_t = f c_{t-1} + i g, h_t = o tanh(c_t), yhat_t = h_t V + c,
    loss = sum_t 0.5 * sum((yhat_t - ys[t])**2) / B.
    Returns (loss, grads, (hT, cT)), plus {"dW_steps", "dh"} when per_step is set; dh[t] is (B, H).
    """
    params = _take(params, _LSTM_KEYS)
    xs, ys = _f64(xs), _f64(ys)
    T = len(xs)
    hs, cs, tanh_cs, gates, dys = {-1: _f64(h0)}, {-1: _f64(c0)}, {}, {}, {}
    loss = 0.0
    for t in range(T):
        a = {k: _affine(xs[t], hs[t - 1], params, names) for k, names in _LSTM_GATES.items()}
        i, f, o, g = _sigmoid(a["i"]), _sigmoid(a["f"]), _sigmoid(a["o"]), np.tanh(a["g"])
        gates[t] = i, f, o, g
        cs[t] = f * cs[t - 1] + i * g
        tanh_cs[t] = np.tanh(cs[t])
        hs[t] = o * tanh_cs[t]
        loss_t, dys[t] = _head(hs[t], ys[t], params)
        loss += loss_t

    grads, dW_steps = _zero_grads(params, T, per_step)
    dh_steps = [None] * T
    dhnext, dcnext = np.zeros_like(hs[-1]), np.zeros_like(cs[-1])
    for t in reversed(range(T)):
        contributions, dh_out = _head_grads(dys[t], hs[t], params)
        dh = dh_out + dhnext
        i, f, o, g = gates[t]
        dc = dcnext + dh * o * (1 - tanh_cs[t] ** 2)
        da = {  # dL/d(pre-activation) of each gate
            "i": dc * g * i * (1 - i),
            "f": dc * cs[t - 1] * f * (1 - f),
            "o": dh * tanh_cs[t] * o * (1 - o),
            "g": dc * i * (1 - g**2),
        }
        for k, names in _LSTM_GATES.items():
            contributions.update(_affine_grads(da[k], xs[t], hs[t - 1], names))
        _accumulate(grads, dW_steps, t, contributions)
        dhnext = sum(da[k] @ params[f"U_{k}"].T for k in _LSTM_GATES)
        dcnext = dc * f
        dh_steps[t] = dh
    return _result(float(loss), grads, (hs[T - 1], cs[T - 1]), dW_steps, dh_steps)


def gru_bptt(xs, ys, h0, params, per_step=False):
    """Run a batched GRU (the lecture seed's, with the reset gate applied before the matmul) and backpropagate.

    xs (T, B, D), ys (T, B, O), h0 (B, H). The names follow the seed: U is the input weight
    and W the recurrent one.
    params: U_z U_r U_h (D, H), W_z W_r W_h (H, H), b_z b_r b_h (H,), V (H, O), c (O,).
    z = sigmoid(x U_z + h W_z + b_z), r = sigmoid(x U_r + h W_r + b_r),
    h~ = tanh(x U_h + (r h) W_h + b_h), h_t = (1 - z) h~ + z h_{t-1}, yhat_t = h_t V + c,
    loss = sum_t 0.5 * sum((yhat_t - ys[t])**2) / B.
    Returns (loss, grads, hT), plus {"dW_steps", "dh"} when per_step is set; dh[t] is (B, H).
    """
    params = _take(params, _GRU_KEYS)
    xs, ys = _f64(xs), _f64(ys)
    T = len(xs)
    hs, gates, dys = {-1: _f64(h0)}, {}, {}
    loss = 0.0
    for t in range(T):
        hprev = hs[t - 1]
        z = _sigmoid(_affine(xs[t], hprev, params, _GRU_GATES["z"]))
        r = _sigmoid(_affine(xs[t], hprev, params, _GRU_GATES["r"]))
        hcand = np.tanh(_affine(xs[t], r * hprev, params, _GRU_GATES["h"]))
        gates[t] = z, r, hcand
        hs[t] = (1 - z) * hcand + z * hprev
        loss_t, dys[t] = _head(hs[t], ys[t], params)
        loss += loss_t

    grads, dW_steps = _zero_grads(params, T, per_step)
    dh_steps = [None] * T
    dhnext = np.zeros_like(hs[-1])
    for t in reversed(range(T)):
        hprev = hs[t - 1]
        z, r, hcand = gates[t]
        contributions, dh_out = _head_grads(dys[t], hs[t], params)
        dh = dh_out + dhnext
        da_h = dh * (1 - z) * (1 - hcand**2)
        drh = da_h @ params["W_h"].T  # dL/d(r h_{t-1})
        da_z = dh * (hprev - hcand) * z * (1 - z)
        da_r = drh * hprev * r * (1 - r)
        contributions.update(_affine_grads(da_z, xs[t], hprev, _GRU_GATES["z"]))
        contributions.update(_affine_grads(da_r, xs[t], hprev, _GRU_GATES["r"]))
        contributions.update(_affine_grads(da_h, xs[t], r * hprev, _GRU_GATES["h"]))
        _accumulate(grads, dW_steps, t, contributions)
        dhnext = dh * z + drh * r + da_z @ params["W_z"].T + da_r @ params["W_r"].T
        dh_steps[t] = dh
    return _result(float(loss), grads, hs[T - 1], dW_steps, dh_steps)
