"""The exceptions tapegrad raises. Every message names the op, the shapes/dtypes and the scope."""

__all__ = ["TapegradError", "ShapeError", "DTypeError", "InvalidValueError", "ArgumentError", "IndexOutOfRange",
           "GraphError", "RenderError", "AnomalyError", "CheckpointError"]


class TapegradError(Exception):
    """Base class of every error tapegrad raises on purpose."""


class ShapeError(TapegradError, ValueError):
    """Operands whose shapes do not fit the op (e.g. a matmul of (32, 10) by (20, 40))."""


class DTypeError(TapegradError, TypeError):
    """Operands whose dtypes do not fit the op (float32 mixed with float64, integer tensors asked to require grad)."""


class InvalidValueError(TapegradError, ValueError):
    """An argument whose value the op does not accept (a probability of 1.5, reduction="avg", lengths past T)."""


class ArgumentError(TapegradError, TypeError):
    """An argument of the wrong kind for the op (a string where a tensor or an axis belongs, ...)."""


class IndexOutOfRange(TapegradError, IndexError):
    """An index outside the indexed tensor's shape."""


class GraphError(TapegradError, RuntimeError):
    """Misuse of the recorded graph: backward through a freed graph, non-scalar backward without a gradient."""


class RenderError(TapegradError, RuntimeError):
    """No Graphviz backend can write the requested format, or the backend failed; says what to install."""


class AnomalyError(TapegradError, FloatingPointError):
    """A NaN or Inf produced inside `detect_anomaly()`; names the record that produced it."""


class CheckpointError(TapegradError, ValueError):
    """A checkpoint or state dict that cannot be saved or restored: truncated, corrupted, another format version,
    an unsupported value, or a state dict that does not fit what loads it. Names the path/key and what is wrong."""
