"""The tape: records of recorded ops, the scopes that label them, and the switches that control recording.

Every differentiable op on a Tensor appends one `Record` (op, parents, what backward keeps, scope,
index in recording order). Records link to their parents, so the records reachable from a loss form
its graph; `backward` sweeps them in reverse recording order. A `Tape` additionally collects every
record made inside its `with` block, for inspection and rendering.
"""
import gc
import itertools
import weakref
from contextlib import contextmanager
from typing import Any

# Recording state. Module globals, because the per-op path reads them on every op.
GRAD_ENABLED = True
CURRENT_SCOPE = None          # innermost Scope, or None
ACTIVE_TAPES: list["Tape"] = []   # Tapes whose `with` block is open
_counter = itertools.count()


next_index = _counter.__next__      # recording order of records


class Scope:
    """A label on records: module name and/or time step. Nested scopes form a chain via `parent`."""
    __slots__ = ("name", "t", "parent")

    def __init__(self, name, t, parent):
        self.name, self.t, self.parent = name, t, parent

    @property
    def path(self):
        """Dotted module path of all enclosing named scopes, e.g. 'encoder.cell'."""
        names, s = [], self
        while s is not None:
            if s.name:
                names.append(s.name)
            s = s.parent
        return ".".join(reversed(names))

    @property
    def step(self):
        """Innermost time step, or None."""
        s = self
        while s is not None:
            if s.t is not None:
                return s.t
            s = s.parent
        return None

    def __repr__(self):
        parts = [self.path] if self.path else []
        if self.step is not None:
            parts.append(f"t={self.step}")
        return " ".join(parts) or "<root>"


def describe_scope(scope):
    """'inside `lstm` at t = 3' style text for error messages ('' outside any scope)."""
    if scope is None:
        return ""
    where = []
    if scope.path:
        where.append(f"inside `{scope.path}`")
    if scope.step is not None:
        where.append(f"at t = {scope.step}")
    return " " + " ".join(where) if where else ""


@contextmanager
def scope(name=None, t=None):
    """Label the records made inside: `with scope("lstm"), scope(t=3): ...` (nesting composes)."""
    global CURRENT_SCOPE
    outer = CURRENT_SCOPE
    CURRENT_SCOPE = Scope(name, t, outer)
    try:
        yield CURRENT_SCOPE
    finally:
        CURRENT_SCOPE = outer


@contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector for a long loop that makes many small objects (an unroll,
    the reverse sweep). The tape makes no reference cycles, so reference counting frees it as usual; the
    collector's full passes over every live record would otherwise make a T-step unroll cost O(T^2)
    (measured: 2x the per-step cost at T = 5,000). Cycles the user's code makes are collected afterwards."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@contextmanager
def no_grad():
    """Nothing inside is recorded; results do not require grad."""
    global GRAD_ENABLED
    before, GRAD_ENABLED = GRAD_ENABLED, False
    try:
        yield
    finally:
        GRAD_ENABLED = before


@contextmanager
def enable_grad():
    """Re-enable recording inside a `no_grad()` block."""
    global GRAD_ENABLED
    before, GRAD_ENABLED = GRAD_ENABLED, True
    try:
        yield
    finally:
        GRAD_ENABLED = before


def is_grad_enabled():
    """Whether ops are recorded now (False inside `no_grad()`)."""
    return GRAD_ENABLED


class Record:
    """One recorded op: `op` applied to `parents`, producing a value of `shape`/`dtype`.

    parents: per input, the Record that produced it, the input Tensor itself if it is a leaf, or
             None for a plain constant.
    saved:   the input arrays backward keeps (the op declares which), or None.
    ans:     the output array if the op's derivative needs it, else None.
    """
    __slots__ = ("fn", "parents", "saved", "ans", "params", "shape", "dtype", "scope", "index", "freed",
                 "__dict__")
    # Rarely set, so class-level defaults (an instance dict appears only when one is set):
    requires_grad = True     # False only for records a Tape keeps of ops on constants
    retain = False           # backward stores the output's gradient in `output().grad`
    output = None            # weak reference to the output Tensor (set by Tape and retain_grad)
    stack = None             # the Python stack that recorded it (anomaly mode)

    def __init__(self, fn, parents, saved, ans, params, shape, dtype, scope, index):
        self.fn = fn
        self.parents = parents
        self.saved = saved
        self.ans = ans
        self.params = params
        self.shape = shape
        self.dtype = dtype
        self.scope = scope
        self.index = index
        self.freed = False   # backward has dropped its saved values

    @property
    def op(self):
        """The op's name, e.g. 'matmul'."""
        return self.fn.name

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def inputs(self):
        """The input Tensors (those still alive; a Tape keeps them all alive)."""
        return tuple(p.tensor() if isinstance(p, Record) else p for p in self.parents)

    def tensor(self):
        """The output Tensor if it is still alive, else None."""
        return self.output() if self.output is not None else None

    def __repr__(self):
        return format_record(self, {})


def format_record(rec, numbering):
    """One Wengert-list line; `numbering` maps records to display numbers (default: global index)."""
    def ref(p):
        if isinstance(p, Record):
            return f"%{numbering.get(p, p.index)}"
        return "const" if p is None else p.name or f"<{p.shape} {p.dtype}>"
    args = ", ".join(ref(p) for p in rec.parents)
    params = "".join(f", {k}={_short(v)}" for k, v in rec.params.items()) if rec.params else ""
    where = f"  # {rec.scope!r}" if rec.scope is not None else ""
    return f"%{numbering.get(rec, rec.index)} = {rec.op}({args}{params}) : {rec.shape} {rec.dtype}{where}"


def _short(value):
    if isinstance(value, (int, float, str, bool, type(None), slice)) or (
            isinstance(value, tuple) and all(isinstance(v, (int, slice, type(None))) for v in value)):
        return repr(value)
    return f"<array {value.shape}>" if hasattr(value, "shape") else f"<{type(value).__name__}>"


class Tape:
    """Collects the records made inside its `with` block.

        with tapegrad.Tape() as tape:
            loss = model(x)
        print(tape)            # a Wengert list, one record per line
        tape.records[0].op     # 'matmul'

    The tape keeps every recorded output alive (so `record.output`/`record.inputs` work after
    backward); drop the tape to free them. `retain_grads=True` makes backward store `.grad` on every
    recorded output.
    """

    def __init__(self, retain_grads=False):
        self.records = []
        self.outputs = []
        self.retain_grads = retain_grads

    def __enter__(self):
        ACTIVE_TAPES.append(self)
        return self

    def __exit__(self, *exc):
        ACTIVE_TAPES.remove(self)
        return False

    def add(self, record, output):
        record.output = weakref.ref(output)
        record.retain = record.retain or self.retain_grads
        self.records.append(record)
        self.outputs.append(output)

    def __len__(self):
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, i):
        return self.records[i]

    def __repr__(self):
        """The records as a Wengert list, numbered from %0 in recording order."""
        numbering = {r: i for i, r in enumerate(self.records)}
        return "\n".join(format_record(r, numbering) for r in self.records) or "<empty tape>"

    def _repr_html_(self):
        """A notebook table: one row per record, with module and time-step columns."""
        from .notebook import tape_html
        return tape_html(self)

    def _repr_markdown_(self):
        from .notebook import tape_markdown
        return tape_markdown(self)


ANOMALY = False               # set by anomaly.detect_anomaly()

# In-place writes to leaves (optimizer steps) are stamped with the record counter, so backward can
# tell a saved leaf array that changed after the record that saved it. LAST_WRITE lets the sweep
# skip the check when nothing was written since the graph began (the usual forward/backward/step).
LAST_WRITE = -1
# id(tensor) -> (weak reference to it, stamp of its last in-place write)
_WRITES: dict[int, tuple[weakref.ref[Any], int]] = {}


def mark_written(tensor):
    """Declare that `tensor.data` was changed in place (optimizers call this after every update)."""
    global LAST_WRITE
    LAST_WRITE = next_index()
    _WRITES[id(tensor)] = (weakref.ref(tensor), LAST_WRITE)


def written_after(tensor, index):
    """Whether `tensor.data` was changed in place after the record numbered `index`."""
    entry = _WRITES.get(id(tensor))
    return entry is not None and entry[0]() is tensor and entry[1] > index
