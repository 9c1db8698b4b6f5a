"""`Module` and `Parameter`: models as plain Python objects whose attributes are their parameters.

    class Head(Module):
        def __init__(self, hidden, classes):
            super().__init__()
            self.proj = Linear(hidden, classes)      # its parameters become proj.W, proj.b
        def forward(self, h):
            return self.proj(h)

A module finds its parameters from its attributes: `Parameter`s, sub-`Module`s, and lists, tuples
and dicts of either (`layers.0.W_h`). Assigning names them: a Parameter assigned to `W_hh` is named
`W_hh`, and a module assigned to `cell` prefixes all its parameters with `cell.`, so names read
`encoder.cell.W_hh` relative to the root. Those names label the tape printout and the renderer.
Calling a module runs `forward` inside `tapegrad.scope(name=<its attribute name>)`, so its records
read `encoder.cell`.
"""
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import tape as _tape
from ..errors import CheckpointError, DTypeError
from ..tape import Scope
from ..tensor import Tensor, TensorLike, as_array

__all__ = ["Module", "Parameter", "shape_of"]


class Parameter(Tensor):
    """A leaf Tensor that requires grad and knows its (dotted) name. Only floating dtypes."""
    __slots__ = ()

    def __init__(self, data: TensorLike, name: str | None = None) -> None:
        arr = as_array(data)
        if arr.dtype.kind != "f":
            raise DTypeError(f"Parameter {name or ''}: needs a floating dtype, got {arr.dtype} "
                             f"with shape {arr.shape}".replace("  ", " "))
        if not arr.flags.writeable:           # e.g. an op's output: parameters take in-place updates
            arr = arr.copy()
        super().__init__(arr, True, name)

    def __repr__(self) -> str:
        return f"Parameter({self.name or '?'}: shape={self.shape}, dtype={self.dtype})"


def _items(value: Any, key: str) -> Iterator[tuple[str, "Parameter | Module"]]:
    """(name, member) for a Parameter/Module attribute, or for the elements of a list/tuple/dict of them."""
    if isinstance(value, (Parameter, Module)):
        yield key, value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if isinstance(v, (Parameter, Module)):
                yield f"{key}.{i}", v
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (Parameter, Module)):
                yield f"{key}.{k}", v


class Module:
    """Base class of models and layers: override `forward`; assign Parameters and Modules as attributes.

    name: the scope name when this module is the root (a parent's attribute name replaces it).
    """
    _prefix: str                # set by __init__ and _attach (object.__setattr__); declared for type checkers
    _scope_name: str | None
    training: bool

    def __init__(self, name: str | None = None) -> None:
        object.__setattr__(self, "_prefix", "")        # this module's path from its root, e.g. "encoder.cell."
        object.__setattr__(self, "_scope_name", name)  # the label its records get
        object.__setattr__(self, "training", True)

    def __setattr__(self, key: str, value: Any) -> None:
        if "_prefix" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        if not key.startswith("_"):
            for name, member in _items(value, key):
                _attach(member, self._prefix, name)
        object.__setattr__(self, key, value)

    def _members(self) -> Iterator[tuple[str, "Parameter | Module"]]:
        """(local name, Parameter or Module) one level down, in assignment order."""
        for key, value in self.__dict__.items():
            if not key.startswith("_"):
                yield from _items(value, key)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        name = self._scope_name
        if name is None:
            return self.forward(*args, **kwargs)
        outer = _tape.CURRENT_SCOPE            # tapegrad.scope(name) without the context-manager overhead
        _tape.CURRENT_SCOPE = Scope(name, None, outer)
        try:
            return self.forward(*args, **kwargs)
        finally:
            _tape.CURRENT_SCOPE = outer

    def _where(self) -> str:
        """This module's class and the current scope, for error messages: "LSTMCell inside `enc.cell` at t = 3"."""
        name, scope = type(self).__name__, _tape.CURRENT_SCOPE
        if scope is None:
            return name
        parts = scope.path.split(".") if scope.path else []
        if parts and parts[-1] == name:       # unroll labels an unnamed cell's loop with its class name
            parts.pop()
        where = ([f"inside `{'.'.join(parts)}`"] if parts else []) + \
            ([f"at t = {scope.step}"] if scope.step is not None else [])
        return " ".join([name, *where])

    # -- parameters -----------------------------------------------------------------------------
    def named_parameters(self) -> list[tuple[str, "Parameter"]]:
        """[(dotted name, Parameter)] in assignment order, each parameter once (under its first name)."""
        return [(n, m) for n, m in _walk(self) if isinstance(m, Parameter)]

    def parameters(self) -> list["Parameter"]:
        """The parameters, as a list (what an optimizer takes)."""
        return [m for _, m in _walk(self) if isinstance(m, Parameter)]

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))

    def modules(self) -> list["Module"]:
        """This module and every module below it, each once."""
        return [self] + [m for _, m in _walk(self) if isinstance(m, Module)]

    def zero_grad(self) -> None:
        """Drop every parameter's `.grad` (the next backward starts from zero)."""
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> "Module":
        """Set training mode (Dropout active) on this module and all below; returns self."""
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        """Evaluation mode: `train(False)`."""
        return self.train(False)

    # -- state dicts ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{dotted name: copy of the parameter's array}."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict) -> None:
        """Copy arrays into the parameters, in place. Names and shapes must match exactly; otherwise
        CheckpointError lists every missing, unexpected and mis-shaped entry and nothing is changed."""
        params = dict(self.named_parameters())
        arrays = {k: np.asarray(v.data if isinstance(v, Tensor) else v) for k, v in state.items()}
        problems = [f"missing: {k} {params[k].shape}" for k in params if k not in arrays]
        problems += [f"unexpected: {k} {arrays[k].shape}" for k in arrays if k not in params]
        problems += [f"shape mismatch: {k} is {params[k].shape} in {type(self).__name__}, {arrays[k].shape} "
                     f"in the state dict" for k in params if k in arrays and arrays[k].shape != params[k].shape]
        problems += [f"not a number array: {k} has dtype {arrays[k].dtype}" for k in params
                     if k in arrays and arrays[k].dtype.kind not in "fiu"]
        if problems:
            raise CheckpointError(f"load_state_dict into {type(self).__name__}: {len(problems)} mismatch(es):\n  "
                                  + "\n  ".join(problems))
        for k, p in params.items():
            p.data[...] = arrays[k]
            _tape.mark_written(p)

    # -- PyTorch interchange ---------------------------------------------------------------------
    def to_torch_state_dict(self) -> dict:
        """{torch name: numpy array}: this module's parameters under the names and (out, in) layout of the
        matching torch.nn module (see `tapegrad.nn.torch_bridge`). Into torch:
        `torch_module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})`."""
        from .torch_bridge import to_torch_state_dict
        return to_torch_state_dict(self)

    def load_torch_state_dict(self, state: dict) -> None:
        """Copy a torch.nn module's state dict (numpy arrays or CPU tensors) into this module, in place; keys and
        shapes are all checked first (CheckpointError, nothing changed). From torch:
        `model.load_torch_state_dict({k: v.numpy() for k, v in torch_module.state_dict().items()})`."""
        from .torch_bridge import load_torch_state_dict
        load_torch_state_dict(self, state)

    # -- printing -------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The constructor arguments shown by repr (override in subclasses)."""
        return ""

    def _repr_html_(self) -> str:
        """A notebook table of the parameters (dotted name, shape, dtype, size, grad)."""
        from ..notebook import module_html
        return module_html(self)

    def _repr_markdown_(self) -> str:
        from ..notebook import module_markdown
        return module_markdown(self)

    def __repr__(self) -> str:
        head = f"{type(self).__name__}({self.extra_repr()})"
        members = list(self._members())
        total = f"{self.num_parameters():,} parameters"
        if not any(isinstance(m, Module) for _, m in members):
            shapes = ", ".join(f"{n} {m.shape}" for n, m in members)  # type: ignore[union-attr]  # all Parameters
            return f"{head}  # {total}" + (f": {shapes}" if shapes else "")
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for n, m in members:
            body = repr(m).replace("\n", "\n  ") if isinstance(m, Module) else f"Parameter {m.shape}"
            lines.append(f"  ({n}): {body}")
        return "\n".join(lines) + f"\n)  # {total}"


def shape_of(x: TensorLike) -> tuple[int, ...]:
    """The shape of a Tensor, array or nested list."""
    return np.shape(x.data if isinstance(x, Tensor) else x)


def _walk(module: Module, prefix: str = "", seen: set[int] | None = None) -> Iterator[tuple[str, Parameter | Module]]:
    """(dotted name, member) for every Parameter and Module below `module`, depth first in assignment
    order, each object once (shared weights and cycles are visited a single time)."""
    seen = {id(module)} if seen is None else seen
    for name, m in module._members():
        if id(m) in seen:
            continue
        seen.add(id(m))
        yield prefix + name, m
        if isinstance(m, Module):
            yield from _walk(m, prefix + name + ".", seen)


def _attach(member: Parameter | Module, prefix: str, name: str) -> None:
    """Name `member`, just assigned as attribute `name` of a module whose path is `prefix`."""
    if isinstance(member, Parameter):
        member.name = prefix + name
        return
    object.__setattr__(member, "_scope_name", name)
    object.__setattr__(member, "_prefix", prefix + name + ".")
    for path, m in _walk(member, prefix + name + "."):
        if isinstance(m, Parameter):
            m.name = path
        else:
            object.__setattr__(m, "_prefix", path + ".")
