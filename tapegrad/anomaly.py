"""Anomaly mode: find the first record that makes a NaN or Inf, forward or backward.

    with tapegrad.detect_anomaly():
        loss = model(x)
        loss.backward()     # AnomalyError naming the op, its scope/time step and the source line
"""
import traceback
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from . import tape as _tape
from .errors import AnomalyError
from .tape import describe_scope

# A tape.Record, typed Any here: Record declares `stack = None` and anomaly mode sets `fingerprint` on it.
_Record = Any

__all__ = ["detect_anomaly", "where_recorded", "recorded_at", "check_forward", "check_backward", "check_saved"]


@contextmanager
def detect_anomaly() -> Iterator[None]:
    """Check every forward and backward value for NaN/Inf; records keep the stack that made them and a
    checksum of what they saved, so a saved array changed behind the tape's back is caught in backward."""
    before, _tape.ANOMALY = _tape.ANOMALY, True
    try:
        yield
    finally:
        _tape.ANOMALY = before


def _user_frames(stack: traceback.StackSummary) -> list[traceback.FrameSummary]:
    """Drop tapegrad's own frames, keeping the user's code that called the op."""
    here = __file__.rsplit("/", 1)[0]
    return [f for f in stack if not f.filename.startswith(here)]


def where_recorded(rec: _Record) -> str:
    """'  File "model.py", line 12, in forward\n    h = tanh(...)' for a record made in anomaly mode."""
    if not rec.stack:
        return ""
    return "".join(traceback.format_list(rec.stack[-3:]))


def recorded_at(rec: _Record) -> str:
    """'; the op was recorded at: <frames>' when the record was made in anomaly mode, else ''."""
    return f"; the op was recorded at:\n{where_recorded(rec)}" if rec.stack else ""


def check_forward(rec: _Record, out: np.ndarray) -> None:
    rec.stack = _user_frames(traceback.extract_stack())
    rec.fingerprint = _fingerprint(rec.saved)
    if out.dtype.kind in "fc" and not np.isfinite(out).all():
        raise AnomalyError(f"{_bad(out)} produced by the forward of {rec.op} (record %{rec.index}, "
                           f"output {out.shape} {out.dtype}){describe_scope(rec.scope)}; recorded at:\n"
                           f"{where_recorded(rec)}")


def check_backward(rec: _Record, i: int, grad: Any) -> None:
    data = getattr(grad, "data", grad)
    if not np.isfinite(data).all():
        raise AnomalyError(f"{_bad(data)} in the gradient that {rec.op} (record %{rec.index}) sends to its "
                           f"input {i} of shape {data.shape}{describe_scope(rec.scope)}; the op was "
                           f"recorded at:\n{where_recorded(rec)}")


def check_saved(rec: _Record) -> None:
    """Refuse saved arrays changed since the record was made (catches raw numpy writes into a leaf's data)."""
    if rec.saved is not None and _fingerprint(rec.saved) != rec.fingerprint:
        raise AnomalyError(f"an array saved by {rec.op} (record %{rec.index}){describe_scope(rec.scope)} was "
                           f"changed in place after the op recorded it, so its gradient would be wrong; the op "
                           f"was recorded at:\n{where_recorded(rec)}")


def _fingerprint(arrays: Sequence[Any] | None) -> tuple[int | None, ...] | None:
    # ndarray is a buffer, but this numpy's stubs do not say so
    return None if arrays is None else tuple(zlib.crc32(np.ascontiguousarray(a)) if isinstance(a, np.ndarray)  # type: ignore[arg-type]
                                             else None for a in arrays)


def _bad(arr: np.ndarray) -> str:
    return "NaN" if np.isnan(arr).any() else "Inf"
