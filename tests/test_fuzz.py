"""Fuzz: the public API, driven with malformed arguments, raises only tapegrad errors."""
import inspect

import numpy as np
import pytest

import tapegrad as tg

RNG = np.random.default_rng(123)

VALUES = [
    lambda: tg.tensor(RNG.standard_normal((2, 3)), requires_grad=True),
    lambda: tg.tensor(RNG.standard_normal((3,)).astype(np.float32), requires_grad=True),
    lambda: tg.tensor(RNG.standard_normal(())),
    lambda: tg.tensor(np.array([1, 2, 3])),
    lambda: tg.tensor(np.array([True, False])),
    lambda: tg.tensor(np.zeros((0, 2))),
    lambda: RNG.standard_normal((4, 1)),
    lambda: np.array([[1, 2], [3, 4]]),
    lambda: np.array(["a", "b"]),
    lambda: 1.5, lambda: -1, lambda: 0, lambda: 7, lambda: None, lambda: "text", lambda: [1.0, 2.0],
    lambda: [[1, 2], [3]], lambda: (0, 1), lambda: {"a": 1}, lambda: object(), lambda: float("nan"),
    lambda: slice(0, 2),
]

FUNCTIONS = [name for name in ["abs", "add", "astype", "broadcast_to", "clip", "concat", "cross_entropy", "div",
                               "dropout", "exp", "expand_dims", "getitem", "log", "log_softmax", "logsumexp",
                               "matmul", "max", "maximum", "mean", "minimum", "mse_loss", "mul", "neg", "one_hot",
                               "pow", "relu", "reshape", "sigmoid", "softmax", "split", "sqrt", "squeeze", "stack",
                               "sub", "sum", "take", "tanh", "tensor", "transpose", "where"]]


def _arity(fn):
    params = inspect.signature(fn).parameters.values()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return max(len(required), 1), len(required) + 3
    return len(required), len(positional)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_public_functions_raise_only_tapegrad_errors(name):
    fn = getattr(tg, name)
    lo, hi = _arity(fn)
    with np.errstate(all="ignore"):
        for _ in range(150):
            args = [VALUES[RNG.integers(len(VALUES))]() for _ in range(RNG.integers(lo, hi + 1))]
            try:
                out = fn(*args)
                if isinstance(out, tg.Tensor) and out.requires_grad and out.size:
                    out.sum().backward() if out.dtype.kind == "f" else None
            except tg.TapegradError:
                pass
            except Exception as e:     # noqa: BLE001  (the point of the test)
                pytest.fail(f"{name}{tuple(type(a).__name__ for a in args)} raised {type(e).__name__}: {e}")


def test_tensor_methods_raise_only_tapegrad_errors():
    with np.errstate(all="ignore"):
        for _ in range(300):
            t = VALUES[RNG.integers(3)]()
            other = VALUES[RNG.integers(len(VALUES))]()
            op = ["__add__", "__mul__", "__matmul__", "__truediv__", "__pow__", "__getitem__", "__sub__",
                  "__rmatmul__", "reshape", "sum", "transpose"][RNG.integers(11)]
            try:
                getattr(t, op)(other)
            except tg.TapegradError:
                pass
            except Exception as e:     # noqa: BLE001
                pytest.fail(f"Tensor.{op}({type(other).__name__}) raised {type(e).__name__}: {e}")
