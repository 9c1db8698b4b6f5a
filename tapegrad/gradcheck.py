"""Check the tape's gradients against central finite differences.

    report = tapegrad.gradcheck(lambda W, h: tanh(h @ W).sum(), [W, h])
    print(report)          # per input: max abs/rel error, worst index, numeric vs analytic there

Elementwise (`mode="full"`) or, for big inputs, along random directions (`mode="random"`: each
direction v compares <grad, v> with (f(x + eps v) - f(x - eps v)) / 2 eps).
"""
import inspect
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .autodiff import grad
from .errors import ArgumentError, InvalidValueError, TapegradError
from .tape import enable_grad, no_grad
from .tensor import Tensor

__all__ = ["gradcheck", "gradgradcheck", "GradcheckError", "GradcheckReport", "InputCheck", "relative_error",
           "central_differences", "format_table", "bind"]


class GradcheckError(TapegradError, AssertionError):
    """Raised by gradcheck on a mismatch; `.report` holds the full comparison."""

    def __init__(self, report: "GradcheckReport") -> None:
        super().__init__(f"gradient check failed\n{report}")
        self.report = report


@dataclass
class InputCheck:
    """One input's comparison. `worst` is an index into the input (or a direction number)."""
    name: str
    shape: tuple
    checked: int
    max_abs: float
    max_rel: float
    worst: tuple
    numeric: float
    analytic: float
    ok: bool


class GradcheckReport:
    """Result of `gradcheck`: one `InputCheck` per input; prints as a table; `.ok` is the verdict."""

    def __init__(self, rows: list[InputCheck], mode: str) -> None:
        self.rows, self.mode = rows, mode
        self.ok = all(r.ok for r in rows)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        head = ("input", "shape", "checked", "max abs err", "max rel err", "worst at", "numeric", "analytic", "")
        rows = [(r.name, str(r.shape), str(r.checked), f"{r.max_abs:.2e}", f"{r.max_rel:.2e}",
                 str(r.worst), f"{r.numeric:.6g}", f"{r.analytic:.6g}", "ok" if r.ok else "FAIL")
                for r in self.rows]
        return format_table(head, rows) + f"\n({self.mode} mode: {'passed' if self.ok else 'FAILED'})"

    __repr__ = __str__


def bind(fn: Callable[..., Any], tensors: Sequence[Any], caller: str = "gradcheck") -> Callable[[], Any]:
    """`fn` as a function of no arguments, under the one calling convention of the verification functions
    (gradcheck, gradgradcheck, check.compare, check.eps_sweep, testing.assert_grads_match): a function that
    takes as many positional arguments as there are tensors is called with them, in order; a function of no
    arguments is called bare (it reads the tensors it closes over). Anything else is an ArgumentError."""
    n = len(tensors)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):          # a builtin or C callable: assume the tensors-as-arguments form
        return lambda: fn(*tensors)
    kinds = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = sum(p.default is p.empty for p in kinds)
    varargs = any(p.kind is p.VAR_POSITIONAL for p in sig.parameters.values())
    if not kinds and not varargs:
        return fn
    if required <= n and (varargs or len(kinds) >= n):
        return lambda: fn(*tensors)
    if required == 0:                         # only optional arguments, fewer than the tensors: call it bare
        return fn
    raise ArgumentError(f"{caller}: the function takes {required} required positional argument"
                        f"{'s' * (required != 1)} {_signature(fn, sig)}, but there are {n} tensors to check; "
                        f"write it as `lambda {', '.join(f'p{i}' for i in range(n)) or ''}: ...` (the tensors in "
                        f"order) or as `lambda: ...` reading them from its closure")


def _signature(fn: Callable[..., Any], sig: inspect.Signature) -> str:
    return f"({', '.join(sig.parameters)})" if sig.parameters else "()"


def gradcheck(fn: Callable[..., Tensor], inputs: Sequence[Any], eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, raise_exception: bool = True, mode: str = "auto", n_directions: int = 16,
              seed: int = 0) -> "GradcheckReport":
    """Compare d fn(*inputs) / d inputs from the tape with central finite differences.

    fn:     takes the inputs as positional arguments (`lambda W, h: ...`), or no arguments and reads the
            tensors it closes over (`lambda: ...`, as `check.compare` also accepts); returns a Tensor. A
            non-scalar output is checked through a fixed random weighting sum(out * w).
    inputs: Tensors (those with requires_grad are checked) or arrays (all checked).
    mode:   "full" (every element), "random" (random directions) or "auto" (full up to 4096
            elements per input).
    An entry passes when |analytic - numeric| <= atol + rtol * |numeric|; NaN never passes.
    """
    inputs = [x if isinstance(x, Tensor) else Tensor(np.asarray(x, np.float64), True) for x in inputs]
    checked = [x for x in inputs if x.requires_grad]
    if not checked:
        raise InvalidValueError("gradcheck: no input requires grad")
    if any(x.dtype != np.float64 for x in checked):
        warnings.warn("gradcheck: inputs are not float64; finite differences in lower precision are "
                      "unreliable (use dtype=float64 for checks)", stacklevel=2)
    rng = np.random.default_rng(seed)
    scalar = _scalarize(fn, inputs, rng)
    analytic = [g.data.astype(np.float64) for g in grad(scalar(), checked)]
    rows: list[InputCheck] = []
    positions = [i for i, x in enumerate(inputs) if x.requires_grad]
    for pos, x, a in zip(positions, checked, analytic):
        m = mode if mode != "auto" else ("full" if x.size <= 4096 else "random")
        name = x.name or f"input {pos}"
        if m == "full":
            numeric = _numeric_full(scalar, x, eps)
            rows.append(_compare(name, x.shape, a.ravel(), numeric, atol, rtol,
                                 lambda i, shape=x.shape: np.unravel_index(i, shape)))
        else:
            dirs = rng.standard_normal((n_directions,) + x.shape)
            numeric = np.array([_directional(scalar, x, v, eps) for v in dirs])
            projected = np.array([np.sum(a * v) for v in dirs])
            rows.append(_compare(name, x.shape, projected, numeric, atol, rtol, lambda i: (f"dir {i}",)))
    report = GradcheckReport(rows, mode)
    if raise_exception and not report.ok:
        raise GradcheckError(report)
    return report


def gradgradcheck(fn: Callable[..., Tensor], inputs: Sequence[Any], eps: float = 1e-6, atol: float = 1e-5,
                  rtol: float = 1e-3, raise_exception: bool = True, mode: str = "auto",
                  seed: int = 0) -> "GradcheckReport":
    """Check second derivatives: gradcheck of inputs -> <d fn / d inputs, v> for fixed random v."""
    inputs = [x if isinstance(x, Tensor) else Tensor(np.asarray(x, np.float64), True) for x in inputs]
    checked = [x for x in inputs if x.requires_grad]
    rng = np.random.default_rng(seed + 1)
    scalar_fn = _scalarize(fn, inputs, rng, args=True)
    vs = [rng.standard_normal(x.shape).astype(x.dtype) for x in checked]

    def first_order(*xs: Tensor) -> Tensor:
        with enable_grad():      # the finite differences run under no_grad; this function needs the tape
            grads = grad(scalar_fn(*xs), [x for x in xs if x.requires_grad], create_graph=True)
            return _sum_all([(g * v).sum() for g, v in zip(grads, vs)])
    return gradcheck(first_order, inputs, eps, atol, rtol, raise_exception, mode, seed=seed)


def _sum_all(terms: Sequence[Tensor]) -> Tensor:
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def _scalarize(fn: Callable[..., Tensor], inputs: Sequence[Tensor], rng: np.random.Generator,
               args: bool = False) -> Callable[..., Tensor]:
    """fn as a scalar function; non-scalar outputs are weighted by fixed random numbers."""
    weights: dict[tuple[int, ...], np.ndarray] = {}

    bare = bind(fn, inputs) is fn          # a function of no arguments, reading its closure

    def scalar(*xs: Tensor) -> Tensor:
        out = fn() if bare else fn(*(xs if args else inputs))
        if not isinstance(out, Tensor):
            raise ArgumentError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
        if out.size == 1:
            return out.sum()
        w = weights.setdefault(out.shape, rng.standard_normal(out.shape).astype(out.dtype))
        return (out * w).sum()
    return scalar


def _evaluate(scalar: Callable[[], Tensor]) -> float:
    with no_grad():
        return float(scalar().data)


def _perturbed(x: Tensor) -> tuple[np.ndarray, Callable[[], None]]:
    """Make x.data a private writable float copy for perturbation; returns (array, restore function)."""
    original = x.data
    x.data = np.array(original, copy=True)
    return x.data.reshape(-1), lambda: setattr(x, "data", original)


def central_differences(x: Tensor, eps: float, evaluate: Callable[[], Any],
                        indices: Iterable[int] | None = None) -> Iterator[tuple[int, Any, Any]]:
    """Yield (i, evaluate() at x + eps e_i, evaluate() at x - eps e_i) for each flat index i of x.

    x is a Tensor whose `.data` is perturbed in place (a private copy, restored at the end); indices
    defaults to every element.
    """
    flat, restore = _perturbed(x)
    try:
        for i in range(flat.size) if indices is None else indices:
            v = flat[i]
            flat[i] = v + eps
            up = evaluate()
            flat[i] = v - eps
            down = evaluate()
            flat[i] = v
            yield i, up, down
    finally:
        restore()


def _numeric_full(scalar: Callable[[], Tensor], x: Tensor, eps: float) -> np.ndarray:
    return np.array([(up - down) / (2 * eps) for _, up, down in central_differences(x, eps, lambda: _evaluate(scalar))],
                    dtype=np.float64)


def _directional(scalar: Callable[[], Tensor], x: Tensor, v: np.ndarray, eps: float) -> float:
    original = x.data
    try:
        x.data = (original + eps * v).astype(original.dtype)
        up = _evaluate(scalar)
        x.data = (original - eps * v).astype(original.dtype)
        down = _evaluate(scalar)
    finally:
        x.data = original
    return (up - down) / (2 * eps)


def _compare(name: str, shape: Sequence[int], analytic: np.ndarray, numeric: np.ndarray, atol: float, rtol: float,
             where: Callable[..., tuple[Any, ...]]) -> InputCheck:
    diff = np.abs(analytic - numeric)
    rel = relative_error(analytic, numeric)
    excess = diff / (atol + rtol * np.abs(numeric))
    bad = ~np.isfinite(analytic) | ~np.isfinite(numeric)
    excess[bad] = np.inf
    worst = int(np.argmax(excess)) if excess.size else 0
    ok = bool(excess.size == 0 or (np.all(excess <= 1) and not bad.any()))
    return InputCheck(name, tuple(shape), int(analytic.size), float(np.max(diff, initial=0)),
                      float(np.max(rel, initial=0)),
                      tuple(int(i) if not isinstance(i, str) else i for i in where(worst)),
                      float(numeric[worst]) if numeric.size else 0.0,
                      float(analytic[worst]) if analytic.size else 0.0, ok)


def relative_error(a: Any, b: Any, floor: Any = 0.0) -> np.ndarray:
    """Elementwise |a - b| / max(|a|, |b|, floor); 0 where that denominator is 0 (both entries zero);
    inf where either entry is NaN or infinite, so a non-finite gradient never passes."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.abs(a - b)
        scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)
        rel = np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
    rel[~(np.isfinite(a) & np.isfinite(b))] = np.inf
    return rel


def format_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table of string cells: columns padded to their widest cell, a rule under the header."""
    lines = [tuple(head)] + [tuple(r) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)
