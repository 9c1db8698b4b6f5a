"""tapegrad.optim against closed forms written out here, on the quadratic loss 0.5 sum(a p^2) - sum(b p)."""
import math

import numpy as np
import pytest

import tapegrad as tg
from tapegrad.errors import CheckpointError, DTypeError, GraphError, ShapeError, TapegradError
from tapegrad.optim import SGD, Adagrad, Adam, AdamW, RMSprop, clip_grad_norm, clip_grad_value

RNG = np.random.default_rng(0)
A = RNG.uniform(0.5, 2.0, size=(3, 4))
B = RNG.normal(size=(3, 4))
P0 = RNG.normal(size=(3, 4))


def quad_grad(p):
    return A * p - B


# -- closed forms: p_{t+1} from p_t and the gradient, nothing in place -------------------------------
def ref_sgd(p, steps, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    buf = None
    for _ in range(steps):
        g = quad_grad(p) + weight_decay * p
        if momentum:
            buf = g if buf is None else momentum * buf + g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p


def ref_adagrad(p, steps, lr=0.01, eps=1e-8):
    mem = np.zeros_like(p)
    for _ in range(steps):                      # min-char-rnn's update
        dparam = quad_grad(p)
        mem += dparam * dparam
        p = p + -lr * dparam / np.sqrt(mem + eps)
    return p


def ref_rmsprop(p, steps, lr=0.001, alpha=0.99, eps=1e-8):
    v = np.zeros_like(p)
    for _ in range(steps):
        g = quad_grad(p)
        v = alpha * v + (1 - alpha) * g ** 2
        p = p - lr * g / (np.sqrt(v) + eps)
    return p


def ref_adam(p, steps, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    m = v = np.zeros_like(p)
    for t in range(1, steps + 1):
        g = quad_grad(p) + (0 if decoupled else weight_decay * p)
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g ** 2
        m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps) - (lr * weight_decay * p if decoupled else 0)
    return p


def run(opt_cls, steps, p0=P0, **kw):
    p = tg.tensor(p0.copy(), requires_grad=True)
    opt = opt_cls([p], **kw)
    data = p.data
    for _ in range(steps):
        opt.zero_grad()
        assert p.grad is None
        p.grad = quad_grad(p.data)
        opt.step()
    assert p.data is data                      # updated in place, never rebound
    return p, opt


CASES = [
    (SGD, dict(lr=0.1), ref_sgd),
    (SGD, dict(lr=0.1, weight_decay=0.05), ref_sgd),
    (SGD, dict(lr=0.05, momentum=0.9), ref_sgd),
    (SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.01), ref_sgd),
    (SGD, dict(lr=0.05, momentum=0.8, nesterov=True), ref_sgd),
    (SGD, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1), ref_sgd),
    (Adagrad, dict(), ref_adagrad),
    (Adagrad, dict(lr=0.3, eps=1e-4), ref_adagrad),
    (RMSprop, dict(), ref_rmsprop),
    (RMSprop, dict(lr=0.01, alpha=0.9, eps=1e-3), ref_rmsprop),
    (Adam, dict(), ref_adam),
    (Adam, dict(lr=0.05, betas=(0.8, 0.9), eps=1e-4, weight_decay=0.1), ref_adam),
    (AdamW, dict(lr=0.05, weight_decay=0.1), lambda p, n, **kw: ref_adam(p, n, decoupled=True, **kw)),
    (AdamW, dict(), lambda p, n, **kw: ref_adam(p, n, decoupled=True, weight_decay=0.01, **kw)),
]


@pytest.mark.parametrize("opt_cls, kw, ref", CASES, ids=[f"{c.__name__}-{kw}" for c, kw, _ in CASES])
def test_update_matches_closed_form(opt_cls, kw, ref):
    p, opt = run(opt_cls, 7, **kw)
    np.testing.assert_allclose(p.data, ref(P0.copy(), 7, **kw), rtol=1e-12, atol=1e-14)
    assert opt.step_count == 7 and opt.state[0]["step"] == 7


def test_sgd_momentum_by_hand():
    q = tg.tensor(np.array([1.0]), requires_grad=True)
    opt = SGD([q], lr=0.1, momentum=0.9)
    for _ in range(2):
        q.grad = q.data.copy()                 # loss 0.5 q^2
        opt.step()
    # buf=1, q=0.9; buf=0.9*1+0.9=1.8, q=0.9-0.18=0.72
    np.testing.assert_allclose(q.data, [0.72], rtol=1e-15)
    np.testing.assert_allclose(opt.state[0]["momentum_buffer"], [1.8], rtol=1e-15)


def test_nesterov_by_hand():
    q = tg.tensor(np.array([1.0]), requires_grad=True)
    opt = SGD([q], lr=0.1, momentum=0.5, nesterov=True)
    q.grad = np.array([2.0])
    opt.step()                                 # buf=2, d=2+0.5*2=3, q=1-0.3
    np.testing.assert_allclose(q.data, [0.7], rtol=1e-15)


def test_training_with_backward_converges():
    target = np.array([1.0, -2.0, 3.0])
    for opt_cls, kw in [(SGD, dict(lr=0.1, momentum=0.9)), (Adam, dict(lr=0.1)), (Adagrad, dict(lr=0.5)),
                        (RMSprop, dict(lr=0.05)), (AdamW, dict(lr=0.1, weight_decay=0.0))]:
        p = tg.tensor(np.zeros(3), requires_grad=True)
        opt = opt_cls([p], **kw)
        for _ in range(300):
            opt.zero_grad()
            ((p - target) ** 2).sum().backward()
            opt.step()
        np.testing.assert_allclose(p.data, target, atol=0.05, err_msg=opt_cls.__name__)


@pytest.mark.parametrize("opt_cls", [SGD, Adagrad, RMSprop, Adam, AdamW])
def test_in_place_leaves_grad_alone_and_skips_missing_grads(opt_cls):
    p = tg.tensor(P0.copy(), requires_grad=True)
    q = tg.tensor(np.ones(2), requires_grad=True)
    view = p.data[0]                           # someone else holding a view sees the update
    before = view.copy()
    opt = opt_cls([p, q], lr=0.1, weight_decay=0.1) if opt_cls in (SGD, Adam, AdamW) else opt_cls([p, q], lr=0.1)
    p.grad = quad_grad(p.data)
    g = p.grad.copy()
    opt.step()
    assert not np.array_equal(view, before)
    np.testing.assert_array_equal(p.grad, g)   # weight decay does not write into .grad
    np.testing.assert_array_equal(q.data, np.ones(2))
    assert opt.state[1]["step"] == 0 and opt.step_count == 1


def test_adam_bias_correction_counts_each_parameters_own_steps():
    p = tg.tensor(np.zeros(2), requires_grad=True)
    q = tg.tensor(np.zeros(2), requires_grad=True)
    opt = Adam([p, q], lr=0.01)
    for _ in range(3):
        p.grad = np.array([1.0, -3.0])
        opt.step()
    q.grad = np.array([1.0, -3.0])
    opt.step()                                 # q's first update: lr * sign(g), as on step 1
    np.testing.assert_allclose(q.data, [-0.01, 0.01], rtol=1e-6)
    assert opt.state[1]["step"] == 1 and opt.state[0]["step"] == 4


def test_float32_parameters_stay_float32():
    p = tg.tensor(P0.astype(np.float32), requires_grad=True)
    opt = Adam([p], lr=0.01, weight_decay=0.1)
    p.grad = quad_grad(p.data).astype(np.float32)
    opt.step()
    assert p.dtype == np.float32 and opt.state[0]["exp_avg"].dtype == np.float32
    np.testing.assert_allclose(p.data, ref_adam(P0.astype(np.float32), 1, lr=0.01, weight_decay=0.1), rtol=1e-5)


def test_params_from_a_generator_and_zero_grad():
    ts = [tg.tensor(np.ones(2), requires_grad=True) for _ in range(3)]
    opt = SGD((t for t in ts), lr=0.1)
    assert len(opt.params) == 3
    for t in ts:
        t.grad = np.ones(2)
    opt.step()
    opt.zero_grad()
    assert all(t.grad is None for t in ts)
    np.testing.assert_allclose(ts[2].data, [0.9, 0.9])


# -- state dicts -----------------------------------------------------------------------------------
@pytest.mark.parametrize("opt_cls, kw", [(SGD, dict(lr=0.05, momentum=0.9, nesterov=True)), (Adagrad, {}),
                                         (RMSprop, {}), (Adam, dict(weight_decay=0.1)), (AdamW, {})])
def test_state_dict_round_trip_continues_identically(opt_cls, kw):
    p, opt = run(opt_cls, 3, **kw)
    sd = opt.state_dict()
    q = tg.tensor(p.data.copy(), requires_grad=True)
    fresh = opt_cls([q], **kw)
    fresh.load_state_dict(sd)
    assert fresh.step_count == 3 and fresh.hyper == opt.hyper
    for _ in range(4):
        for t, o in ((p, opt), (q, fresh)):
            t.grad = quad_grad(t.data)
            o.step()
    np.testing.assert_array_equal(p.data, q.data)
    for name, arr in sd["state"][0].items():   # the state dict taken earlier is a snapshot, not live
        if isinstance(arr, np.ndarray):
            assert not np.array_equal(arr, opt.state[0][name])


def test_load_state_dict_restores_hyper_parameters():
    p = tg.tensor(np.ones(2), requires_grad=True)
    a = Adam([p], lr=0.5, betas=(0.5, 0.6))
    b = Adam([tg.tensor(np.ones(2), requires_grad=True)])
    b.load_state_dict(a.state_dict())
    assert b.hyper == {"lr": 0.5, "betas": (0.5, 0.6), "eps": 1e-8, "weight_decay": 0.0}


def test_load_state_dict_rejects_mismatches_and_changes_nothing():
    p = tg.tensor(np.ones((2, 3)), requires_grad=True)
    opt = Adam([p])
    p.grad = np.ones((2, 3))
    opt.step()
    original = opt.state_dict()

    other = Adam([tg.tensor(np.ones((3, 2)), requires_grad=True)]).state_dict()
    with pytest.raises(ShapeError, match=r"state\[0\]\['exp_avg'\].*\(2, 3\).*params\[0\].*got shape \(3, 2\)"):
        opt.load_state_dict(other)
    with pytest.raises(CheckpointError, match="from a SGD optimizer"):
        opt.load_state_dict(SGD([p], lr=0.1).state_dict())
    two = Adam([tg.tensor(np.ones((2, 3)), requires_grad=True), tg.tensor(np.ones(1), requires_grad=True)])
    with pytest.raises(CheckpointError, match=r"one entry per parameter \(1\), got 2 entries"):
        opt.load_state_dict(two.state_dict())
    bad = opt.state_dict()
    del bad["state"][0]["exp_avg_sq"]
    with pytest.raises(CheckpointError, match=r"missing \['exp_avg_sq'\]"):
        opt.load_state_dict(bad)
    bad = opt.state_dict()
    bad["state"][0]["exp_avg"] = bad["state"][0]["exp_avg"].astype(np.float32)
    with pytest.raises(DTypeError, match="float32.*float64"):
        opt.load_state_dict(bad)
    bad = opt.state_dict()
    bad["hyper"]["lr"] = -1.0
    with pytest.raises(ValueError, match="Adam: lr"):
        opt.load_state_dict(bad)

    now = opt.state_dict()
    assert now["hyper"] == original["hyper"] and now["step_count"] == original["step_count"]
    np.testing.assert_array_equal(now["state"][0]["exp_avg"], original["state"][0]["exp_avg"])


# -- bad input -------------------------------------------------------------------------------------
def test_bad_params_name_position_and_type():
    p = tg.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ShapeError, match="SGD: got an empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(DTypeError, match=r"Adam: params\[1\] is a int") as e:
        Adam([p, 3])
    assert isinstance(e.value, TypeError) and isinstance(e.value, TapegradError)
    with pytest.raises(DTypeError, match=r"RMSprop: params\[1\] is a ndarray"):
        RMSprop([p, np.ones(2)])
    with pytest.raises(DTypeError, match=r"params\[0\] \(Tensor of shape \(2,\), dtype float64, name 'w'\) "
                                         "does not require grad"):
        Adagrad([tg.tensor(np.ones(2), name="w")])
    with pytest.raises(DTypeError, match="got a Tensor"):
        SGD(p, lr=0.1)
    with pytest.raises(DTypeError, match="got a float"):
        SGD(1.0, lr=0.1)
    with pytest.raises(GraphError, match=r"params\[0\].*not a leaf.*mul"):
        SGD([p * 2], lr=0.1)
    with pytest.raises(ValueError, match=r"params\[1\].*same Tensor as params\[0\]"):
        SGD([p, p], lr=0.1)


@pytest.mark.parametrize("make, match", [
    (lambda p: SGD([p], lr=-0.1), "SGD: lr must be a number finite and >= 0, got -0.1"),
    (lambda p: SGD([p], lr=0.1, nesterov=True), "SGD: nesterov .* needs momentum > 0"),
    (lambda p: SGD([p], lr=0.1, momentum=float("nan")), "SGD: momentum"),
    (lambda p: Adam([p], betas=(0.9, 1.0)), r"Adam: betas\[1\] must be a number in \[0, 1.0\)"),
    (lambda p: AdamW([p], betas=0.9), "AdamW: betas must be a pair"),
    (lambda p: RMSprop([p], alpha=1.5), "RMSprop: alpha"),
    (lambda p: Adagrad([p], eps="1e-8"), "Adagrad: eps"),
])
def test_bad_hyper_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make(tg.tensor(np.ones(2), requires_grad=True))


def test_grad_of_the_wrong_shape():
    p = tg.tensor(np.ones((2, 3)), requires_grad=True)
    opt = SGD([p], lr=0.1)
    p.grad = np.ones(3)
    with pytest.raises(ShapeError, match=r"SGD.step: params\[0\].grad has shape \(3,\) .* \(2, 3\)"):
        opt.step()


# -- clipping --------------------------------------------------------------------------------------
def grads_of(*arrays):
    ts = []
    for a in arrays:
        t = tg.tensor(np.zeros_like(a), requires_grad=True)
        t.grad = None if a is None else np.array(a, dtype=np.float64)
        ts.append(t)
    return ts


def test_clip_grad_norm_scales_in_place():
    a, b = grads_of(np.array([3.0, 4.0]), np.array([[12.0]]))
    ga, gb = a.grad, b.grad
    skipped = tg.tensor(np.ones(2), requires_grad=True)
    total = clip_grad_norm(iter([a, skipped, b]), 6.5)   # sqrt(9 + 16 + 144) = 13
    assert type(total) is float and total == 13.0
    assert a.grad is ga and b.grad is gb and skipped.grad is None
    np.testing.assert_allclose(ga, [3.0 * 6.5 / (13 + 1e-6), 4.0 * 6.5 / (13 + 1e-6)], rtol=1e-15)
    assert math.sqrt((ga ** 2).sum() + (gb ** 2).sum()) <= 6.5


def test_clip_grad_norm_below_the_limit_leaves_grads():
    a, = grads_of(np.array([3.0, 4.0]))
    assert clip_grad_norm([a], 5.0) == 5.0
    np.testing.assert_array_equal(a.grad, [3.0, 4.0])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_clip_grad_norm_non_finite_leaves_grads(bad):
    a, b = grads_of(np.array([3.0, bad]), np.array([100.0]))
    total = clip_grad_norm([a, b], 1.0)
    assert not math.isfinite(total)
    np.testing.assert_array_equal(a.grad, [3.0, bad])
    np.testing.assert_array_equal(b.grad, [100.0])


def test_clip_grad_value_like_min_char_rnn():
    a, b = grads_of(np.array([-7.0, -5.0, 0.5, 6.0]), np.array([[9.0, -1.0]]))
    ga = a.grad
    clip_grad_value([a, b], 5)
    assert a.grad is ga
    np.testing.assert_array_equal(a.grad, [-5.0, -5.0, 0.5, 5.0])
    np.testing.assert_array_equal(b.grad, [[5.0, -1.0]])


def test_clipping_bad_input():
    a, = grads_of(np.array([1.0]))
    with pytest.raises(ValueError, match="clip_grad_norm: max_norm"):
        clip_grad_norm([a], -1.0)
    with pytest.raises(ValueError, match="clip_grad_value: limit"):
        clip_grad_value([a], float("inf"))
    with pytest.raises(DTypeError, match=r"clip_grad_value: params\[1\] is a ndarray"):
        clip_grad_value([a, np.ones(1)], 1.0)


def test_repr_shows_hyper_parameters_and_counts():
    params = [tg.tensor(np.zeros((3, 4)), requires_grad=True), tg.tensor(np.zeros(4), requires_grad=True)]
    opt = Adam(params, lr=0.01)
    assert repr(opt) == ("Adam(lr=0.01, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.0; "
                         "2 parameters, 16 values, 0 steps)")
    assert repr(SGD(params[:1], lr=0.1)).endswith("; 1 parameter, 12 values, 0 steps)")


def test_step_without_any_gradient_warns_once():
    p = tg.tensor(np.ones(3), requires_grad=True)
    opt = SGD([p], lr=0.1)
    with pytest.warns(UserWarning, match="no gradients — did you call backward"):
        opt.step()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()                        # once per optimizer
        (p * p).sum().backward()
        SGD([p], lr=0.1).step()           # a gradient: no warning


# -- small parameters updated as one flat array ----------------------------------------------------
CONFIGS = [(SGD, dict(lr=0.05)), (SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
           (Adagrad, {}), (RMSprop, {}), (Adam, dict(weight_decay=0.1)), (AdamW, {})]
SHAPES = [(3, 4), (4,), (), (2, 3, 2)]


def _twins(dtype, seed=0):
    rng = np.random.default_rng(seed)
    datas = [rng.normal(size=s).astype(dtype) for s in SHAPES]
    return [[tg.tensor(d.copy(), requires_grad=True) for d in datas] for _ in range(2)]


def _set_grads(params, rng_seed, skip=None):
    rng = np.random.default_rng(rng_seed)
    for i, p in enumerate(params):
        g = rng.normal(size=p.shape).astype(p.dtype)
        p.grad = None if i == skip else g


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opt_cls, kw", CONFIGS)
def test_flat_update_is_the_per_parameter_update_bit_for_bit(opt_cls, kw, dtype):
    """Every step of the flat path gives the per-parameter path's numbers exactly, across a step where one
    parameter has no grad (per parameter then, its step count apart: per parameter until load_state_dict
    evens them), a state dict round trip, and a parameter's array replaced."""
    flat_params, ref_params = _twins(dtype)
    flat, ref = opt_cls(flat_params, **kw), opt_cls(ref_params, **kw)
    ref.flat_max_mean_size = 0                       # the per-parameter path
    for k in range(8):
        if k == 5:                                   # a new array for one parameter: the layout is rebuilt
            for params in (flat_params, ref_params):
                params[1].data = params[1].data.copy()
        for params in (flat_params, ref_params):
            _set_grads(params, k, skip=0 if k == 2 else None)
        flat.step()
        ref.step()
        if k == 3:                                   # the same step counts again, from a state dict
            sd = ref.state_dict()
            for s in sd["state"]:
                s["step"] = 4
            ref.load_state_dict(sd)
            flat.load_state_dict(sd)
        for p, q in zip(flat_params, ref_params):
            np.testing.assert_array_equal(p.data, q.data, err_msg=f"step {k}")
        for s, r in zip(flat.state, ref.state):
            assert s.keys() == r.keys() and all(np.array_equal(s[n], r[n]) for n in s), f"step {k}"
    assert flat._flat is not None and flat._flat.usable and (ref._flat is None or not ref._flat.usable)
    for n, buf in flat._flat.flat_state.items():     # the state arrays are views of one flat buffer
        assert all(np.shares_memory(s[n], buf) for s in flat.state)


def test_an_optimizer_that_is_not_elementwise_updates_each_parameter_alone():
    class NormalizedSGD(tg.optim.Optimizer):
        """p -= lr g / |g|, the norm of each parameter's own gradient (not elementwise)."""

        def __init__(self, params, lr):
            super().__init__(params, lr=lr)

        def _check_hyper(self, h):
            return h

        def _update(self, p, g, state, lr):
            p -= lr * g / np.linalg.norm(g)

    params, _ = _twins(np.float64)
    before = [p.data.copy() for p in params]
    _set_grads(params, 0)
    NormalizedSGD(params, lr=0.1).step()
    for p, b in zip(params, before):
        np.testing.assert_allclose(p.data, b - 0.1 * p.grad / np.linalg.norm(p.grad), rtol=1e-15)


def test_large_parameters_and_parameters_sharing_memory_are_updated_alone():
    big = tg.tensor(np.ones((200, 100)), requires_grad=True)
    small = tg.tensor(np.ones(3), requires_grad=True)
    base = np.zeros(6)
    halves = [tg.tensor(base, requires_grad=True), tg.tensor(base[:3], requires_grad=True)]
    for params in ([big, small], halves):
        opt = SGD(params, lr=0.5)
        for p in params:
            p.grad = np.ones(p.shape)
        opt.step()
        assert opt._flat is not None and not opt._flat.usable
    np.testing.assert_array_equal(big.data, 0.5)
    np.testing.assert_array_equal(base, [-1, -1, -1, -0.5, -0.5, -0.5])   # the shared half updated twice
