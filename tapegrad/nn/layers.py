"""Feed-forward layers: Linear, Embedding, Dropout, Sequential, LayerNorm. Row-vector convention: y = x W + b."""
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ..errors import DTypeError, InvalidValueError, ShapeError
from ..ops import dropout, sqrt, take
from ..tensor import Tensor, TensorLike
from . import init
from .module import Module, Parameter, shape_of

__all__ = ["Linear", "Embedding", "Dropout", "Sequential", "LayerNorm"]


class Linear(Module):
    """y = x W + b. x: (..., in_features) -> (..., out_features).

    Parameters: W (in_features, out_features), Glorot uniform; b (out_features,), zeros (absent if bias=False).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: DTypeLike | None = None,
                 rng: np.random.Generator | int | None = None, name: str | None = None) -> None:
        super().__init__(name)
        self.in_features, self.out_features = in_features, out_features
        self.W = Parameter(init.glorot_uniform((in_features, out_features), rng, dtype=dtype))
        self.b = Parameter(init.zeros((out_features,), dtype)) if bias else None

    def forward(self, x: TensorLike) -> Tensor:
        shape = shape_of(x)
        if not shape or shape[-1] != self.in_features:
            raise ShapeError(f"{self._where()}: input has shape {shape}, expected (..., {self.in_features})")
        y = x @ self.W
        return y + self.b if self.b is not None else y

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}" + ("" if self.b is not None else ", bias=False")


class Embedding(Module):
    """Row lookup: integer ids (...) -> vectors (..., embedding_dim).

    Parameter: W (num_embeddings, embedding_dim), N(0, 1).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: DTypeLike | None = None,
                 rng: np.random.Generator | int | None = None, name: str | None = None) -> None:
        super().__init__(name)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.W = Parameter(init.normal((num_embeddings, embedding_dim), 1.0, rng, dtype))

    def forward(self, ids: TensorLike) -> Tensor:
        ids = np.asarray(ids.data if isinstance(ids, Tensor) else ids)
        if ids.dtype.kind not in "iu":
            raise DTypeError(f"{self._where()}: ids must be integers, got dtype {ids.dtype} with shape {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            raise ShapeError(f"{self._where()}: ids must lie in [0, {self.num_embeddings}), got values in "
                             f"[{ids.min()}, {ids.max()}]")
        return take(self.W, ids)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Dropout(Module):
    """Zero each element with probability p while training (scaling the rest by 1/(1-p)); identity in eval()."""

    def __init__(self, p: float = 0.5, rng: np.random.Generator | int | None = None, name: str | None = None) -> None:
        super().__init__(name)
        if not 0 <= p < 1:
            raise InvalidValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p
        self.rng = init.make_rng(rng)

    def forward(self, x: TensorLike) -> TensorLike:
        return dropout(x, self.p, self.rng, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Sequential(Module):
    """Apply modules in order: Sequential(Linear(4, 8), Dropout(0.1), Linear(8, 2)). Parameters read layers.0.W."""

    def __init__(self, *modules: Module, name: str | None = None) -> None:
        super().__init__(name)
        self.layers = list(modules)

    def forward(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer(x)
        return x

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]


class LayerNorm(Module):
    """Normalize over the last len(normalized_shape) axes, then scale and shift:
    y = (x - mean) / sqrt(var + eps) * g + b (biased variance, as PyTorch's LayerNorm).
    x: (..., *normalized_shape) -> same shape.

    Parameters: g (normalized_shape), ones; b (normalized_shape), zeros (neither with
    elementwise_affine=False; no b with bias=False).
    """

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, dtype: DTypeLike | None = None, name: str | None = None) -> None:
        super().__init__(name)
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
        if not shape or any(not isinstance(n, (int, np.integer)) or n <= 0 for n in shape):
            raise InvalidValueError(f"LayerNorm: normalized_shape must be a positive int or a non-empty tuple of "
                                    f"them, got {normalized_shape!r}")
        if not eps >= 0:
            raise InvalidValueError(f"LayerNorm: eps must be non-negative, got {eps!r}")
        self.normalized_shape, self.eps = tuple(int(n) for n in shape), eps
        self.g = Parameter(init.constant(shape, 1.0, dtype)) if elementwise_affine else None
        self.b = Parameter(init.zeros(shape, dtype)) if elementwise_affine and bias else None

    def forward(self, x: Tensor) -> Tensor:
        shape, k = shape_of(x), len(self.normalized_shape)
        if tuple(shape[len(shape) - k:]) != self.normalized_shape or len(shape) < k:
            raise ShapeError(f"{self._where()}: input has shape {shape}, expected (..., "
                             f"{', '.join(map(str, self.normalized_shape))})")
        axes = tuple(range(len(shape) - k, len(shape)))
        d = x - x.mean(axis=axes, keepdims=True)
        y = d / sqrt((d * d).mean(axis=axes, keepdims=True) + self.eps)
        if self.g is not None:
            y = y * self.g
        return y + self.b if self.b is not None else y

    def extra_repr(self) -> str:
        shape = self.normalized_shape[0] if len(self.normalized_shape) == 1 else self.normalized_shape
        return f"{shape}, eps={self.eps}" + ("" if self.g is not None else ", elementwise_affine=False") + \
            ("" if self.g is None or self.b is not None else ", bias=False")
