"""PyTorch `state_dict` interchange: tapegrad's (in, out) layout and names to torch's, and back.

tapegrad stores weights (in_features, out_features) and computes y = x W + b; torch stores (out, in) and computes
x W^T + b. The dicts here hold numpy arrays under torch's names, so nothing imports torch:

    sd = tapegrad_module.to_torch_state_dict()
    torch_module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})       # the way out
    tapegrad_module.load_torch_state_dict({k: v.detach().numpy() for k, v in torch_module.state_dict().items()})

    tapegrad                          torch
    Linear W (in, out), b             nn.Linear weight (out, in), bias
    Embedding W                       nn.Embedding weight
    RNNCell / LSTMCell / GRUCell      nn.RNNCell / LSTMCell / GRUCell: weight_ih = W_x^T, weight_hh = W_h^T,
                                      bias_ih = b, bias_hh = 0 (GRU: bias_hh = [0 | 0 | b_hn]); gate blocks in
                                      the same order (LSTM i, f, g, o; GRU r, z, n)
    StackedRNN of one cell type       nn.RNN / LSTM / GRU(num_layers=L): weight_ih_l{k}, ... per layer
    Bidirectional(cell, cell)         nn.RNN / LSTM / GRU(bidirectional=True): ..._l0 and ..._l0_reverse
    any other Module                  its sub-modules' dicts under their attribute names ("head.weight"),
                                      Sequential's under their index ("0.weight"), as torch names them

torch has two biases per cell where tapegrad has one (x W_x + h W_h + b): export puts b into bias_ih and zeros
into bias_hh; loading sums them, which computes the same. A GRUCell maps only with reset_after=True (torch
applies the reset gate after the hidden matmul). Loading checks every key and shape first and changes nothing
on a mismatch (CheckpointError listing them all).
"""
from collections.abc import Callable

import numpy as np

from ..errors import CheckpointError, InvalidValueError
from ..tape import mark_written
from .cells import GRUCell, LSTMCell, RecurrentCell, RNNCell
from .layers import Embedding, Linear, Sequential
from .module import Module, Parameter
from .recurrent import Bidirectional, StackedRNN

__all__ = ["to_torch_state_dict", "load_torch_state_dict", "torch_class"]


def torch_class(module: Module) -> str:
    """The torch.nn class (with its arguments) whose state dict matches `module`'s, e.g. 'LSTM(3, 5, num_layers=2)'."""
    if isinstance(module, Linear):
        return f"Linear({module.in_features}, {module.out_features}, bias={module.b is not None})"
    if isinstance(module, Embedding):
        return f"Embedding({module.num_embeddings}, {module.embedding_dim})"
    if isinstance(module, RecurrentCell):
        _check_cell(module)
        extra = ", nonlinearity='relu'" if getattr(module, "nonlinearity", "tanh") == "relu" else ""
        return f"{type(module).__name__}({module.input_size}, {module.hidden_size}{extra})"
    if isinstance(module, (StackedRNN, Bidirectional)):
        cells, bidirectional = _rnn_layers(module)
        first = cells[0][0]
        kind = type(first).__name__[:-len("Cell")]
        extra = ", nonlinearity='relu'" if getattr(first, "nonlinearity", "tanh") == "relu" else ""
        return (f"{kind}({first.input_size}, {first.hidden_size}, num_layers={len(cells)}{extra}, batch_first=True"
                + (", bidirectional=True)" if bidirectional else ")"))
    raise InvalidValueError(f"{type(module).__name__} has no single torch.nn counterpart; its sub-modules map "
                            "one by one")


def to_torch_state_dict(module: Module) -> dict:
    """{torch name: numpy array} of `module`'s parameters in torch's layout (copies)."""
    return {k: np.array(v) for k, v in _export(module, "").items()}


def load_torch_state_dict(module: Module, state: dict) -> None:
    """Copy a torch state dict (numpy arrays, or anything np.asarray takes, e.g. CPU tensors' `.numpy()`) into
    `module`, in place. Every key and shape is checked before anything changes."""
    arrays = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in state.items()}
    plan: list[tuple[Parameter, np.ndarray]] = []          # (parameter, new array)
    problems: list[str] = []
    _plan(module, "", arrays, plan, problems)
    expected = set(_export(module, ""))
    problems += [f"unexpected: {k} {arrays[k].shape}" for k in arrays if k not in expected]
    if problems:
        raise CheckpointError(f"load_torch_state_dict into {type(module).__name__}: {len(problems)} mismatch(es):\n  "
                              + "\n  ".join(problems))
    for p, value in plan:
        p.data[...] = value
        mark_written(p)


# -- export ----------------------------------------------------------------------------------------------

def _export(module: Module, prefix: str) -> dict[str, np.ndarray]:
    if isinstance(module, Linear):
        out = {prefix + "weight": module.W.data.T}
        if module.b is not None:
            out[prefix + "bias"] = module.b.data
        return out
    if isinstance(module, Embedding):
        return {prefix + "weight": module.W.data}
    if isinstance(module, RecurrentCell):
        return _cell_export(module, prefix, "")
    if isinstance(module, (StackedRNN, Bidirectional)):
        cells, _ = _rnn_layers(module)
        out = {}
        for k, layer in enumerate(cells):
            for cell, suffix in zip(layer, ("", "_reverse")):
                out.update(_cell_export(cell, prefix, f"_l{k}{suffix}"))
        return out
    return _children(module, prefix, lambda m, p: _export(m, p))


def _cell_export(cell: RecurrentCell, prefix: str, suffix: str) -> dict[str, np.ndarray]:
    _check_cell(cell)
    H = cell.hidden_size
    bias_hh = np.zeros_like(cell.b.data)
    if isinstance(cell, GRUCell):
        bias_hh[2 * H:] = cell.b_hn.data
    return {f"{prefix}weight_ih{suffix}": cell.W_x.data.T, f"{prefix}weight_hh{suffix}": cell.W_h.data.T,
            f"{prefix}bias_ih{suffix}": cell.b.data, f"{prefix}bias_hh{suffix}": bias_hh}


def _children(module: Module, prefix: str, fn: Callable[[Module, str], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Recurse into the sub-modules of a module torch has no single class for; a Parameter of its own has no
    torch name."""
    members = list(module._members())
    own = [n for n, m in members if isinstance(m, Parameter)]
    if own:
        raise InvalidValueError(f"{type(module).__name__} holds parameters of its own ({', '.join(own)}) that have "
                                "no torch.nn counterpart; export its sub-modules one by one")
    out = {}
    for name, m in members:
        key = name.split(".", 1)[1] if isinstance(module, Sequential) else name     # Sequential: "0.weight"
        out.update(fn(m, f"{prefix}{key}."))  # type: ignore[arg-type]  # a Module: own Parameters were refused above
    return out


def _check_cell(cell: Module) -> None:
    if not isinstance(cell, (RNNCell, LSTMCell, GRUCell)):
        raise InvalidValueError(f"{type(cell).__name__} is not a built-in cell; only RNNCell, LSTMCell and GRUCell map "
                                "to torch.nn cells")
    if isinstance(cell, GRUCell) and not cell.reset_after:
        raise InvalidValueError("GRUCell(reset_after=False) has no torch counterpart: torch.nn.GRUCell applies the "
                                "reset gate after the hidden matmul; build the cell with reset_after=True")


def _rnn_layers(module: StackedRNN | Bidirectional) -> tuple[list[tuple[RecurrentCell, ...]], bool]:
    """[(cell,) or (fwd cell, bwd cell)] per layer, and whether bidirectional; refuses what torch.nn.RNN cannot be."""
    layers: list[tuple[RecurrentCell, ...]]
    if isinstance(module, StackedRNN):     # any other cell is refused by _check_cell below
        layers, bidirectional = [(c,) for c in module.layers], False  # type: ignore[misc]
    else:
        if not (isinstance(module.fwd, RecurrentCell) and isinstance(module.bwd, RecurrentCell)):
            raise InvalidValueError("Bidirectional maps to a torch.nn RNN/LSTM/GRU(bidirectional=True) only when fwd "
                                    "and bwd are single cells (a torch bidirectional stack feeds both directions' "
                                    "outputs to the next layer, which Bidirectional(StackedRNN, StackedRNN) does not)")
        layers, bidirectional = [(module.fwd, module.bwd)], True
    cells = [c for layer in layers for c in layer]
    for c in cells:
        _check_cell(c)
    first = cells[0]
    same = all(type(c) is type(first) and c.hidden_size == first.hidden_size
               and getattr(c, "nonlinearity", None) == getattr(first, "nonlinearity", None) for c in cells)
    if not same:
        raise InvalidValueError(f"{type(module).__name__}: torch.nn.RNN/LSTM/GRU need one cell type, hidden size and "
                                f"nonlinearity in every layer, got {', '.join(repr(c) for c in cells)}")
    return layers, bidirectional


# -- load ------------------------------------------------------------------------------------------------

def _plan(module: Module, prefix: str, arrays: dict[str, np.ndarray], plan: list[tuple[Parameter, np.ndarray]],
          problems: list[str]) -> None:
    if isinstance(module, Linear):
        _take(plan, problems, arrays, prefix + "weight", module.W, True)
        if module.b is not None:
            _take(plan, problems, arrays, prefix + "bias", module.b)
    elif isinstance(module, Embedding):
        _take(plan, problems, arrays, prefix + "weight", module.W)
    elif isinstance(module, RecurrentCell):
        _cell_plan(module, prefix, "", arrays, plan, problems)
    elif isinstance(module, (StackedRNN, Bidirectional)):
        cells, _ = _rnn_layers(module)
        for k, layer in enumerate(cells):
            for cell, suffix in zip(layer, ("", "_reverse")):
                _cell_plan(cell, prefix, f"_l{k}{suffix}", arrays, plan, problems)
    else:
        # ignore: _plan returns None (it fills `plan`), and `or {}` hands _children the dict it expects
        _children(module, prefix, lambda m, p: _plan(m, p, arrays, plan, problems) or {})  # type: ignore[func-returns-value]


def _cell_plan(cell: RecurrentCell, prefix: str, suffix: str, arrays: dict[str, np.ndarray],
               plan: list[tuple[Parameter, np.ndarray]], problems: list[str]) -> None:
    _check_cell(cell)
    H, G = cell.hidden_size, cell.gates
    names = {k: f"{prefix}{k}{suffix}" for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    _take(plan, problems, arrays, names["weight_ih"], cell.W_x, True)
    _take(plan, problems, arrays, names["weight_hh"], cell.W_h, True)
    for k in ("bias_ih", "bias_hh"):
        if names[k] not in arrays:
            problems.append(f"missing: {names[k]} {(G * H,)}")
        elif arrays[names[k]].shape != (G * H,):
            problems.append(f"shape mismatch: {names[k]} is {arrays[names[k]].shape} in the state dict, expected "
                            f"{(G * H,)}")
    if names["bias_ih"] in arrays and names["bias_hh"] in arrays and not problems:
        b_ih, b_hh = arrays[names["bias_ih"]], arrays[names["bias_hh"]]
        if isinstance(cell, GRUCell):          # the candidate's hidden bias is b_hn, inside r * (h W_hn + b_hn)
            plan.append((cell.b, b_ih + np.concatenate([b_hh[:2 * H], np.zeros(H, b_hh.dtype)])))
            plan.append((cell.b_hn, b_hh[2 * H:]))
        else:
            plan.append((cell.b, b_ih + b_hh))


def _take(plan: list[tuple[Parameter, np.ndarray]], problems: list[str], arrays: dict[str, np.ndarray], key: str,
          param: Parameter, transpose: bool = False) -> None:
    expected = param.shape[::-1] if transpose else param.shape          # torch's shape of this entry
    if key not in arrays:
        problems.append(f"missing: {key} {expected}")
        return
    value = arrays[key]
    if value.shape != expected:
        problems.append(f"shape mismatch: {key} is {value.shape} in the state dict, expected {expected}")
        return
    if value.dtype.kind not in "fiu":
        problems.append(f"not a number array: {key} has dtype {value.dtype}")
        return
    plan.append((param, value.T if transpose else value))
