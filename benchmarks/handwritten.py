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


# -- the careful baseline ---------------------------------------------------------------------------
# What a performance-minded numpy programmer writes: gate weights fused into one (D, G*H) and one
# (H, G*H) matrix (fused once, outside the step), the input projection of all T steps and the output
# layer of all T steps as one product each, buffers preallocated once and reused by every step,
# elementwise work in place (`out=`), and each weight's gradient as one product over all steps
# (sum_t h_{t-1}^T da_t = H_prev^T dA with the steps stacked). Same math, loss and gradients as the
# step functions above (checked in tests/test_compile.py); `make_careful(cell, p, T, B)` returns
# step(xs, ys) -> (loss, grads), grads keyed like p (per-gate views into the fused gradients).

class _CarefulOutput:
    """The output layer and mean squared error of all steps at once, and their gradients (V, c, dL/dh_t)."""

    def output_layer(self, hs, ys):
        T, B, H = self.T, self.B, self.H
        Hs = hs[1:].reshape(T * B, H)
        Y = self.Y
        np.dot(Hs, self.V, out=Y)
        Y += self.c
        Y -= ys.reshape(T * B, -1)                               # diff
        loss = np.vdot(Y, Y) / (B * Y.shape[1])
        Y *= 2.0 / (B * Y.shape[1])                              # d loss / d yhat
        np.dot(Hs.T, Y, out=self.g["V"])
        np.add.reduce(Y, axis=0, out=self.g["c"])
        np.dot(Y, self.VT, out=self.dH)
        return loss, self.dH.reshape(T, B, H)


class CarefulLSTM(_CarefulOutput):
    """LSTM with fused gates in the order i, f, o (sigmoid, one call) then g (tanh)."""
    order = "ifog"

    def __init__(self, p, T, B):
        H = p["Wi"].shape[0]
        D, O = p["Ui"].shape[0], p["V"].shape[1]
        dt = p["V"].dtype
        self.H, self.T, self.B = H, T, B
        self.Wx = np.ascontiguousarray(np.concatenate([p["U" + k] for k in self.order], 1))   # (D, 4H)
        self.Wh = np.ascontiguousarray(np.concatenate([p["W" + k] for k in self.order], 1))   # (H, 4H)
        self.WhT = np.ascontiguousarray(self.Wh.T)
        self.b = np.concatenate([p["b" + k] for k in self.order])
        self.V, self.c = p["V"], p["c"]
        self.VT = np.ascontiguousarray(self.V.T)
        z = lambda *shape: np.zeros(shape, dt)   # noqa: E731
        self.A = z(T, B, 4 * H)          # pre-activations, then (in place) the gate activations
        self.hs, self.cs, self.tc = z(T + 1, B, H), z(T + 1, B, H), z(T, B, H)
        self.Y = z(T * B, O)
        self.dA = z(T, B, 4 * H)
        self.dH = z(T * B, H)
        self.tmp, self.dh, self.dc, self.dnext, self.cnext = z(B, 4 * H), z(B, H), z(B, H), z(B, H), z(B, H)
        self.t1, self.t2 = z(B, H), z(B, H)
        self.g = {"Wx": z(D, 4 * H), "Wh": z(H, 4 * H), "b": z(4 * H), "V": z(H, O), "c": z(O)}

    def __call__(self, xs, ys):
        T, B, H = self.T, self.B, self.H
        A, hs, cs, tc, tmp = self.A, self.hs, self.cs, self.tc, self.tmp
        A2 = A.reshape(T * B, 4 * H)
        np.dot(xs.reshape(T * B, -1), self.Wx, out=A2)          # all steps' input projections
        A2 += self.b
        for t in range(T):
            a = A[t]
            np.dot(hs[t], self.Wh, out=tmp)
            a += tmp
            s = a[:, :3 * H]                                     # i, f, o: sigmoid = 1 / (1 + exp(-a))
            np.negative(s, out=s)
            np.exp(s, out=s)
            s += 1.0
            np.reciprocal(s, out=s)
            g = a[:, 3 * H:]
            np.tanh(g, out=g)
            i, f, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H]
            np.multiply(f, cs[t], out=cs[t + 1])
            np.multiply(i, g, out=self.t1)
            cs[t + 1] += self.t1
            np.tanh(cs[t + 1], out=tc[t])
            np.multiply(o, tc[t], out=hs[t + 1])
        loss, dH = self.output_layer(hs, ys)
        gr = self.g
        dh, dc, dnext, cnext, t1, t2 = self.dh, self.dc, self.dnext, self.cnext, self.t1, self.t2
        dnext[...] = 0.0
        cnext[...] = 0.0
        dA = self.dA
        for t in reversed(range(T)):
            a, d = A[t], dA[t]
            i, f, o, g = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
            np.add(dH[t], dnext, out=dh)
            # dc = dh * o * (1 - tc^2) + dc_next
            np.multiply(tc[t], tc[t], out=t1)
            np.subtract(1.0, t1, out=t1)
            np.multiply(dh, o, out=dc)
            dc *= t1
            dc += cnext
            di, df, do, dg = d[:, :H], d[:, H:2 * H], d[:, 2 * H:3 * H], d[:, 3 * H:]
            np.multiply(dc, g, out=di)                           # d i, then times i (1 - i)
            np.multiply(dc, cs[t], out=df)
            np.multiply(dh, tc[t], out=do)
            s, ds = a[:, :3 * H], d[:, :3 * H]
            ds *= s
            np.subtract(1.0, s, out=tmp[:, :3 * H])
            ds *= tmp[:, :3 * H]
            np.multiply(g, g, out=t2)                            # d g = dc * i * (1 - g^2)
            np.subtract(1.0, t2, out=t2)
            np.multiply(dc, i, out=dg)
            dg *= t2
            np.dot(d, self.WhT, out=dnext)                       # one product for all four gates
            np.multiply(dc, f, out=cnext)
        dA2 = dA.reshape(T * B, 4 * H)
        np.dot(hs[:-1].reshape(T * B, H).T, dA2, out=gr["Wh"])  # every step's contribution in one product
        np.dot(xs.reshape(T * B, -1).T, dA2, out=gr["Wx"])
        np.add.reduce(dA2, axis=0, out=gr["b"])
        grads = {"V": gr["V"], "c": gr["c"]}
        for j, k in enumerate(self.order):
            cols = slice(j * H, (j + 1) * H)
            grads["U" + k], grads["W" + k], grads["b" + k] = gr["Wx"][:, cols], gr["Wh"][:, cols], gr["b"][cols]
        return float(loss), grads


class CarefulElman(_CarefulOutput):
    def __init__(self, p, T, B):
        H, O = p["W"].shape[0], p["V"].shape[1]
        D = p["U"].shape[0]
        dt = p["V"].dtype
        self.T, self.B, self.H = T, B, H
        self.U, self.W, self.b, self.V, self.c = p["U"], p["W"], p["b"], p["V"], p["c"]
        self.WT, self.VT = np.ascontiguousarray(self.W.T), np.ascontiguousarray(self.V.T)
        z = lambda *shape: np.zeros(shape, dt)   # noqa: E731
        self.hs, self.A, self.Y, self.dH = z(T + 1, B, H), z(T, B, H), z(T * B, O), z(T * B, H)
        self.dA, self.dnext, self.tmp = z(T, B, H), z(B, H), z(B, H)
        self.g = {"U": z(D, H), "W": z(H, H), "b": z(H), "V": z(H, O), "c": z(O)}

    def __call__(self, xs, ys):
        T, B, H = self.T, self.B, self.H
        hs, A, tmp = self.hs, self.A, self.tmp
        np.dot(xs.reshape(T * B, -1), self.U, out=A.reshape(T * B, H))
        A += self.b
        for t in range(T):
            np.dot(hs[t], self.W, out=tmp)
            tmp += A[t]
            np.tanh(tmp, out=hs[t + 1])
        loss, dH = self.output_layer(hs, ys)
        gr = self.g
        dnext = self.dnext
        dnext[...] = 0.0
        for t in reversed(range(T)):
            d = self.dA[t]
            np.add(dH[t], dnext, out=d)
            np.multiply(hs[t + 1], hs[t + 1], out=tmp)
            np.subtract(1.0, tmp, out=tmp)
            d *= tmp
            np.dot(d, self.WT, out=dnext)
        dA2 = self.dA.reshape(T * B, H)
        np.dot(hs[:-1].reshape(T * B, H).T, dA2, out=gr["W"])
        np.dot(xs.reshape(T * B, -1).T, dA2, out=gr["U"])
        np.add.reduce(dA2, axis=0, out=gr["b"])
        return float(loss), dict(gr)


class CarefulGRU(_CarefulOutput):
    """GRU with r and z fused (one (H, 2H) recurrent product, one sigmoid), n after them."""

    def __init__(self, p, T, B):
        H, O = p["Wr"].shape[0], p["V"].shape[1]
        D = p["Ur"].shape[0]
        dt = p["V"].dtype
        self.T, self.B, self.H = T, B, H
        self.Ux = np.ascontiguousarray(np.concatenate([p["U" + k] for k in "rzn"], 1))     # (D, 3H)
        self.b = np.concatenate([p["b" + k] for k in "rzn"])
        self.Wrz = np.ascontiguousarray(np.concatenate([p["Wr"], p["Wz"]], 1))            # (H, 2H)
        self.Wn = p["Wn"]
        self.WrzT, self.WnT = np.ascontiguousarray(self.Wrz.T), np.ascontiguousarray(self.Wn.T)
        self.V, self.c = p["V"], p["c"]
        self.VT = np.ascontiguousarray(self.V.T)
        z = lambda *shape: np.zeros(shape, dt)   # noqa: E731
        self.A, self.dA = z(T, B, 3 * H), z(T, B, 3 * H)     # pre-activations -> r, z, n; their gradients
        self.hs, self.RH = z(T + 1, B, H), z(T, B, H)
        self.Y, self.dH = z(T * B, O), z(T * B, H)
        self.t2, self.t1, self.dh, self.dnext, self.drh = z(B, 2 * H), z(B, H), z(B, H), z(B, H), z(B, H)
        self.g = {"Ux": z(D, 3 * H), "Wrz": z(H, 2 * H), "Wn": z(H, H), "b": z(3 * H), "V": z(H, O), "c": z(O)}

    def __call__(self, xs, ys):
        T, B, H = self.T, self.B, self.H
        A, hs, RH, t1, t2 = self.A, self.hs, self.RH, self.t1, self.t2
        A2 = A.reshape(T * B, 3 * H)
        np.dot(xs.reshape(T * B, -1), self.Ux, out=A2)
        A2 += self.b
        for t in range(T):
            h, a = hs[t], A[t]
            rz = a[:, :2 * H]
            np.dot(h, self.Wrz, out=t2)
            rz += t2
            np.negative(rz, out=rz)                              # sigmoid = 1 / (1 + exp(-a))
            np.exp(rz, out=rz)
            rz += 1.0
            np.reciprocal(rz, out=rz)
            r, zg, n = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
            np.multiply(r, h, out=RH[t])
            np.dot(RH[t], self.Wn, out=t1)
            n += t1
            np.tanh(n, out=n)
            np.subtract(h, n, out=t1)                            # h_t = n + z (h - n) = (1 - z) n + z h
            t1 *= zg
            np.add(n, t1, out=hs[t + 1])
        loss, dH = self.output_layer(hs, ys)
        gr = self.g
        dh, dnext, drh = self.dh, self.dnext, self.drh
        dnext[...] = 0.0
        for t in reversed(range(T)):
            h, a, d = hs[t], A[t], self.dA[t]
            r, zg, n = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
            dr, dz, dn = d[:, :H], d[:, H:2 * H], d[:, 2 * H:]
            np.add(dH[t], dnext, out=dh)
            np.subtract(1.0, zg, out=t1)                         # da_n = dh (1 - z) (1 - n^2)
            np.multiply(dh, t1, out=dn)
            np.multiply(n, n, out=t1)
            np.subtract(1.0, t1, out=t1)
            dn *= t1
            np.subtract(h, n, out=dz)                            # da_z = dh (h - n) z (1 - z)
            dz *= dh
            dz *= zg
            np.subtract(1.0, zg, out=t1)
            dz *= t1
            np.dot(dn, self.WnT, out=drh)                        # d(r h)
            np.multiply(drh, h, out=dr)                          # da_r = d(r h) h r (1 - r)
            dr *= r
            np.subtract(1.0, r, out=t1)
            dr *= t1
            np.multiply(dh, zg, out=dnext)                       # dh_{t-1} = dh z + d(r h) r + da_rz W_rz^T
            np.multiply(drh, r, out=t1)
            dnext += t1
            np.dot(d[:, :2 * H], self.WrzT, out=t1)
            dnext += t1
        dA2 = self.dA.reshape(T * B, 3 * H)
        np.dot(xs.reshape(T * B, -1).T, dA2, out=gr["Ux"])
        np.add.reduce(dA2, axis=0, out=gr["b"])
        np.dot(hs[:-1].reshape(T * B, H).T, dA2[:, :2 * H], out=gr["Wrz"])
        np.dot(RH.reshape(T * B, H).T, dA2[:, 2 * H:], out=gr["Wn"])
        grads = {"V": gr["V"], "c": gr["c"], "Wr": gr["Wrz"][:, :H], "Wz": gr["Wrz"][:, H:], "Wn": gr["Wn"]}
        for j, k in enumerate("rzn"):
            cols = slice(j * H, (j + 1) * H)
            grads["U" + k], grads["b" + k] = gr["Ux"][:, cols], gr["b"][cols]
        return float(loss), grads


CAREFUL = {"lstm": CarefulLSTM, "elman": CarefulElman, "gru": CarefulGRU}


def make_careful(cell, p, T, B):
    return CAREFUL[cell](p, T, B)
