"""Check hand-derived gradients three ways: finite differences, the tape, and your derivation.

    report = tapegrad.check.compare(loss_fn, params, hand=my_grads, per_step=True)
    print(report)        # one row per parameter; per-step drill-down; notes
    report.ok

Errors are relative, |a - b| / max(|a|, |b|), banded as in cs231n: < 1e-7 fine, < 1e-4 ok (high for a
smooth function in float64, normal with kinks), < 1e-2 suspicious, otherwise wrong. Finite
differences are exact only up to their round-off, about eps_machine * |L| / eps per entry; entries
smaller than `FD_RESOLUTION` times that are measured against that scale instead of their own, so
round-off in a tiny entry never reads as an error. The tape and a hand derivation are both exact, so
they are compared to rounding (`ROUNDING` machine epsilons of the gradient's scale).

Also here: `sweep(tape)` checks every recorded primitive's own derivative rule, `eps_sweep` tabulates
truncation against round-off for one entry, and `KINKS` lists the ops whose finite differences are
flagged (not counted) when they cross a kink.
"""
import html
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .autodiff import grad
from .errors import ArgumentError, InvalidValueError
from .gradcheck import _evaluate, bind, central_differences, format_table, relative_error
from .op import apply
from .tape import Record, Tape, enable_grad
from .tensor import Tensor

__all__ = ["compare", "sweep", "eps_sweep", "band", "KINKS", "CompareReport", "ParamCheck", "StepCheck",
           "SweepReport", "OpCheck", "EpsSweep", "EpsRow"]

BANDS = ((1e-7, "fine"), (1e-4, "ok"), (1e-2, "suspicious"), (np.inf, "wrong"))
GOOD = ("fine", "ok")
FD_RESOLUTION = 1e5     # finite-difference round-off alone stays below 1 / FD_RESOLUTION relative
ROUNDING = 64           # machine epsilons of slack between two exact gradients (summation order)
STEPS = "@steps"        # hand key suffix: "W@steps" per-step contributions, "h@steps" dL/dh_t

# Ops whose derivative jumps: op name -> function of the op's input arrays and params that returns
# which side of each kink the inputs lie on (an array or a tuple of arrays). A finite difference that
# changes any of them crossed a kink. Register your own non-smooth primitives here.
KINKS: dict[str, Callable[..., Any]] = {
    "relu": lambda x: np.sign(x),
    "abs": lambda x: np.sign(x),
    "sign": lambda x: np.sign(x),
    "clip": lambda x, lo=None, hi=None: (np.sign(x - (-np.inf if lo is None else lo)),
                                         np.sign(x - (np.inf if hi is None else hi))),
    "max": lambda x, axis=None, keepdims=False: x == np.max(x, axis=axis, keepdims=True),
    "maximum": lambda x, y: np.sign(np.subtract(x, y)),
    "minimum": lambda x, y: np.sign(np.subtract(x, y)),
    "where": lambda c, x, y: np.asarray(c),
}


def band(rel: float) -> str:
    """The verdict band of a relative error: 'fine', 'ok', 'suspicious' or 'wrong' (NaN is wrong)."""
    for limit, name in BANDS:
        if rel < limit:
            return name
    return "wrong"


# -- compare --------------------------------------------------------------------------------------

@dataclass(eq=False)
class ParamCheck:
    """One parameter: the three gradients (arrays shaped like it) and how they compare.

    max_abs, max_rel, worst: the judged pair's largest errors and where the relative one is (the
    pair is hand vs tape when the tape agrees with finite differences, see `judged`).
    signs: (entries whose signs agree, entries compared). kinked: mask of the entries whose finite
    difference crossed a kink (left out of every comparison with fd; `.kinks` counts them).
    blame: who is wrong ('' if nobody); diagnosis: a guess at how (sign, factor, transpose).
    """
    name: str
    fd: np.ndarray
    tape: np.ndarray
    hand: np.ndarray | None
    judged: tuple
    max_abs: float
    max_rel: float
    worst: tuple
    signs: tuple
    kinked: np.ndarray
    tape_fd_rel: float
    band: str
    blame: str
    diagnosis: str

    @property
    def ok(self) -> bool:
        return self.band in GOOD

    @property
    def kinks(self) -> int:
        return int(np.sum(self.kinked))


@dataclass
class StepCheck:
    """Hand vs tape per time step for one series: a parameter's per-step contributions ("W@steps")
    or the gradient dL/dh_t of a state ("h@steps"). rel[t] is the max relative error at step t;
    `first` is the first divergent step in backward order (latest step first: where a wrong
    derivation enters BPTT), None if every step agrees."""
    name: str
    rel: dict
    first: int | None
    diagnosis: str = ""

    @property
    def ok(self) -> bool:
        return self.first is None


@dataclass(eq=False)
class CompareReport:
    """Result of `compare`: `rows` (ParamCheck per parameter), `steps` (StepCheck per series),
    `notes`, the tape's per-step split `tape_steps` (name -> {t: array}), and `.ok`."""
    rows: list
    steps: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    tape_steps: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows) and all(s.ok for s in self.steps)

    @property
    def first_divergent_step(self) -> int | None:
        """The latest time step at which any per-step series diverges (None if none does)."""
        firsts = [s.first for s in self.steps if s.first is not None]
        return max(firsts) if firsts else None

    def __getitem__(self, name: str) -> ParamCheck:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def __bool__(self) -> bool:
        return self.ok

    def _tables(self) -> list[tuple[list[str], list[list[str]]]]:
        """[(header, rows)] of string cells: the parameter table, then the per-step table if any."""
        hand = any(r.hand is not None for r in self.rows)
        kinks = any(r.kinks for r in self.rows)
        head = (["param", "shape", "max abs err", "max rel err", "worst at", "fd", "tape"] + ["hand"] * hand
                + ["signs", "tape~fd"] + ["kinks"] * kinks + ["verdict"])
        rows = []
        for r in self.rows:
            at = r.worst
            values = [r.fd[at], r.tape[at]] + [r.hand[at] if r.hand is not None else None] * hand
            verdict = r.band + (f" ({r.blame})" if r.blame else "") + (f": {r.diagnosis}" if r.diagnosis else "")
            rows.append([r.name, str(r.tape.shape), f"{r.max_abs:.2e}", f"{r.max_rel:.2e}", str(at)]
                        + [_num(v) for v in values] + [f"{r.signs[0]}/{r.signs[1]}", f"{r.tape_fd_rel:.1e}"]
                        + [str(r.kinks)] * kinks + [verdict])
        tables = [(head, rows)]
        if self.steps:
            steps = sorted({t for s in self.steps for t in s.rel})
            shead = ["per step: hand vs tape", f"t = {steps[0]}..{steps[-1]}", "first divergent", "rel err there",
                     "diagnosis"]
            srows = [[s.name, "".join(_MARKS.get(band(s.rel[t]), "x") if t in s.rel else " " for t in steps),
                      "-" if s.first is None else f"t = {s.first}",
                      "-" if s.first is None else f"{s.rel[s.first]:.2e}", s.diagnosis] for s in self.steps]
            tables.append((shead, srows))
        return tables

    @property
    def inconclusive(self) -> bool:
        """True when nothing disagrees but some parameter could not be checked at its precision."""
        return (any(r.band == "inconclusive" for r in self.rows) and all(r.ok or r.band == "inconclusive"
                                                                        for r in self.rows)
                and all(s.ok for s in self.steps))

    @property
    def verdict(self) -> str:
        """'ok', 'mismatch' or 'inconclusive'."""
        return "ok" if self.ok else "inconclusive" if self.inconclusive else "mismatch"

    def _summary(self) -> list[str]:
        """The verdict lines: what mismatches and, per step, where the error enters."""
        if self.ok:
            return ["gradients match"]
        if self.inconclusive:
            names = ", ".join(r.name for r in self.rows if r.band == "inconclusive")
            return [f"INCONCLUSIVE for {names}: finite differences cannot resolve the gradient at this precision; "
                    "check in float64"]
        bad = [r.name for r in self.rows if not r.ok and r.band != "inconclusive"]
        lines = [f"MISMATCH in {', '.join(bad)}" if bad else "MISMATCH per step"]
        step = self.first_divergent_step
        if step is not None:
            # `names` is a str in the inconclusive branch above (which returns), a function here
            def names(keep: Callable[[StepCheck], bool]) -> tuple[str, int]:  # type: ignore[misc]
                found = [s.name[:-len(STEPS)] for s in self.steps if keep(s)]
                return ", ".join(found), len(found)
            agree, n_agree = names(lambda s: step in s.rel and band(s.rel[step]) in GOOD)  # type: ignore[operator]
            bad_steps, n_bad = names(lambda s: s.first == step)  # type: ignore[operator]
            where = (f"{bad_steps} {'diverges' if n_bad == 1 else 'diverge'} there"
                     + (f"; {agree} {'still agrees' if n_agree == 1 else 'still agree'}" if agree else ""))
            lines.append(f"first divergent time step (backward order): t = {step}: {where}")
        return lines

    def __str__(self) -> str:
        tables = "\n\n".join(format_table(h, r) for h, r in self._tables())
        return tables + "\n" + "\n".join([f"note: {n}" for n in self.notes] + self._summary())

    __repr__ = __str__

    def _repr_markdown_(self) -> str:
        md = ["\n".join(["| " + " | ".join(h) + " |", "|" + "---|" * len(h)]
                        + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows])
              for h, rows in self._tables()]
        return "\n\n".join(md + [f"*{n}*" for n in self.notes] + [f"**{line}**" for line in self._summary()])

    def _repr_html_(self) -> str:
        def table(h: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
            th = "".join(f"<th>{html.escape(c, quote=False)}</th>" for c in h)
            trs = "".join("<tr>" + "".join(f"<td>{html.escape(c, quote=False)}</td>" for c in r) + "</tr>"
                          for r in rows)
            return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"
        notes = "".join(f"<p><i>{html.escape(n, quote=False)}</i></p>" for n in self.notes)
        summary = "".join(f"<p><b>{html.escape(line, quote=False)}</b></p>" for line in self._summary())
        return "".join(table(h, r) for h, r in self._tables()) + notes + summary


def compare(loss_fn: Callable[..., Tensor], params: Any, hand: Any = None, per_step: bool = False,
            eps: float = 1e-6) -> "CompareReport":
    """Compare central finite differences, the tape and hand-derived gradients of `loss_fn`.

    loss_fn:  a function of the parameters, `lambda U, W, b: ...` (called with the tensors of `params` in
              order, as `tapegrad.gradcheck` calls its fn), or of no arguments, `lambda: ...`, reading the
              tensors it closes over. Returns a scalar Tensor. Finite differences perturb the
              parameters' arrays in place. Run step t inside `with tapegrad.scope(t=t):` for per-step checks.
    params:   {name: Tensor} or a Module (its `named_parameters()`).
    hand:     {name: array shaped like the parameter} or a function returning such a dict; may
              leave parameters out. With per_step=True it may also hold
              "name@steps": [T arrays], the contribution of parameter `name`'s use at each step t
                            (they add up to the total), and
              "h@steps":    [T arrays], the total derivative dL/dh_t, for any state h: the tensor
                            named "h" (`h.name = "h"`) recorded at step t.
              A list is indexed by the step number of `scope(t=...)`; a dict {t: array} also works.
    per_step: drill down per time step: the tape splits each parameter's gradient over the
              records of step t that use it, and dL/dh_t is the gradient of the tensor named h.
    eps:      finite-difference step. Each parameter entry costs two evaluations of loss_fn, so
              check on small sizes.
    Returns a `CompareReport`.
    """
    report, tape = _compare(loss_fn, params, hand, per_step, eps)
    named = _named(params)
    _explain(report, tape, eps, bind(loss_fn, list(named.values()), "compare"), named)
    return report


def _compare(loss_fn: Callable[..., Tensor], params: Any, hand: Any, per_step: bool,
             eps: float) -> tuple["CompareReport", Tape]:
    """`compare` without the follow-up notes: (report, Tape of the unperturbed loss)."""
    params = _named(params)
    loss_fn = bind(loss_fn, list(params.values()), "compare")
    notes = _precision_notes(params)
    given = hand() if callable(hand) else hand
    totals, hand_steps, transposed = _split_hand(given, params, per_step)

    with enable_grad(), Tape() as tape:
        loss = loss_fn()
    if not isinstance(loss, Tensor) or loss.size != 1:
        raise InvalidValueError(f"compare: loss_fn must return a scalar Tensor, got {_what(loss)}")
    base = _kink_signature(tape)
    states = {k: _find_states(tape, k) for k in hand_steps if k not in params}
    uses = _matmul_uses(tape, {k: params[k] for k in hand_steps if k in params}) if hand_steps else {}
    tape_totals, split, state_grads = _tape_gradients(loss, params, states, uses)

    rows = []
    for name, p in params.items():
        fd, noise, kinked = (a.reshape(p.shape) for a in _finite_differences(loss_fn, p, eps, base))
        h: Any = totals.get(name)          # .T and .shape are read only for a transposed name, which hand gives
        row = _param_check(name, fd, noise, kinked, tape_totals[name], h.T if name in transposed else h,
                           p.dtype != np.float64)
        if name in transposed:
            row.band, row.blame = "wrong", "hand"
            row.diagnosis = (f"hand is the transpose of the tape's gradient (hand {h.shape}, parameter {p.shape})"
                             if row.max_rel < 1e-4 or row.judged != ("hand", "tape") else
                             f"hand has the transposed shape {h.shape} of the parameter's {p.shape}, and "
                             "transposing it does not match either")
        rows.append(row)
    kinked_rows = [f"{r.name} ({r.kinks})" for r in rows if r.kinks]
    if kinked_rows:
        notes.append("finite differences crossed a kink (relu/max/clip/abs...) at entries of "
                     f"{', '.join(kinked_rows)}; those entries are left out of the comparisons with fd")

    report = CompareReport(rows, notes=notes)
    if per_step and not hand_steps:
        steps_found = sorted({r.scope.step for r in tape.records if r.scope is not None and r.scope.step is not None})
        where = (f"the tape has steps t = {steps_found[0]}..{steps_found[-1]}" if steps_found else
                 "and the tape has no records inside `scope(t=...)` either")
        notes.append(f"per_step=True but hand has no per-step entries, so there is no per-step table ({where}); "
                     f"expected keys 'name{STEPS}' for parameters ({', '.join(repr(n + STEPS) for n in params)}: "
                     f"a list of each step's contribution) and/or 'h{STEPS}' (dL/dh_t of the state tensor named "
                     "'h' at each step)")
    elif not per_step and any(k.endswith(STEPS) for k in (given or {})):
        notes.append(f"hand has per-step entries ({', '.join(k for k in given if k.endswith(STEPS))}) but "
                     "per_step=False, so they are not checked; pass per_step=True for the per-step table")
    if per_step:
        report.tape_steps = {**split, **state_grads}
        context = _Context(uses, state_grads)
        for key, series in hand_steps.items():
            if key in split and None in split[key]:
                notes.append(f"{key} is used outside any scope(t=...) (an input projection or a {key}.T computed "
                             f"before the loop): the tape has no per-step split of it, so {key + STEPS} is not checked")
            else:
                report.steps.append(_step_check(key + STEPS, series, report.tape_steps[key], context))
        for r in rows:                   # the parameter table points at the per-step diagnosis
            step = next((c for c in report.steps if c.name == r.name + STEPS and c.diagnosis), None)
            if step is not None and not r.ok and not r.diagnosis:
                r.diagnosis = f"per step: {step.diagnosis}"
    return report, tape


def _tape_gradients(loss: Tensor, params: Mapping[str, Tensor], states: Mapping[str, Mapping[Any, Tensor]],
                    uses: Mapping[str, Mapping[Any, "_Use"]] | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, dict[Any, np.ndarray]],
                               dict[str, dict[Any, np.ndarray]]]:
    """The tape's gradients: totals {name: array}, each parameter's split over the steps of the records
    that use it {name: {t: array}} (t None outside any step), and dL/dh_t {key: {t: array}} of `states`.
    uses: {name: {t: _Use}} whose `.G` (the gradient of the matmul's output) is filled in."""
    uses = uses or {}
    use_list = [u for per in uses.values() for u in per.values()]
    ids = {id(p): name for name, p in params.items()}
    split: dict[str, dict[Any, np.ndarray]] = {name: {} for name in params}

    def on_edge(rec: Record, i: int, parent: Any, g: Any) -> None:
        name = ids.get(id(parent))
        if name is not None:
            t = rec.scope.step if rec.scope is not None else None
            got = split[name].get(t)
            split[name][t] = np.array(g, np.float64) if got is None else got + g
    state_list = [(k, t, h) for k, steps in states.items() for t, h in steps.items()]
    grads = grad(loss, [*params.values(), *(h for _, _, h in state_list), *(u.out for u in use_list)],
                 retain_graph=True, on_edge=on_edge)
    state_grads: dict[str, dict[Any, np.ndarray]] = {k: {} for k in states}
    n = len(params) + len(state_list)
    for (k, t, _), g in zip(state_list, grads[len(params):n]):
        state_grads[k][t] = g.data
    for u, g in zip(use_list, grads[n:]):
        u.G = np.asarray(g.data, np.float64)
    return {name: g.data for name, g in zip(params, grads)}, split, state_grads


def _named(params: Any) -> dict[str, Tensor]:
    if hasattr(params, "named_parameters"):
        params = dict(params.named_parameters())
    if not isinstance(params, dict) or not params:
        raise ArgumentError(f"compare: params must be a non-empty dict name -> Tensor or a Module, got {_what(params)}")
    for name, p in params.items():
        if not isinstance(p, Tensor) or not p.requires_grad or not p.is_leaf:
            raise ArgumentError(f"compare: params[{name!r}] must be a leaf Tensor with requires_grad=True, "
                                f"got {_what(p)}")
    return params


def _what(x: object) -> str:
    return f"Tensor of shape {x.shape}" if isinstance(x, Tensor) else type(x).__name__


def _precision_notes(params: Mapping[str, Tensor]) -> list[str]:
    low = [f"{n} ({p.dtype})" for n, p in params.items() if p.dtype != np.float64]
    if not low:
        return []
    text = (f"parameters {', '.join(low)} are not float64: finite differences in lower precision resolve "
            "only a few digits; check in float64 (tapegrad.set_default_dtype(np.float64), float64 data)")
    warnings.warn(f"compare: {text}", stacklevel=4)
    return [text]


def _split_hand(hand: Any, params: Mapping[str, Tensor], per_step: bool
                ) -> tuple[dict[str, np.ndarray], dict[str, dict[Any, np.ndarray]], set[str]]:
    """({name: total}, {key: {t: float64 array}}); the per-step keys are read only with per_step."""
    if hand is None:
        return {}, {}, set()
    if not isinstance(hand, dict):
        raise ArgumentError("compare: hand must be a dict name -> array or a function returning one, "
                            f"got {_what(hand)}")
    totals, steps, transposed = {}, {}, set()
    for key, value in hand.items():
        if key.endswith(STEPS):
            if per_step:
                base = key[:-len(STEPS)]
                series = dict(value) if isinstance(value, dict) else dict(enumerate(value))
                steps[base] = {t: np.asarray(v, np.float64) for t, v in series.items() if v is not None}
                if base in params:
                    for t, v in steps[base].items():
                        _check_shape(f"{key}[{t}]", v, params[base].shape)
            continue
        if key not in params:
            raise InvalidValueError(f"compare: hand has a gradient for {key!r}, which is not a parameter "
                           f"(parameters: {', '.join(params)}; per-step values use the suffix {STEPS!r})")
        totals[key] = np.asarray(value)
        shape = params[key].shape
        if totals[key].ndim == 2 and totals[key].shape == shape[::-1] != shape:
            transposed.add(key)          # a finding (reported in the row), not an error
        else:
            _check_shape(key, totals[key], shape)
    return totals, steps, transposed


def _check_shape(key: str, value: np.ndarray, shape: tuple[int, ...]) -> None:
    if value.shape != shape:
        raise InvalidValueError(f"compare: hand[{key!r}] has shape {value.shape} but the parameter has shape {shape}")


def _find_states(tape: Tape, name: str) -> dict[Any, Tensor]:
    """{t: Tensor} of the recorded tensors named `name`, one per time step."""
    found = {}
    for rec, out in zip(tape.records, tape.outputs):
        if out.name == name:
            t = rec.scope.step if rec.scope is not None else None
            if t is None or t in found:
                where = "outside any step" if t is None else f"twice at t = {t}"
                raise InvalidValueError(f"compare: hand[{name + STEPS!r}] needs one tensor named {name!r} per step "
                                        f"inside `scope(t=...)`; found one {where}")
            found[t] = out
    if not found:
        raise InvalidValueError(f"compare: hand[{name + STEPS!r}] given but no recorded tensor is named {name!r}: set "
                         f"`h.name = {name!r}` on the state computed inside `with tapegrad.scope(t=t):`")
    return found


# -- finite differences, kinks ----------------------------------------------------------------------

def _finite_differences(loss_fn: Callable[[], Tensor], x: Tensor, eps: float, base: list[Any] | None,
                        indices: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Central differences of loss_fn in the flat entries `indices` of x (default all): flat arrays of
    (values, round-off estimates, crossed a kink). base: the kink signature of the unperturbed loss
    (None when the loss has no kink op)."""
    def evaluate() -> Any:
        if base is None:
            return _evaluate(loss_fn), None
        with enable_grad(), Tape() as tape:
            value = float(loss_fn().data)
        return value, _kink_signature(tape)
    tiny = np.finfo(x.dtype).eps
    values, noise, kinked = [], [], []
    for _, (up, s_up), (down, s_down) in central_differences(x, eps, evaluate, indices):
        values.append((up - down) / (2 * eps))
        noise.append(tiny * (abs(up) + abs(down)) / (2 * eps))
        kinked.append(base is not None and not (_same(s_up, base) and _same(s_down, base)))
    return np.array(values, np.float64), np.array(noise, np.float64), np.array(kinked, bool)


def _kink_signature(tape: Tape) -> list[Any] | None:
    """Which side of its kink every input of every KINKS op on the tape lies on (None: no such op)."""
    sig = [KINKS[r.op](*_record_inputs(r), **r.params) for r in tape.records if r.op in KINKS]
    return sig or None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return np.array_equal(a, b)


def _record_inputs(rec: Record) -> list[Any]:
    """The input arrays of a record: saved ones, else the outputs the Tape keeps alive; None if neither."""
    if rec.saved is not None:
        return list(rec.saved)
    out = []
    for p in rec.parents:
        t = p.tensor() if isinstance(p, Record) else p
        out.append(None if t is None else t.data)
    return out


# -- judging ---------------------------------------------------------------------------------------

def _exact_floor(*arrays: np.ndarray) -> float:
    """Rounding slack for comparing exact gradients: ROUNDING epsilons of the largest entry."""
    eps = max(np.finfo(a.dtype if a.dtype.kind == "f" else np.float64).eps for a in arrays)
    return ROUNDING * eps * max(float(np.max(np.abs(a), initial=0)) for a in arrays)


RESOLVED = 1e-5    # finite differences must resolve this relative size of the gradient for a verdict in low precision


def _param_check(name: str, fd: np.ndarray, noise: np.ndarray, kinked: np.ndarray, tape: np.ndarray,
                 hand: np.ndarray | None, low_precision: bool = False) -> ParamCheck:
    smooth = ~kinked
    fd_floor = FD_RESOLUTION * noise
    pairs: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, Any, np.ndarray]] = {
        ("tape", "fd"): (tape, fd, fd_floor, smooth)}
    if hand is not None:
        floor = _exact_floor(hand, tape)
        pairs[("hand", "tape")] = (hand, tape, floor, np.ones_like(smooth))
        pairs[("hand", "fd")] = (hand, fd, fd_floor, smooth)
    rel = {k: np.where(m, relative_error(a, b, f), 0.0) for k, (a, b, f, m) in pairs.items()}
    worst_rel = {k: float(np.max(r, initial=0)) for k, r in rel.items()}
    good = {k: band(r) in GOOD for k, r in worst_rel.items()}

    if hand is None:
        judged, blame = ("tape", "fd"), "tape"
    elif good[("tape", "fd")]:
        judged, blame = ("hand", "tape"), "hand"
    elif good[("hand", "fd")]:
        judged, blame = ("tape", "fd"), "tape"
    elif good[("hand", "tape")]:
        judged, blame = ("tape", "fd"), "fd"
    else:
        judged, blame = ("hand", "fd"), "hand and tape"
    a, b, floor, mask = pairs[judged]
    r = rel[judged]
    worst = np.unravel_index(int(np.argmax(r)), r.shape) if r.size else ()
    diff = np.where(mask, np.abs(np.asarray(a, np.float64) - b), 0.0)
    agree = (np.sign(a) == np.sign(b)) | (np.maximum(np.abs(a), np.abs(b)) <= floor)
    verdict = band(worst_rel[judged])
    scale = max(float(np.max(np.abs(fd), initial=0)), float(np.max(np.abs(tape), initial=0)))
    resolution = float(np.max(noise, initial=0)) / scale if scale else 0.0
    if low_precision and resolution > RESOLVED and verdict in GOOD:
        check = ParamCheck(name, fd, tape, hand, judged, 0.0, worst_rel[judged], (), (0, 0), kinked,
                           worst_rel[("tape", "fd")], "inconclusive", "", "")
        diff = np.where(mask, np.abs(np.asarray(a, np.float64) - b), 0.0)
        check.max_abs = float(np.max(diff, initial=0))
        check.worst = tuple(int(i) for i in (np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else ()))
        agree = (np.sign(a) == np.sign(b)) | (np.maximum(np.abs(a), np.abs(b)) <= floor)
        check.signs = (int(np.sum(agree & mask)), int(np.sum(mask)))
        check.diagnosis = (f"finite differences at this precision resolve only about {resolution:.0e} of the "
                           "gradient, so they can neither confirm nor refute it")
        return check
    return ParamCheck(
        name, fd, tape, hand, judged, float(np.max(diff, initial=0)), worst_rel[judged],
        tuple(int(i) for i in worst), (int(np.sum(agree & mask)), int(np.sum(mask))), kinked,
        worst_rel[("tape", "fd")], verdict, "" if verdict in GOOD else blame,
        "" if verdict in GOOD else _diagnose(np.asarray(a, np.float64), np.asarray(b, np.float64), judged))


def _diagnose(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> str:
    """A short guess at how `a` relates to `b` when they disagree: sign, factor, transpose, zero."""
    x, y = names
    if not np.any(b) or not np.all(np.isfinite(a)):
        return ""
    if not np.any(a):
        return f"{x} is all zeros"
    floor = _exact_floor(a, b) + 1e-9 * np.abs(b).max()
    close = lambda u: band(float(np.max(relative_error(u, b, floor)))) in GOOD  # noqa: E731
    if a.ndim == 2 and a.shape[0] == a.shape[1] and close(a.T):
        return f"{_WHO[x]} is the transpose of {_WHOSE[y]}"
    k = float(np.vdot(a, b) / np.vdot(b, b))
    if k != 0 and close(a / k):
        return f"{x} = -{y} (sign flipped)" if abs(k + 1) < 1e-6 else f"{x} = {k:.4g} x {y}"
    return ""


@dataclass(eq=False)
class _Use:
    """A parameter's matmul (or bias add) at one step: the other operand A (`right`: A @ W, False: W @ A,
    None: a bias added, A unused), the output tensor, the gradient G of that output (filled in by
    `_tape_gradients`) and the step's tanh output y of the output's shape (None if not exactly one)."""
    A: np.ndarray | None
    right: bool | None
    out: Tensor
    W: np.ndarray
    y: np.ndarray | None = None
    G: np.ndarray | None = None

    def contribution(self, G: Any = None, A: Any = None) -> np.ndarray:    # Any: None means self's array
        """The parameter-gradient contribution of this use for output gradient G and operand A."""
        G = self.G if G is None else G
        A = self.A if A is None else A
        if self.right is None:                  # a bias: the gradient summed over what broadcasting added
            if G.ndim > self.W.ndim:
                G = G.sum(axis=tuple(range(G.ndim - self.W.ndim)))
            axes = tuple(i for i, n in enumerate(self.W.shape) if n == 1 and G.shape[i] != 1)
            return G.sum(axis=axes, keepdims=True) if axes else G
        if self.right:
            return A.reshape(-1, A.shape[-1]).T @ G.reshape(-1, G.shape[-1])
        return G @ A.T


class _Context:
    """What the per-step diagnoses read: each parameter's matmul uses per step, the recurrent one."""

    def __init__(self, uses: Mapping[str, Mapping[Any, _Use]], states: Mapping[str, Mapping[Any, np.ndarray]]) -> None:
        self.uses, self.states = uses, states
        self.recurrent = None            # (name, {t: _Use}): the parameter whose step-t+1 operand is step t's y
        for name, per in uses.items():
            pairs: list[tuple[_Use, Any]] = [(per[t], per[t + 1]) for t in per if t + 1 in per]  # v.A set when v.right
            if pairs and all(u.right and v.right and u.y is not None and u.y.shape == v.A.shape
                             and np.allclose(u.y, v.A) for u, v in pairs):
                self.recurrent = (name, per)
                break


def _matmul_uses(tape: Tape, params: Mapping[str, Tensor]) -> dict[str, dict[Any, _Use]]:
    """{name: {t: _Use}} for the parameters used by exactly one matmul at step t (others are left out)."""
    ids = {id(p): name for name, p in params.items()}
    found: dict[str, dict[Any, Any]] = {}     # name -> {t: _Use, or None where used more than once at t}
    tanh: dict[Any, list[np.ndarray]] = {}
    for rec, out in zip(tape.records, tape.outputs):
        t = rec.scope.step if rec.scope is not None else None
        if t is None:
            continue
        if rec.op == "tanh":
            tanh.setdefault(t, []).append(out.data)
        if rec.op == "add":
            for parent in rec.parents[:2]:
                name = ids.get(id(parent))
                if name is not None:
                    per = found.setdefault(name, {})
                    per[t] = None if t in per else _Use(None, None, out, np.asarray(parent.data, np.float64))
            continue
        if rec.op != "matmul":
            continue
        arrays = _record_inputs(rec)
        for i, parent in enumerate(rec.parents[:2]):
            name = ids.get(id(parent))
            if name is None or arrays[1 - i] is None:
                continue
            per = found.setdefault(name, {})
            A = np.asarray(arrays[1 - i], np.float64)
            per[t] = None if t in per or (i == 0 and A.ndim != 2) else _Use(A, i == 1, out, np.asarray(parent.data,
                                                                                                         np.float64))
    uses = {}
    for name, per in found.items():
        per = {t: u for t, u in per.items() if u is not None}
        for t, u in per.items():
            ys = [y for y in tanh.get(t, []) if y.shape == u.out.shape]
            u.y = np.asarray(ys[0], np.float64) if len(ys) == 1 else None
        if per:
            uses[name] = per
    return uses


def _step_check(name: str, hand: Mapping[Any, np.ndarray], tape: Mapping[Any, np.ndarray],
                context: _Context | None = None) -> StepCheck:
    """Hand vs tape per step. hand, tape: {t: array}; a step the tape lacks counts as zero."""
    steps = sorted(hand)
    ref = {t: tape.get(t, np.zeros_like(hand[t])) for t in steps}
    for t in steps:
        if hand[t].shape != ref[t].shape:
            raise InvalidValueError(f"compare: hand[{name!r}][{t}] has shape {hand[t].shape} but the tape's is "
                                    f"{ref[t].shape}")
    floor = _exact_floor(*hand.values(), *ref.values())
    rel = {t: float(np.max(relative_error(hand[t], ref[t], floor), initial=0)) for t in steps}
    first = next((t for t in reversed(steps) if band(rel[t]) not in GOOD), None)
    diagnosis = ""
    if first is not None:
        diagnosis = _diagnose_steps(name[:-len(STEPS)], hand, ref, tape, first, floor, context)
    return StepCheck(name, rel, first, diagnosis)


def _diagnose_steps(base: str, hand: Mapping[Any, np.ndarray], ref: Mapping[Any, np.ndarray],
                    tape: Mapping[Any, np.ndarray], first: Any, floor: float, context: _Context | None) -> str:
    """How a per-step series goes wrong: the classic BPTT slips, tried against what the tape recorded."""
    steps = sorted(hand)

    def close(a: Any, b: Any) -> bool:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return a.shape == b.shape and band(float(np.max(relative_error(a, b, floor), initial=0))) in GOOD

    def holds(candidate: Callable[..., Any], where: Sequence[Any]) -> bool:
        """candidate(t) matches hand[t] at every step of `where` (a candidate that fails to apply is no match)."""
        try:
            return bool(where) and all(close(hand[t], candidate(t)) for t in where)
        except (ValueError, TypeError, KeyError):
            return False

    uses = context.uses.get(base, {}) if context is not None else {}
    recurrent = context.recurrent if context is not None else None
    # time shift: the operand of step t +- 1 in step t's product (h_t where h_{t-1} belongs)
    for s in (1, -1):
        where = [t for t in steps if t in uses and t + s in uses and uses[t].right is not None]
        if len(where) >= max(1, len(steps) - 1) and holds(lambda t, s=s: uses[t].contribution(A=uses[t + s].A), where):
            what = "h_t where h_(t-1) belongs" if s == 1 else "h_(t-2) where h_(t-1) belongs"
            return f"off by one in time: hand's product at step t uses the operand of step t{s:+d} ({what})"
    # the whole contribution shifted by a step
    for s in (-1, 1):
        where = [t for t in steps if t + s in tape]
        if where and holds(lambda t, s=s: tape[t + s], where):
            return f"hand's step t is the tape's step t{s:+d} (off by one in time)"
    # missing tanh derivative (1 - h^2) at the first divergent step
    u = uses.get(first)
    # u.y checked not None; the narrowing does not reach into the lambda, hence the ignore
    if u is not None and u.y is not None and holds(lambda t: u.contribution(G=u.G / (1 - u.y ** 2)), [first]):  # type: ignore[operator]
        return (f"at t = {first} hand leaves out tanh's derivative (1 - h^2) (the steps before it inherit the "
                "error through dh)")
    states = context.states if context is not None else {}
    if recurrent is not None and base in states and first + 1 in recurrent[1]:
        v = recurrent[1][first + 1]                    # dL/dh_first = ... + dz_(first+1) W^T: dz without tanh'
        # as above: v.y is checked, the lambda does not see it
        if v.y is not None and holds(lambda t: ref[t] + (v.G / (1 - v.y ** 2) - v.G) @ v.W.T, [first]):  # type: ignore[operator]
            return (f"at t = {first + 1} hand leaves out tanh's derivative (1 - h^2) before passing the gradient "
                    f"back through {recurrent[0]} (dL/dh_{first} and earlier inherit it)")
    # missing recurrent term: only step t's own loss reaches h_t
    if recurrent is not None:
        rname, R = recurrent

        def local(t: Any, G: Any) -> Any:
            # the recurrent parameter's uses all have y (_Context checks) and G (filled in by _tape_gradients)
            return G - (R[t + 1].G @ R[t + 1].W.T) * (1 - R[t].y ** 2) if t + 1 in R else G  # type: ignore[operator]
        text = (f"the recurrent term is missing: hand's dL/dh_t leaves out the gradient from step t+1 through "
                f"{rname} (only step t's own loss reaches h_t)")
        if uses and holds(lambda t: uses[t].contribution(G=local(t, uses[t].G)), [t for t in steps if t in uses]):
            return text
        if base in states and holds(
                lambda t: ref[t] - R[t + 1].G @ R[t + 1].W.T if t + 1 in R else ref[t], steps):
            return text
    # sign, factor, transpose: at the first divergent step, and whether it holds at every step
    d = _diagnose(np.asarray(hand[first], np.float64), np.asarray(ref[first], np.float64), ("hand", "tape"))
    if d:
        others = [t for t in steps if t != first and np.any(ref[t])]
        every = all(_diagnose(np.asarray(hand[t], np.float64), np.asarray(ref[t], np.float64), ("hand", "tape")) == d
                    for t in others)
        return f"{'at every step' if every and others else f'at t = {first}'}: {d}"
    return ""


def _explain(report: CompareReport, tape: Tape, eps: float, loss_fn: Callable[[], Tensor] | None = None,
             params: Mapping[str, Tensor] | None = None) -> None:
    """Notes that point at the next tool: check.sweep when the tape is blamed, eps_sweep when fd is. The loss
    is said to be possibly non-smooth, or eps off, only on evidence: kink ops recorded on the tape, or an
    eps sweep of the worst entry in which another eps agrees with the tape."""
    doubtful = [r for r in report.rows if r.blame == "fd"]
    tape_bad = [r for r in report.rows if "tape" in r.blame]
    if tape_bad:
        names = ", ".join(r.name for r in tape_bad)
        bad = [o for o in sweep(tape, eps).rows if not o.ok]
        if bad:
            found = "; ".join(f"the rule of {o.op!r} wrong (rel err {o.max_rel:.1e} at {o.where})" for o in bad)
            report.notes.append(f"the tape disagrees with finite differences in {names}; check.sweep of its records "
                                f"finds {found}")
            return
        kinks = sorted({r.op for r in tape.records if r.op in KINKS})
        evidence = []
        if kinks:
            evidence.append(f"the loss records kink ops ({', '.join(kinks)}), whose finite differences can straddle "
                            "a kink that the per-entry kink check misses")
        if loss_fn is not None and params is not None:
            worst = max(tape_bad, key=lambda r: r.max_rel)
            try:
                swept = eps_sweep(loss_fn, params[worst.name], worst.worst, params=params)
            except Exception:            # an evidence hunt must never hide the report
                swept = None
            if swept is not None:
                best = min((r for r in swept.rows if not r.kink), key=lambda r: r.rel_err, default=None)
                if best is not None and band(best.rel_err) in GOOD:
                    evidence.append(f"an eps sweep of {worst.name}{list(worst.worst)} agrees with the tape at "
                                    f"eps = {best.eps:.0e} (rel err {best.rel_err:.1e}): eps = {eps:.0e} is off")
        if evidence:
            report.notes.append(f"the tape disagrees with finite differences in {names}, and check.sweep finds every "
                                f"primitive's rule right; " + "; ".join(evidence))
            doubtful += tape_bad
        else:
            report.notes.append(f"the tape disagrees with finite differences in {names}; check.sweep(tape) checks each "
                                "recorded op's rule on its own inputs and finds them right here, so look for a value "
                                "the tape does not see (.data, numpy on a Tensor's array, an in-place write) between "
                                "the parameters and the loss")
    for r in doubtful:
        report.notes.append(f"for {r.name}, see check.eps_sweep(loss_fn, params[{r.name!r}], {r.worst}, params=params)")


_WHO = {"hand": "hand", "tape": "the tape's gradient", "fd": "the finite differences"}
_WHOSE = {"hand": "hand's", "tape": "the tape's gradient", "fd": "the finite differences"}
_MARKS = {"fine": ".", "ok": ".", "suspicious": "?", "inconclusive": "~"}     # per-step marks; "x" for wrong


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.6g}"


# -- sweep: every primitive's rule -----------------------------------------------------------------

@dataclass
class OpCheck:
    """One primitive over all its records on a tape: records checked, skipped (inputs not kept),
    the worst relative error of its rule vs finite differences, and where ('%k input i t=..')."""
    op: str
    checked: int
    skipped: int
    max_rel: float
    where: str

    @property
    def ok(self) -> bool:
        return band(self.max_rel) in GOOD


@dataclass
class SweepReport:
    """Result of `sweep`: one OpCheck per primitive; `.ok`; `.wrong` names the failing primitives."""
    rows: list

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def wrong(self) -> list[str]:
        return [r.op for r in self.rows if not r.ok]

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        head = ("primitive", "records checked", "skipped", "worst rel err", "worst at", "verdict")
        rows = [(r.op, str(r.checked), str(r.skipped), f"{r.max_rel:.2e}", r.where,
                 "WRONG rule" if not r.ok else band(r.max_rel) if r.checked else "not checked") for r in self.rows]
        verdict = "every rule matches" if self.ok else f"WRONG rules: {', '.join(self.wrong)}"
        return format_table(head, rows) + "\n" + verdict

    __repr__ = __str__


def sweep(tape: Tape, eps: float = 1e-6, seed: int = 0) -> "SweepReport":
    """Check each record's own derivative rule on its recorded inputs, in float64.

    For a record out = op(x_1..x_n), compares the rule's gradient of sum(out * w) (w random) for each
    input that is a Tensor with finite differences. Inputs come from what the record saved or else
    from the outputs the Tape keeps alive; a record whose constant operand was not kept (add/sub of a
    plain number, or any constant after backward freed the saved values) is counted as skipped.
    Returns a `SweepReport` naming every primitive whose rule is wrong.
    """
    rng = np.random.default_rng(seed)
    checked: dict[str, list] = {}
    skipped: dict[str, int] = {}
    for k, rec in enumerate(tape.records):
        positions = [i for i, p in enumerate(rec.parents) if p is not None and rec.fn.differentiable(i)]
        if not positions:
            continue
        rel = _check_record(rec, positions, eps, rng)
        checked.setdefault(rec.op, [])
        if rel is None:
            skipped[rec.op] = skipped.get(rec.op, 0) + 1
            continue
        i = max(rel, key=rel.get)  # type: ignore[arg-type]  # dict.get's overloads confuse max; every key is there
        name = getattr(rec.parents[i], "name", None)       # a leaf's name, e.g. the parameter "W"
        step = rec.scope.step if rec.scope is not None else None
        checked[rec.op].append((rel[i], f"%{k} input {i}" + (f" ({name})" if name else "")
                                + ("" if step is None else f" t={step}")))
    return SweepReport([OpCheck(op, len(c), skipped.get(op, 0), *max(c, default=(0.0, "-")))
                        for op, c in checked.items()])


def _check_record(rec: Record, positions: Sequence[int], eps: float, rng: np.random.Generator
                  ) -> dict[int, float] | None:
    """{input position: max rel error of the rule}, or None if the record cannot be re-run."""
    arrays = _record_inputs(rec)
    if any(a is None for a in arrays) or any(np.asarray(arrays[i]).dtype.kind != "f" for i in positions):
        return None
    args = [np.asarray(a) if i not in positions else Tensor(np.array(a, np.float64), True, f"input {i}")
            for i, a in enumerate(arrays)]
    out = apply(rec.fn, args, rec.params)
    if out.dtype != np.float64:
        return None
    w = rng.standard_normal(out.shape)
    local, _ = _compare(lambda: (apply(rec.fn, args, rec.params) * w).sum(),
                        {f"{i}": args[i] for i in positions}, None, False, eps)
    return {int(r.name): r.max_rel for r in local.rows}


# -- eps sweep --------------------------------------------------------------------------------------

class EpsRow(NamedTuple):
    """One eps: the central difference, its error against the tape, and the two error estimates:
    truncation ~ eps^2 (from the differences at eps and 2 eps), round-off ~ eps_machine |L| / eps."""
    eps: float
    fd: float
    abs_err: float
    rel_err: float
    truncation: float
    round_off: float
    kink: bool


@dataclass
class EpsSweep:
    """Central differences of one entry for a range of eps against the tape's exact value (`rows`: EpsRow)."""
    name: str
    index: tuple
    tape: float
    rows: list

    @property
    def best(self) -> float:
        """The eps with the smallest error (kink-crossing ones excluded)."""
        usable = [r for r in self.rows if not r.kink] or self.rows
        return min(usable, key=lambda r: r.abs_err).eps

    def __str__(self) -> str:
        head = ("eps", "finite difference", "abs err", "rel err", "truncation", "round-off", "dominated by")
        rows = [(f"{e:.0e}", f"{fd:.12g}", f"{err:.2e}", f"{rel:.2e}", f"{tr:.1e}", f"{ro:.1e}",
                 "kink crossed" if kink else ("truncation" if tr > ro else "round-off"))
                for e, fd, err, rel, tr, ro, kink in self.rows]
        return (f"{self.name}{list(self.index)}: tape {self.tape:.12g}\n" + format_table(head, rows)
                + f"\nbest eps: {self.best:.0e}")

    __repr__ = __str__


def eps_sweep(loss_fn: Callable[..., Tensor], param: Tensor, index: Any, eps: Any = None,
              params: Any = None) -> "EpsSweep":
    """Tabulate the central difference of `loss_fn` in `param[index]` for each eps (default 1e-1 ... 1e-12).

    param: a leaf Tensor that loss_fn reads; index: a tuple (or flat int) into it. loss_fn follows
    `compare`'s convention: no arguments, or the tensors `params` (a list, dict or Module; default
    [param]) as positional arguments. Returns an `EpsSweep`.
    """
    if params is None:
        params = [param]
    elif hasattr(params, "named_parameters"):
        params = [p for _, p in params.named_parameters()]
    elif isinstance(params, dict):
        params = list(params.values())
    loss_fn = bind(loss_fn, list(params), "eps_sweep")
    eps = 10.0 ** -np.arange(1, 13) if eps is None else np.asarray(eps, np.float64)
    flat = int(np.ravel_multi_index(index, param.shape)) if isinstance(index, tuple) else int(index)
    with enable_grad(), Tape() as tape:
        loss = loss_fn()
    base = _kink_signature(tape)
    exact = float(grad(loss, param)[0].data.reshape(-1)[flat])
    rows = []
    for e in eps:
        (fd,), (noise,), (kink,) = _finite_differences(loss_fn, param, e, base, [flat])
        (fd2,), _, _ = _finite_differences(loss_fn, param, 2 * e, base, [flat])
        rows.append(EpsRow(float(e), float(fd), abs(fd - exact), float(relative_error(fd, exact)), abs(fd2 - fd) / 3,
                           float(noise), bool(kink)))
    return EpsSweep(param.name or "param", tuple(int(i) for i in np.unravel_index(flat, param.shape)), exact, rows)
