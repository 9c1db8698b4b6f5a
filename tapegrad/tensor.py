"""`Tensor`: a numpy array that remembers the record that produced it.

Math methods and operators (`+ - * / ** @`, `.sum()`, `.reshape()`, ...) are attached in `ops.py`,
next to their derivative rules.
"""
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .errors import DTypeError, ShapeError

if TYPE_CHECKING:
    from .tape import Record

__all__ = ["Tensor", "tensor", "get_default_dtype", "set_default_dtype"]

_DEFAULT_DTYPE: np.dtype = np.dtype(np.float32)


def set_default_dtype(dtype: DTypeLike) -> None:
    """Set the dtype that Python floats and lists become (float32 unless changed)."""
    global _DEFAULT_DTYPE
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise DTypeError(f"set_default_dtype: expected a floating dtype, got {dtype}")
    _DEFAULT_DTYPE = dtype


def get_default_dtype() -> np.dtype:
    """The dtype that Python floats and lists become (float32 unless `set_default_dtype` changed it)."""
    return _DEFAULT_DTYPE


def as_array(data: "TensorLike", dtype: DTypeLike | None = None) -> np.ndarray:
    """numpy array of `data`; Python floats default to the default dtype, float64 arrays stay float64."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        try:
            return np.asarray(data, dtype=dtype)
        except (TypeError, ValueError) as e:
            raise DTypeError(f"tensor: cannot make a {dtype} array from {type(data).__name__}: {e}") from None
    try:
        arr = np.asarray(data)
    except ValueError as e:
        raise ShapeError(f"tensor: cannot make an array from {type(data).__name__} {data!r:.80}: {e}") from None
    if arr.dtype.kind == "f" and not isinstance(data, (np.ndarray, np.generic)):
        arr = arr.astype(_DEFAULT_DTYPE)
    elif arr.dtype.kind not in "biufc":
        raise DTypeError(f"tensor: cannot make a numeric array from {type(data).__name__} {data!r:.80}")
    return arr


def check_can_require_grad(arr: np.ndarray, op: str = "tensor") -> None:
    if arr.dtype.kind not in "fc":
        raise DTypeError(f"{op}: only floating tensors can require grad, got dtype {arr.dtype} "
                         f"with shape {arr.shape} (integer and boolean tensors serve as indices and targets)")


def tensor(data: "TensorLike", requires_grad: bool | np.bool_ = False, dtype: DTypeLike | None = None,
           name: str | None = None) -> "Tensor":
    """Make a leaf Tensor. Shares memory with a numpy array that already has the right dtype."""
    if not isinstance(requires_grad, (bool, np.bool_)):
        raise DTypeError(f"tensor: requires_grad must be True or False, got {type(requires_grad).__name__}")
    arr = as_array(data, dtype)
    if requires_grad:
        check_can_require_grad(arr)
        if not arr.flags.writeable:     # a parameter's array must take in-place updates
            arr = arr.copy()
    return Tensor(arr, requires_grad, name)


class Tensor:
    """A numpy array (`.data`) plus what reverse mode needs.

    grad:          accumulated gradient (numpy array of the same shape) or None
    requires_grad: whether ops on it are recorded for backward
    name:          optional label, shown by the tape printout and the renderer
    """
    __slots__ = ("data", "requires_grad", "_node", "__dict__", "__weakref__")
    grad: np.ndarray | None = None   # class-level defaults: most tensors never get a grad or a name
    name: str | None = None
    __array_ufunc__ = None      # `ndarray op Tensor` defers to Tensor's reflected operator, so it records

    def __init__(self, data: ArrayLike, requires_grad: bool | np.bool_ = False, name: str | None = None,
                 _node: "Record | None" = None) -> None:
        if type(data) is not np.ndarray:
            data = np.asarray(data)
        self.data = data
        self.requires_grad = requires_grad
        self._node = _node
        if name is not None:
            self.name = name

    # -- array facts --------------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    dtype = property(lambda self: self.data.dtype)

    @property
    def record(self) -> "Record | None":
        """The Record that produced this tensor (None for a leaf)."""
        return self._node

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> Any:
        return self.data.item()

    def __array__(self, dtype: DTypeLike | None = None, copy: bool | None = None) -> np.ndarray:
        return self.data if dtype is None else self.data.astype(dtype)

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self.data)

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise ShapeError(f"the truth value of a tensor of shape {self.data.shape} is ambiguous (it has "
                             f"{self.data.size} elements); use .any() / .all() on .data, or compare one element")
        return bool(self.data)

    __hash__ = object.__hash__   # comparisons are elementwise, identity stays the hash

    def detach(self) -> "Tensor":
        """A new leaf sharing this tensor's data, cut from the graph."""
        return Tensor(self.data, False, self.name)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if flag:
            check_can_require_grad(self.data, "requires_grad_")
        self.requires_grad = flag
        return self

    def retain_grad(self) -> "Tensor":
        """Keep `.grad` on this intermediate after backward (e.g. dL/dh_t)."""
        node = self._node
        if node is not None:
            node.retain = True
            node.output = weakref.ref(self)  # type: ignore[assignment]  # tape.py declares Record.output = None (unset default)
        return self

    def backward(self, grad: "TensorLike | None" = None, retain_graph: bool = False,
                 create_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's `.grad` by a reverse sweep of the records."""
        from .autodiff import backward
        backward(self, grad, retain_graph=retain_graph, create_graph=create_graph)

    if TYPE_CHECKING:   # attached at import by ops.py (and notebook reprs below); declared for type checkers
        def __neg__(self) -> "Tensor": ...
        def __getitem__(self, index: Any) -> "Tensor": ...
        def __iter__(self) -> Iterator["Tensor"]: ...
        def __add__(self, other: Any) -> "Tensor": ...
        def __radd__(self, other: Any) -> "Tensor": ...
        def __sub__(self, other: Any) -> "Tensor": ...
        def __rsub__(self, other: Any) -> "Tensor": ...
        def __mul__(self, other: Any) -> "Tensor": ...
        def __rmul__(self, other: Any) -> "Tensor": ...
        def __truediv__(self, other: Any) -> "Tensor": ...
        def __rtruediv__(self, other: Any) -> "Tensor": ...
        def __pow__(self, other: Any) -> "Tensor": ...
        def __rpow__(self, other: Any) -> "Tensor": ...
        def __matmul__(self, other: Any) -> "Tensor": ...
        def __rmatmul__(self, other: Any) -> "Tensor": ...
        def __lt__(self, other: Any) -> "Tensor": ...
        def __le__(self, other: Any) -> "Tensor": ...
        def __gt__(self, other: Any) -> "Tensor": ...
        def __ge__(self, other: Any) -> "Tensor": ...
        def __eq__(self, other: Any) -> "Tensor": ...  # type: ignore[override]  # elementwise, as numpy
        def __ne__(self, other: Any) -> "Tensor": ...  # type: ignore[override]  # elementwise, as numpy
        def exp(self, *args: Any, **kw: Any) -> "Tensor": ...
        def log(self, *args: Any, **kw: Any) -> "Tensor": ...
        def sqrt(self, *args: Any, **kw: Any) -> "Tensor": ...
        def tanh(self, *args: Any, **kw: Any) -> "Tensor": ...
        def sigmoid(self, *args: Any, **kw: Any) -> "Tensor": ...
        def relu(self, *args: Any, **kw: Any) -> "Tensor": ...
        def abs(self, *args: Any, **kw: Any) -> "Tensor": ...
        def clip(self, *args: Any, **kw: Any) -> "Tensor": ...
        def log1p(self, *args: Any, **kw: Any) -> "Tensor": ...
        def expm1(self, *args: Any, **kw: Any) -> "Tensor": ...
        def sin(self, *args: Any, **kw: Any) -> "Tensor": ...
        def cos(self, *args: Any, **kw: Any) -> "Tensor": ...
        def sum(self, *args: Any, **kw: Any) -> "Tensor": ...
        def mean(self, *args: Any, **kw: Any) -> "Tensor": ...
        def max(self, *args: Any, **kw: Any) -> "Tensor": ...
        def min(self, *args: Any, **kw: Any) -> "Tensor": ...
        def var(self, *args: Any, **kw: Any) -> "Tensor": ...
        def std(self, *args: Any, **kw: Any) -> "Tensor": ...
        def argmax(self, *args: Any, **kw: Any) -> "Tensor": ...
        def argmin(self, *args: Any, **kw: Any) -> "Tensor": ...
        def cumsum(self, *args: Any, **kw: Any) -> "Tensor": ...
        def logsumexp(self, *args: Any, **kw: Any) -> "Tensor": ...
        def softmax(self, *args: Any, **kw: Any) -> "Tensor": ...
        def log_softmax(self, *args: Any, **kw: Any) -> "Tensor": ...
        def reshape(self, *args: Any, **kw: Any) -> "Tensor": ...
        def transpose(self, *args: Any, **kw: Any) -> "Tensor": ...
        def expand_dims(self, *args: Any, **kw: Any) -> "Tensor": ...
        def squeeze(self, *args: Any, **kw: Any) -> "Tensor": ...
        def broadcast_to(self, *args: Any, **kw: Any) -> "Tensor": ...
        def astype(self, *args: Any, **kw: Any) -> "Tensor": ...
        def repeat(self, *args: Any, **kw: Any) -> "Tensor": ...
        @property
        def T(self) -> "Tensor": ...
        @property
        def mT(self) -> "Tensor": ...
        def _repr_html_(self) -> str: ...
        def _repr_markdown_(self) -> str: ...

    def __repr__(self) -> str:
        op = self._node.op if self._node is not None else None
        body = np.array2string(self.data, precision=4, threshold=8, separator=", ", prefix="Tensor(")
        extras = [f"shape={self.shape}", f"dtype={self.dtype}"]
        if op:
            extras.append(f"op={op}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        if self.name:
            extras.append(f"name={self.name!r}")
        return f"Tensor({body}, {', '.join(extras)})"


# For annotations: what ops accept as an operand (a Tensor, or anything numpy makes an array of), and an axis argument.
TensorLike = Tensor | ArrayLike
Axis = int | tuple[int, ...] | None


from . import notebook as _notebook  # noqa: E402  (tables for Jupyter; notebook.py imports nothing of ours)

for _name, _fn in [("_repr_html_", _notebook.tensor_html), ("_repr_markdown_", _notebook.tensor_markdown)]:
    setattr(Tensor, _name, _fn)    # setattr: the class body declares these for type checkers only
