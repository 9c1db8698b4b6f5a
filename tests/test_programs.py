"""Random compositions of ops against numpy and finite differences (tests/programs.py, docs/testing.md).

    TAPEGRAD_FUZZ_PROGRAMS=20000 TAPEGRAD_FUZZ_SEED=0 pytest tests/test_programs.py -q
"""
import dataclasses
import os

import numpy as np
import pytest
from programs import available_specs, check, describe, generate, run_many

import tapegrad as tg

COUNT = int(os.environ.get("TAPEGRAD_FUZZ_PROGRAMS", "1000"))
START = int(os.environ.get("TAPEGRAD_FUZZ_SEED", "0"))
CHUNKS = 4


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_random_programs_match_numpy_and_finite_differences(chunk):
    lo = START + chunk * COUNT // CHUNKS
    hi = START + (chunk + 1) * COUNT // CHUNKS
    failed, _, _ = run_many(lo, hi - lo)
    assert not failed, f"{len(failed)} of {hi - lo} programs failed; the first:\n\n" + \
        "\n\n".join(describe(r, p) for r, p in failed[:3])


def test_every_available_spec_is_used():
    counts = {}
    for seed in range(START, START + COUNT):
        for label in generate(seed).ops():
            counts[label] = counts.get(label, 0) + 1
    rare = {s.label: counts.get(s.label, 0) for s in available_specs() if counts.get(s.label, 0) < 3}
    assert not rare, f"specs used fewer than 3 times in {COUNT} programs: {rare}"


def test_programs_are_deterministic_and_their_printed_source_runs():
    for seed in range(START, START + 50):
        p = generate(seed)
        assert p.source() == generate(seed).source()
        namespace = {}
        exec(p.source(), namespace)         # paste-able: the printout is a complete program
        assert len(namespace["grads"]) == len(p.inputs)


def test_the_checks_catch_a_wrong_reference():
    p = generate(7)
    assert check(p).ok
    step, ref = p.steps[0], p.steps[0].spec.ref
    step.spec = dataclasses.replace(step.spec, ref=lambda *a, **kw: 1.01 * np.asarray(ref(*a, **kw)))
    failures = check(p).failures
    assert any(f.startswith("forward") for f in failures) and any(f.startswith("grad") for f in failures)


# -- regressions the fuzzer found ----------------------------------------------------------------
def test_zero_d_value_used_three_times_gets_all_contributions():
    x = tg.tensor(np.array(-0.66), requires_grad=True)
    y = x * 1.0
    assert tg.grad(y + y + y, [x])[0].item() == 3.0
    y = x * 1.0
    (y + y + y + y).backward()
    assert x.grad.item() == 4.0


def test_transpose_with_negative_axes_backward():
    rng = np.random.default_rng(0)
    x = tg.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    w = rng.standard_normal((2, 4, 3))
    (g,) = tg.grad((tg.transpose(x, (0, -1, 1)) * w).sum(), [x])
    np.testing.assert_array_equal(g.data, np.transpose(w, (0, 2, 1)))


def test_huber_loss_curvature_at_zero_difference():
    x = tg.tensor(np.array([0.0]), requires_grad=True)
    (g,) = tg.grad(tg.huber_loss(x, np.array([0.0]), delta=0.5, reduction="sum"), [x], create_graph=True)
    assert tg.grad(g.sum(), [x])[0].item() == 1.0
