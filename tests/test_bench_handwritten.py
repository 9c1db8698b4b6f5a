"""The hand-written numpy BPTT baseline of benchmarks/bptt.py against central finite differences (float64)."""
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import handwritten  # noqa: E402


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_gradients_match_central_differences(cell):
    rng = np.random.default_rng(0)
    B, D, H, O, T = 2, 3, 4, 2, 5
    p = handwritten.init_params(cell, D, H, O, rng, np.float64)
    xs, ys = handwritten.make_data(B, D, O, T, rng, np.float64)
    step = handwritten.STEPS[cell]
    _, grads = step(p, xs, ys)
    eps = 1e-6
    for name, v in p.items():
        num = np.zeros_like(v)
        for i in np.ndindex(v.shape):
            old = v[i]
            v[i] = old + eps
            up, _ = step(p, xs, ys)
            v[i] = old - eps
            down, _ = step(p, xs, ys)
            v[i] = old
            num[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grads[name], num, rtol=1e-6, atol=1e-8, err_msg=f"{cell} d{name}")


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_loss_value_and_float32(cell):
    rng = np.random.default_rng(1)
    B, D, H, O, T = 3, 2, 5, 2, 4
    p = handwritten.init_params(cell, D, H, O, rng)
    xs, ys = handwritten.make_data(B, D, O, T, rng)
    loss, grads = handwritten.STEPS[cell](p, xs, ys)
    assert all(g.dtype == np.float32 and g.shape == p[n].shape for n, g in grads.items())
    # plain re-implementation of the forward, float64, for the loss value
    p64, h, c, ref = {n: v.astype(np.float64) for n, v in p.items()}, np.zeros((B, H)), np.zeros((B, H)), 0.0
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    for t in range(T):
        x = xs[t].astype(np.float64)
        if cell == "elman":
            h = np.tanh(x @ p64["U"] + h @ p64["W"] + p64["b"])
        elif cell == "gru":
            r = sig(x @ p64["Ur"] + h @ p64["Wr"] + p64["br"])
            z = sig(x @ p64["Uz"] + h @ p64["Wz"] + p64["bz"])
            n = np.tanh(x @ p64["Un"] + (r * h) @ p64["Wn"] + p64["bn"])
            h = (1 - z) * n + z * h
        else:
            g = {k: x @ p64["U" + k] + h @ p64["W" + k] + p64["b" + k] for k in "ifog"}
            c = sig(g["f"]) * c + sig(g["i"]) * np.tanh(g["g"])
            h = sig(g["o"]) * np.tanh(c)
        ref += np.mean((h @ p64["V"] + p64["c"] - ys[t]) ** 2)
    assert loss == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_benchmark_contenders_agree_with_hand_numpy(cell):
    """The tapegrad contenders of benchmarks/bptt.py (and the minimal tape) compute the hand-written step's
    loss and gradients."""
    import bptt
    rng = np.random.default_rng(0)
    s = bptt.SIZES["tiny"]
    p = handwritten.init_params(cell, s["D"], s["H"], s["D"], rng)
    xs, ys = handwritten.make_data(s["B"], s["D"], s["D"], s["T"], rng)
    ref_loss, ref = handwritten.STEPS[cell](p, xs, ys)
    for name in ("tapegrad", "tapegrad-ckpt", "tapegrad-nn", "tapegrad-compiled", "tapegrad-nn-compiled",
                 "tapegrad-compiled-fast", "tapegrad-nn-compiled-fast", "minimal-tape"):
        step = bptt.CONTENDERS[name](cell, p, xs, ys)
        step()                                                   # compiled: the second tracing call
        loss, grads = step()
        grads = bptt.named_grads(grads)
        assert loss == pytest.approx(ref_loss, rel=1e-5), name
        for n, g in ref.items():
            np.testing.assert_allclose(grads[n], g, rtol=1e-4, atol=1e-5 * np.abs(g).max(), err_msg=f"{name} d{n}")


def test_long_unroll_reports_a_finite_cost_per_step_for_every_contender():
    """benchmarks/long_unroll.py at tiny sizes: every contender is checked against hand-numpy and timed."""
    import io
    import math

    import long_unroll
    out = io.StringIO()
    result = long_unroll.main(["--T", "5,10", "--B", "2", "--D", "3", "--H", "4", "--rounds", "1", "--repeat", "1",
                               "--compiled-max-T", "10"], out=out)
    assert sorted(result) == [5, 10]
    for T, v in result.items():
        assert set(v) == set(long_unroll.NAMES), T
        for name, us in v.items():
            assert us is not None and math.isfinite(us) and us > 0, (T, name, us)
    assert "| 10 |" in out.getvalue()
