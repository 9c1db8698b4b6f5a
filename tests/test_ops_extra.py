"""The ops recurrent-net users reach for beyond the core set: forward against numpy, gradcheck and
gradgradcheck in float64 (broadcasting shapes, 0-d, negative axes, an input used twice), stability at
|x| = 1000, the norm's kink; the extra losses and nn.LayerNorm."""
import math

import numpy as np
import pytest

import tapegrad as tg

RNG = np.random.default_rng(7)


def leaf(shape, low=-2.0, high=2.0):
    return tg.tensor(RNG.uniform(low, high, shape), requires_grad=True)


def away_from(x, points, gap=0.1, to=0.37):
    """Move entries of a leaf off kinks (finite differences straddling a kink disagree with any rule)."""
    for p in points:
        x.data = np.where(np.abs(x.data - p) < gap, p + to, x.data)
    return x


def check(fn, *inputs, second=True):
    """gradcheck and gradgradcheck of fn, and gradgradcheck of fn after squaring its inputs (so a linear or
    piecewise-linear op, whose own second derivative is 0, still has its rule differentiated on Tensors).
    second=False skips the direct gradgradcheck (its first derivative does not depend on the inputs)."""
    assert tg.gradcheck(fn, list(inputs), atol=1e-6, rtol=1e-5).ok
    if second:
        assert tg.gradgradcheck(fn, list(inputs), atol=1e-5, rtol=1e-4).ok
    assert tg.gradgradcheck(lambda *xs: fn(*[x * x for x in xs]), list(inputs), atol=1e-5, rtol=1e-4).ok


def vs_numpy(fn, ref, *arrays, **kw):
    out = fn(*[tg.tensor(a) for a in arrays], **kw)
    np.testing.assert_allclose(out.data, ref(*arrays, **kw), rtol=1e-12, atol=1e-13)
    plain = fn(*arrays, **kw)                   # no Tensor: plain numpy
    assert isinstance(plain, np.ndarray) or np.isscalar(plain)


def erf_ref(x):
    return np.vectorize(math.erf)(x)


def gelu_ref(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + erf_ref(x / math.sqrt(2)))


UNARY = [
    ("log1p", tg.log1p, np.log1p, (-0.9, 2.0), ()),
    ("expm1", tg.expm1, np.expm1, (-2.0, 2.0), ()),
    ("sin", tg.sin, np.sin, (-3.0, 3.0), ()),
    ("cos", tg.cos, np.cos, (-3.0, 3.0), ()),
    ("erf", tg.erf, erf_ref, (-3.0, 3.0), ()),
    ("softplus", tg.softplus, lambda x: np.log1p(np.exp(x)), (-5.0, 5.0), ()),
    ("logsigmoid", tg.logsigmoid, lambda x: np.log(1 / (1 + np.exp(-x))), (-5.0, 5.0), ()),
    ("leaky_relu", tg.leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x), (-2.0, 2.0), (0.0,)),
    ("leaky_relu 0.2", lambda x: tg.leaky_relu(x, 0.2), lambda x: np.where(x > 0, x, 0.2 * x), (-2.0, 2.0), (0.0,)),
    ("elu", tg.elu, lambda x: np.where(x > 0, x, np.expm1(x)), (-2.0, 2.0), (0.0,)),
    ("elu alpha", lambda x: tg.elu(x, alpha=0.5), lambda x: np.where(x > 0, x, 0.5 * np.expm1(x)), (-2.0, 2.0),
     (0.0,)),
    ("gelu", tg.gelu, gelu_ref, (-3.0, 3.0), ()),
    ("gelu tanh", lambda x: tg.gelu(x, approximate="tanh"), lambda x: gelu_ref(x, "tanh"), (-3.0, 3.0), ()),
]


@pytest.mark.parametrize("shape", [(), (3,), (2, 3)])
@pytest.mark.parametrize("name, fn, ref, domain, kinks", UNARY, ids=[u[0] for u in UNARY])
def test_unary(name, fn, ref, domain, kinks, shape):
    x = away_from(leaf(shape, *domain), kinks)
    np.testing.assert_allclose(fn(x).data, ref(x.data), rtol=1e-12, atol=1e-14)
    check(fn, x, second=not name.startswith("leaky"))  # piecewise linear: no second derivative to check alone
    check(lambda x: fn(x) * fn(x + 0.25), x)          # reuse: the input feeds the op twice


def test_unary_methods_and_float32():
    x = tg.tensor(np.linspace(-0.9, 0.9, 5).astype(np.float32), requires_grad=True)
    for fn in (tg.log1p, tg.expm1, tg.sin, tg.cos, tg.erf, tg.softplus, tg.logsigmoid, tg.leaky_relu, tg.elu,
               tg.gelu):
        y = fn(x)
        assert y.dtype == np.float32
        y.sum().backward()
        assert x.grad.dtype == np.float32
        x.grad = None
    np.testing.assert_allclose(x.log1p().data, np.log1p(x.data))
    np.testing.assert_allclose(x.sin().data, np.sin(x.data))


def test_erf_matches_math_erf():
    x = np.concatenate([np.linspace(-7, 7, 20001), [0.0, -0.0, 1e-300, -1e-20, 30.0, np.inf, -np.inf]])
    np.testing.assert_array_equal(tg.erf(x), erf_ref(x))
    assert np.isnan(tg.erf(np.array([np.nan]))).all()


def test_softplus_logsigmoid_stable_at_1000():
    x = tg.tensor(np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0]), requires_grad=True)
    sp, ls = tg.softplus(x), tg.logsigmoid(x)
    np.testing.assert_allclose(sp.data, [0.0, np.log1p(np.exp(-30.0)), np.log(2), 30.0 + np.log1p(np.exp(-30.0)),
                                         1000.0], rtol=1e-15)
    np.testing.assert_allclose(ls.data, -sp.data[::-1], rtol=1e-15)
    (sp.sum() + ls.sum()).backward()
    assert np.isfinite(x.grad).all()
    np.testing.assert_allclose(x.grad, [0.0 + 1.0, 1.0, 1.0, 1.0, 1.0], atol=1e-12)   # sigmoid(x) + sigmoid(-x)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        tg.softplus(np.array([1000.0, -1000.0]))
        tg.logsigmoid(np.array([1000.0, -1000.0]))


def test_elu_no_overflow_for_large_x():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        np.testing.assert_array_equal(tg.elu(np.array([1000.0, -1000.0])), [1000.0, -1.0])


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(tg.InvalidValueError, match="approximate"):
        tg.gelu(tg.tensor([1.0]), approximate="fast")


# -- reductions ----------------------------------------------------------------------------------
AXES = [((4,), None), ((2, 3), 0), ((2, 3), -1), ((2, 3, 4), (0, -1)), ((2, 3, 4), -2), ((), None), ((1, 3), 0)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape, axis", AXES)
def test_min(shape, axis, keepdims):
    x = leaf(shape)
    np.testing.assert_array_equal(tg.min(x, axis=axis, keepdims=keepdims).data,
                                  np.min(x.data, axis=axis, keepdims=keepdims))
    check(lambda x: tg.min(x, axis=axis, keepdims=keepdims), x, second=False)
    check(lambda x: x.min(axis, keepdims) * x.sum(), x, second=False)


def test_min_ties_share_gradient():
    x = tg.tensor([1.0, 3.0, 1.0], requires_grad=True)
    x.min().backward()
    np.testing.assert_allclose(x.grad, [0.5, 0.0, 0.5])


@pytest.mark.parametrize("fn", [tg.argmax, tg.argmin])
def test_argmax_argmin(fn):
    x = tg.tensor(RNG.standard_normal((3, 4, 5)), requires_grad=True)
    ref = getattr(np, fn.__name__)
    for axis in (None, 0, 1, -1, -3):
        out = fn(x, axis=axis)
        assert isinstance(out, tg.Tensor) and out.dtype.kind == "i" and not out.requires_grad
        np.testing.assert_array_equal(out.data, ref(x.data, axis=axis))
    np.testing.assert_array_equal(fn(x, -1, keepdims=True).data, ref(x.data, axis=-1, keepdims=True))
    assert isinstance(fn(x.data, 0), np.ndarray)
    np.testing.assert_array_equal(getattr(x, fn.__name__)(1).data, ref(x.data, axis=1))
    with pytest.raises(tg.ShapeError, match="out of range"):
        fn(x, axis=3)


@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape, axis", [((5,), None), ((3, 4), 0), ((3, 4), -1), ((2, 3, 4), (0, -1)),
                                         ((2, 3, 4), None)])
@pytest.mark.parametrize("name", ["var", "std"])
def test_var_std(name, shape, axis, keepdims, ddof):
    x = leaf(shape)
    fn, ref = getattr(tg, name), getattr(np, name)
    np.testing.assert_allclose(fn(x, axis=axis, ddof=ddof, keepdims=keepdims).data,
                               ref(x.data, axis=axis, ddof=ddof, keepdims=keepdims), rtol=1e-13)
    np.testing.assert_allclose(getattr(x, name)(axis, ddof).data, ref(x.data, axis=axis, ddof=ddof), rtol=1e-13)
    check(lambda x: fn(x, axis=axis, ddof=ddof, keepdims=keepdims), x)


def test_var_std_0d_and_constant_input():
    x = leaf(())
    np.testing.assert_array_equal(tg.var(x).data, 0.0)
    tg.std(x).backward()
    np.testing.assert_array_equal(x.grad, 0.0)
    c = tg.tensor(np.full((2, 3), 1.5), requires_grad=True)
    tg.std(c, axis=-1).sum().backward()                   # zero deviation: gradient 0, not NaN
    np.testing.assert_array_equal(c.grad, np.zeros((2, 3)))


@pytest.mark.parametrize("ord", [2, 1, 3, 1.5, np.inf])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape, axis", [((5,), None), ((3, 4), -1), ((3, 4), 0), ((2, 3, 4), (-2, -1)), ((), None)])
def test_norm(ord, shape, axis, keepdims):
    x = away_from(leaf(shape), (0.0,))
    if ord == np.inf and x.size > 1:
        x.data = x.data + np.arange(x.size).reshape(shape) * 1e-2    # no ties for the max
    ref = np.sum(np.abs(x.data) ** ord, axis=axis, keepdims=keepdims) ** (1 / ord) if ord != np.inf else \
        np.max(np.abs(x.data), axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(tg.norm(x, ord, axis, keepdims).data, ref, rtol=1e-13)
    check(lambda x: tg.norm(x, ord=ord, axis=axis, keepdims=keepdims), x, second=ord not in (1, np.inf))


def test_norm_matches_numpy_vector_norm():
    x = RNG.standard_normal((3, 4))
    np.testing.assert_allclose(tg.norm(tg.tensor(x), axis=-1).data, np.linalg.norm(x, axis=-1))
    np.testing.assert_allclose(tg.norm(tg.tensor(x)).data, np.linalg.norm(x))          # Frobenius
    np.testing.assert_allclose(tg.norm(tg.tensor(x), 3, 0).data, np.linalg.norm(x, 3, axis=0))


@pytest.mark.parametrize("ord", [2, 1, 3, np.inf])
def test_norm_kink_at_zero_has_zero_gradient(ord):
    x = tg.tensor(np.zeros((2, 3)), requires_grad=True)
    y = tg.tensor(np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 4.0]]), requires_grad=True)
    tg.norm(x, ord).backward()
    np.testing.assert_array_equal(x.grad, np.zeros((2, 3)))
    tg.norm(y, ord, axis=-1).sum().backward()
    assert np.isfinite(y.grad).all()
    np.testing.assert_array_equal(y.grad[0], 0.0)
    if ord == 2:
        np.testing.assert_allclose(y.grad[1], [0.6, 0.0, 0.8])


def test_norm_rejects_ord_below_one():
    with pytest.raises(tg.InvalidValueError, match="ord"):
        tg.norm(tg.tensor([1.0, 2.0]), ord=0.5)


# -- shape and indexing ops --------------------------------------------------------------------
@pytest.mark.parametrize("shape, axis", [((5,), 0), ((3, 4), -1), ((3, 4), 0), ((2, 3, 4), -2), ((2, 3), None)])
def test_cumsum(shape, axis):
    x = leaf(shape)
    np.testing.assert_allclose(tg.cumsum(x, axis).data, np.cumsum(x.data, axis=axis))
    np.testing.assert_allclose(x.cumsum(axis).data, np.cumsum(x.data, axis=axis))
    check(lambda x: tg.cumsum(x, axis=axis), x, second=False)
    check(lambda x: tg.cumsum(x * x, axis=axis) * x.sum(), x, second=False)


@pytest.mark.parametrize("shape, axis", [((5,), 0), ((3, 4), -1), ((3, 4), None), ((2, 3, 4), (0, -1)), ((), None)])
def test_flip(shape, axis):
    x = leaf(shape)
    np.testing.assert_array_equal(tg.flip(x, axis).data, np.flip(x.data, axis))
    check(lambda x: tg.flip(x, axis) * x, x)


@pytest.mark.parametrize("shape, shift, axis", [((5,), 2, 0), ((3, 4), -1, -1), ((3, 4), 5, None),
                                                ((2, 3, 4), (1, -2), (0, -1)), ((2, 3, 4), 1, (0, 2))])
def test_roll(shape, shift, axis):
    x = leaf(shape)
    np.testing.assert_array_equal(tg.roll(x, shift, axis).data, np.roll(x.data, shift, axis))
    check(lambda x: tg.roll(x, shift, axis) * x, x)


@pytest.mark.parametrize("shape, width, value", [((3,), 2, 0), ((3, 4), ((1, 0), (2, 3)), 1.5), ((2, 3), (0, 1), -1),
                                                 ((), 0, 0)])
def test_pad(shape, width, value):
    x = leaf(shape)
    np.testing.assert_array_equal(tg.pad(x, width, constant_values=value).data,
                                  np.pad(x.data, width, constant_values=value))
    check(lambda x: tg.pad(x, width, value) * tg.pad(x, width, value), x)


def test_pad_rejects_negative_width():
    with pytest.raises(tg.InvalidValueError, match="pad_width"):
        tg.pad(tg.tensor([1.0]), -1)


@pytest.mark.parametrize("shape, reps", [((3,), 2), ((2, 3), (2, 1)), ((2, 3), (2, 1, 3)), ((2, 1, 3), (2,)), ((), 3)])
def test_tile(shape, reps):
    x = leaf(shape)
    np.testing.assert_array_equal(tg.tile(x, reps).data, np.tile(x.data, reps))
    check(lambda x: tg.tile(x, reps) * tg.tile(x, reps), x)


@pytest.mark.parametrize("shape, repeats, axis", [((3,), 2, 0), ((2, 3), 3, -1), ((2, 3), [1, 0, 2], 1),
                                                  ((2, 3), 2, None), ((2, 3), [2, 1], -2), ((), 3, None)])
def test_repeat(shape, repeats, axis):
    x = leaf(shape)
    np.testing.assert_array_equal(tg.repeat(x, repeats, axis).data, np.repeat(x.data, repeats, axis))
    if axis is not None:
        np.testing.assert_array_equal(x.repeat(repeats, axis).data, np.repeat(x.data, repeats, axis))
    check(lambda x: tg.repeat(x, repeats, axis) * tg.repeat(x, repeats, axis), x)


@pytest.mark.parametrize("shape, idx_shape, axis", [((5,), (7,), 0), ((3, 4), (3, 6), -1), ((3, 4), (2, 4), 0),
                                                    ((2, 3, 4), (2, 3, 1), -1), ((2, 3, 4), (1, 5, 4), 1)])
def test_take_along_axis(shape, idx_shape, axis):
    x = leaf(shape)
    idx = RNG.integers(-shape[axis], shape[axis], idx_shape)
    np.testing.assert_array_equal(tg.take_along_axis(x, idx, axis).data, np.take_along_axis(x.data, idx, axis))
    check(lambda x: tg.take_along_axis(x, idx, axis) * tg.take_along_axis(x, idx, axis), x)


def test_take_along_axis_repeated_indices_accumulate():
    x = tg.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    tg.take_along_axis(x, np.array([[0, 0, 2, 0], [1, 1, 1, 1]]), axis=-1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[3, 0, 1], [0, 4, 0]])
    with pytest.raises(tg.DTypeError, match="integers"):
        tg.take_along_axis(x, np.array([[0.0]]), axis=-1)


@pytest.mark.parametrize("fn", [tg.tril, tg.triu])
@pytest.mark.parametrize("shape, k", [((4, 4), 0), ((3, 5), 1), ((2, 4, 3), -1)])
def test_tril_triu(fn, shape, k):
    x = leaf(shape)
    np.testing.assert_array_equal(fn(x, k).data, getattr(np, fn.__name__)(x.data, k))
    check(lambda x: fn(x, k=k) * x, x)


def test_sign_is_exported():
    np.testing.assert_array_equal(tg.sign(tg.tensor([-2.0, 0.0, 3.0])).data, [-1, 0, 1])


# -- einsum --------------------------------------------------------------------------------------
EINSUM = [("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]), ("bi,ij->bj", [(3, 4), (4, 2)]),
          ("bth,bh->bt", [(2, 5, 3), (2, 3)]), ("i,i->", [(4,), (4,)]), ("bi,oij,bj->bo", [(2, 3), (5, 3, 4), (2, 4)]),
          ("ij->ji", [(2, 3)]),
          ("ij->i", [(2, 3)]), ("ij,k->ijk", [(2, 3), (2,)]), ("ii->i", [(3, 3)]), ("ii", [(3, 3)]),
          ("ij,jk", [(2, 3), (3, 4)]), ("...ij,...jk->...ik", [(2, 3, 4), (4, 2)]), ("ij,ij->ij", [(1, 3), (2, 3)]),
          (",i->i", [(), (3,)]), ("bij,bkj->bik", [(2, 3, 4), (2, 5, 4)])]


@pytest.mark.parametrize("spec, shapes", EINSUM, ids=[e[0] for e in EINSUM])
def test_einsum(spec, shapes):
    xs = [leaf(s) for s in shapes]
    np.testing.assert_allclose(tg.einsum(spec, *xs).data, np.einsum(spec, *[x.data for x in xs]), rtol=1e-12)
    check(lambda *xs: tg.einsum(spec, *xs), *xs, second=len(xs) > 1)


def test_einsum_reuse_and_constants():
    a, w = leaf((3, 4)), RNG.standard_normal((4, 4))
    check(lambda a: tg.einsum("bi,ij,bj->b", a, w, a), a)        # the same tensor twice
    check(lambda a: tg.einsum("bi,bi->b", a, a), a)


def test_einsum_argument_errors():
    a = tg.tensor(np.ones((2, 3)))
    with pytest.raises(tg.ArgumentError, match="separate arguments"):
        tg.einsum("ij,jk->ik", [a, a.T])
    with pytest.raises(tg.ArgumentError, match="subscripts string first"):
        tg.einsum(a, a)
    with pytest.raises(tg.ArgumentError, match="2 operand"):
        tg.einsum("ij,jk->ik", a)
    with pytest.raises(tg.ShapeError):
        tg.einsum("ijk->i", a)


def test_concat_and_stack_need_a_list():
    a = tg.tensor(np.ones((2, 3)))
    for fn in (tg.concat, tg.stack):
        with pytest.raises(tg.ArgumentError, match="takes a list of tensors"):
            fn(a, a)


def test_new_methods_are_attached():
    x = leaf((2, 3))
    for name in ("var", "std", "min", "cumsum", "argmax", "argmin", "repeat", "log1p", "expm1", "sin", "cos"):
        assert callable(getattr(x, name)), name


# -- losses --------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(), (4,), (2, 3)])
def test_bce_with_logits(reduction, shape):
    z, t = leaf(shape, -3, 3), tg.tensor(RNG.uniform(0, 1, shape), requires_grad=True)
    s = 1 / (1 + np.exp(-z.data))
    ref = -(t.data * np.log(s) + (1 - t.data) * np.log(1 - s))
    ref = ref.mean() if reduction == "mean" else ref.sum() if reduction == "sum" else ref
    np.testing.assert_allclose(tg.binary_cross_entropy_with_logits(z, t, reduction).data, ref, rtol=1e-12)
    check(lambda z, t: tg.binary_cross_entropy_with_logits(z, t, reduction=reduction), z, t)


def test_bce_with_logits_stable_at_1000():
    z = tg.tensor(np.array([1000.0, -1000.0, 1000.0, -1000.0]), requires_grad=True)
    t = np.array([1.0, 0.0, 0.0, 1.0])
    loss = tg.binary_cross_entropy_with_logits(z, t, reduction="none")
    np.testing.assert_allclose(loss.data, [0.0, 0.0, 1000.0, 1000.0])
    loss.sum().backward()
    np.testing.assert_allclose(z.grad, [0.0, 0.0, 1.0, -1.0])
    with pytest.raises(tg.ShapeError, match="targets"):
        tg.binary_cross_entropy_with_logits(z, t[:2])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss(reduction, weighted):
    targets = np.array([[0, 3, 1], [2, 2, 0]])
    weight = np.array([[1.0, 0.0, 1.0], [0.5, 1.0, 1.0]]) if weighted else None
    z = leaf((2, 3, 4))
    np.testing.assert_allclose(
        tg.nll_loss(tg.log_softmax(z, -1), targets, reduction, weight).data,
        tg.cross_entropy(z, targets, reduction, weight).data, rtol=1e-12)
    check(lambda lp: tg.nll_loss(lp, targets, reduction=reduction, weight=weight), z, second=False)


def test_nll_loss_with_minus_inf_elsewhere_and_bad_targets():
    lp = tg.tensor(np.array([[np.log(0.5), np.log(0.5), -np.inf]]), requires_grad=True)
    loss = tg.nll_loss(lp, np.array([1]))
    np.testing.assert_allclose(loss.data, np.log(2))
    loss.backward()
    np.testing.assert_array_equal(lp.grad, [[0.0, -1.0, 0.0]])
    with pytest.raises(tg.ShapeError, match="targets must lie"):
        tg.nll_loss(lp, np.array([3]))
    with pytest.raises(tg.DTypeError):
        tg.nll_loss(lp, np.array([1.0]))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(), (2, 3)])
def test_l1_and_huber(reduction, shape):
    p, t = leaf(shape, -3, 3), leaf(shape, -3, 3)
    d = p.data - t.data
    d = np.where(np.abs(d) < 0.1, 0.5, d)          # off the kink of |d| (and of huber at delta)
    d = np.where(np.abs(np.abs(d) - 1) < 0.1, 1.5, d)
    p.data = t.data + d
    red = {"mean": np.mean, "sum": np.sum, "none": lambda a: a}[reduction]
    np.testing.assert_allclose(tg.l1_loss(p, t, reduction).data, red(np.abs(d)), rtol=1e-12)
    huber = np.where(np.abs(d) <= 1, 0.5 * d * d, np.abs(d) - 0.5)
    np.testing.assert_allclose(tg.huber_loss(p, t, reduction=reduction).data, red(huber), rtol=1e-12)
    huber2 = np.where(np.abs(d) <= 2, 0.5 * d * d, 2 * (np.abs(d) - 1))
    np.testing.assert_allclose(tg.huber_loss(p, t, 2.0, reduction).data, red(huber2), rtol=1e-12)
    check(lambda p, t: tg.l1_loss(p, t, reduction=reduction), p, t)
    check(lambda p, t: tg.huber_loss(p, t, delta=1.0, reduction=reduction), p, t)


def test_loss_argument_errors():
    a, b = tg.tensor(np.ones(3)), tg.tensor(np.ones(4))
    for fn in (tg.l1_loss, tg.huber_loss, tg.kl_div):
        with pytest.raises(tg.ShapeError):
            fn(a, b)
        with pytest.raises(tg.InvalidValueError, match="reduction"):
            fn(a, a, reduction="avg")
    with pytest.raises(tg.InvalidValueError, match="delta"):
        tg.huber_loss(a, a, delta=0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "batchmean"])
def test_kl_div(reduction):
    log_q = tg.log_softmax(leaf((3, 4)), -1)
    p = RNG.dirichlet(np.ones(4), 3)
    p[0, 1] = 0.0                                  # a zero probability contributes 0 (not 0 * -inf)
    p[0] /= p[0].sum()
    point = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - log_q.data), 0)
    ref = {"mean": point.mean(), "sum": point.sum(), "none": point, "batchmean": point.sum() / 3}[reduction]
    np.testing.assert_allclose(tg.kl_div(log_q, p, reduction).data, ref, rtol=1e-12)
    np.testing.assert_allclose(tg.kl_div(log_q, np.log(np.where(p > 0, p, 1e-300)), reduction, log_target=True).data,
                               ref, rtol=1e-9, atol=1e-12)
    z = leaf((3, 4))
    pt = tg.tensor(RNG.dirichlet(np.ones(4), 3), requires_grad=True)
    check(lambda z, pt: tg.kl_div(tg.log_softmax(z, -1), pt, reduction=reduction), z, pt)


def test_kl_div_is_kl_divergence():
    p, q = np.array([0.2, 0.5, 0.3]), np.array([0.1, 0.6, 0.3])
    np.testing.assert_allclose(tg.kl_div(tg.tensor(np.log(q)), p, reduction="sum").data, np.sum(p * np.log(p / q)))


# -- LayerNorm -----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, normalized", [((2, 5), 5), ((2, 3, 4), (3, 4)), ((4,), (4,))])
def test_layer_norm(shape, normalized):
    ln = tg.nn.LayerNorm(normalized, dtype=np.float64)
    ln.g.data[...] = RNG.standard_normal(ln.g.shape)
    ln.b.data[...] = RNG.standard_normal(ln.b.shape)
    x = leaf(shape)
    axes = tuple(range(len(shape) - len(ln.normalized_shape), len(shape)))
    m, v = x.data.mean(axes, keepdims=True), x.data.var(axes, keepdims=True)
    np.testing.assert_allclose(ln(x).data, (x.data - m) / np.sqrt(v + 1e-5) * ln.g.data + ln.b.data, rtol=1e-12)
    check(lambda x, g, b: ln(x), x, ln.g, ln.b)
    assert [n for n, _ in ln.named_parameters()] == ["g", "b"]


def test_layer_norm_options_and_errors():
    assert tg.nn.LayerNorm(3, elementwise_affine=False).parameters() == []
    assert [n for n, _ in tg.nn.LayerNorm(3, bias=False).named_parameters()] == ["g"]
    ln = tg.nn.LayerNorm(3)
    assert ln.g.dtype == tg.get_default_dtype()
    with pytest.raises(tg.ShapeError, match=r"expected \(\.\.\., 3\)"):
        ln(tg.tensor(np.ones((2, 4), np.float32)))
    with pytest.raises(tg.InvalidValueError):
        tg.nn.LayerNorm(0)
    y = ln(tg.tensor(np.full((2, 3), 7.0, np.float32)))          # a constant row: 0, no NaN
    np.testing.assert_array_equal(y.data, np.zeros((2, 3)))


def test_cross_entropy_allows_minus_inf_on_other_classes():
    z = tg.tensor(np.array([[0.0, -np.inf, 1.0]]), requires_grad=True)
    loss = tg.cross_entropy(z, np.array([0]))
    np.testing.assert_allclose(loss.data, np.log1p(np.e))           # was NaN: -inf times a one-hot 0
    loss.backward()
    np.testing.assert_allclose(z.grad, [[1 / (1 + np.e) - 1, 0.0, np.e / (1 + np.e)]])


def test_mT_of_fewer_than_two_axes_says_so():
    with pytest.raises(tg.ShapeError, match="at least 2"):
        _ = tg.tensor(np.ones(3)).mT
    assert leaf((2, 3, 4)).mT.shape == (2, 4, 3)


def test_einsum_large_operands_take_the_optimized_path():
    a, b = leaf((3, 40, 50)), leaf((3, 50, 20))          # over 4096 entries: numpy's optimized contraction
    np.testing.assert_allclose(tg.einsum("bij,bjk->bik", a, b).data, a.data @ b.data, rtol=1e-12)
    assert tg.gradcheck(lambda a, b: tg.einsum("bij,bjk->bik", a, b), [a, b], mode="random").ok
