"""Issue #17: one calling convention for the verification functions, and the API details a PyTorch or numpy
user expects (reprs, warnings, torch state dicts, `python -m tapegrad`)."""
import re
import subprocess
import sys

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import check, nn
from tapegrad.testing import assert_grads_match, reference_case

rng = np.random.default_rng(0)
W = tg.tensor(rng.normal(size=(3, 3)), requires_grad=True, name="W")
h = tg.tensor(rng.normal(size=(2, 3)), requires_grad=True, name="h")


def with_args(W, h):
    return tg.tanh(h @ W).sum()


def bare():
    return tg.tanh(h @ W).sum()


@pytest.mark.parametrize("fn", [with_args, bare, lambda *ps: tg.tanh(ps[1] @ ps[0]).sum()],
                         ids=["tensors as arguments", "no arguments", "*params"])
def test_every_verification_function_takes_both_forms(fn):
    assert tg.gradcheck(fn, [W, h]).ok
    assert tg.gradgradcheck(fn, [W, h]).ok
    assert check.compare(fn, {"W": W, "h": h}).ok
    assert assert_grads_match(fn, {"W": W, "h": h}).ok
    assert check.eps_sweep(fn, W, (0, 1), params=[W, h]).best < 1e-2


def test_eps_sweep_of_a_one_parameter_function_needs_no_params():
    assert check.eps_sweep(lambda W: (W * W).sum(), W, (0, 0)).tape == pytest.approx(2 * W.data[0, 0])


def test_a_function_of_the_wrong_arity_is_refused_with_both_forms_named():
    with pytest.raises(tg.ArgumentError, match=re.escape("compare: the function takes 1 required positional argument "
                                                         "(W), but there are 2 tensors to check; write it as "
                                                         "`lambda p0, p1: ...`")):
        check.compare(lambda W: W.sum(), {"W": W, "h": h})
    with pytest.raises(tg.ArgumentError, match="or as `lambda: ...` reading them from its closure"):
        tg.gradcheck(lambda a, b, c: a.sum(), [W, h])


def test_reference_case_loss_fn_takes_the_parameters_too():
    case = reference_case("elman_bptt", T=3)
    names = list(case.params)
    report = check.compare(lambda *ps: case.model(dict(zip(names, ps))), case.params, hand=case.hand)
    assert report.ok
