"""Weight initializers. Each returns a new numpy array of `shape` (row-vector convention: a weight
that maps D inputs to H outputs has shape (D, H), so fan_in = shape[0] and fan_out = shape[1]).

Randomness is always explicit: `rng` is a `numpy.random.Generator` or an int seed. Left as None it
draws from this module's default generator, which is seeded with 0 at import, so a script builds the
same weights on every run; `manual_seed(n)` restarts it.

    W = Parameter(glorot_uniform((10, 20), rng=0))
    W_hh = Parameter(orthogonal((20, 20), rng=np.random.default_rng(1)))
"""
from collections.abc import Sequence

import numpy as np
from numpy.typing import DTypeLike

from ..errors import InvalidValueError
from ..tensor import get_default_dtype

__all__ = ["manual_seed", "make_rng", "zeros", "constant", "normal", "glorot_uniform", "glorot_normal", "orthogonal"]

_default = np.random.default_rng(0)


def manual_seed(seed: int | None) -> None:
    """Restart the default generator (used wherever `rng` is None) from `seed`."""
    global _default
    _default = np.random.default_rng(seed)


def make_rng(rng: np.random.Generator | int | None = None) -> np.random.Generator:
    """A Generator from `rng`: a Generator is returned as is, an int seeds a new one, None draws a new
    one from the default generator (so it is reproducible, and distinct from earlier ones)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng(_default.integers(2**63))
    return np.random.default_rng(rng)


def _generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    return _default if rng is None else make_rng(rng)


def _dtype(dtype: DTypeLike | None) -> np.dtype:
    return np.dtype(get_default_dtype() if dtype is None else dtype)


def _fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of `shape`: (in, out), or (n,) for a vector."""
    if len(shape) < 1:
        raise InvalidValueError(f"init: a weight needs at least one dimension, got shape {shape}")
    fan_in = shape[0]
    fan_out = shape[1] if len(shape) > 1 else shape[0]
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return fan_in * receptive, fan_out * receptive


def zeros(shape: int | Sequence[int], dtype: DTypeLike | None = None) -> np.ndarray:
    """All zeros (biases)."""
    return np.zeros(shape, _dtype(dtype))


def constant(shape: int | Sequence[int], value: float, dtype: DTypeLike | None = None) -> np.ndarray:
    """Every element `value` (e.g. an LSTM forget-gate bias of 1.0)."""
    return np.full(shape, value, _dtype(dtype))


def normal(shape: int | Sequence[int], std: float = 1.0, rng: np.random.Generator | int | None = None,
           dtype: DTypeLike | None = None) -> np.ndarray:
    """N(0, std^2) entries (embeddings)."""
    return (_generator(rng).standard_normal(shape) * std).astype(_dtype(dtype))


def glorot_uniform(shape: Sequence[int], rng: np.random.Generator | int | None = None, gain: float = 1.0,
                   dtype: DTypeLike | None = None) -> np.ndarray:
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    fan_in, fan_out = _fans(shape)
    a = gain * np.sqrt(6.0 / (fan_in + fan_out))
    return _generator(rng).uniform(-a, a, shape).astype(_dtype(dtype))


def glorot_normal(shape: Sequence[int], rng: np.random.Generator | int | None = None, gain: float = 1.0,
                  dtype: DTypeLike | None = None) -> np.ndarray:
    """N(0, s^2) with s = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(shape)
    return normal(shape, gain * np.sqrt(2.0 / (fan_in + fan_out)), rng, dtype)


def orthogonal(shape: Sequence[int], rng: np.random.Generator | int | None = None, gain: float = 1.0,
               dtype: DTypeLike | None = None) -> np.ndarray:
    """A (semi-)orthogonal matrix times `gain` (Saxe et al. 2014): the rows or the columns, whichever
    are fewer, are orthonormal. For recurrent weights, where it keeps h -> h W from shrinking or
    growing the state at initialisation."""
    if len(shape) != 2:
        raise InvalidValueError(f"orthogonal: needs a 2-d shape, got {shape}")
    rows, cols = shape
    a = _generator(rng).standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))          # make the distribution uniform over orthogonal matrices
    if rows < cols:
        q = q.T
    return (gain * q).astype(_dtype(dtype))


xavier_uniform = glorot_uniform
xavier_normal = glorot_normal
