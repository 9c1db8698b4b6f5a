"""The gradient of an indexing op: values at an index, zero elsewhere, added into a buffer in place.

Unrolling slices x[:, t] out of a whole sequence; a dense gradient per slice would cost a full-size
array per step (quadratic in T). The sweep instead adds each slice's gradient into one buffer.
"""
import numbers

import numpy as np


class IndexedGrad:
    """A (shape)-gradient equal to `values` at `index` and zero elsewhere (first-order backward only)."""
    __slots__ = ("values", "index", "shape", "dtype")

    def __init__(self, values, index, shape):
        self.values, self.index, self.shape, self.dtype = values, index, tuple(shape), values.dtype

    def add_to(self, buffer):
        """buffer[index] += values, accumulating repeated indices."""
        if is_basic(self.index):
            buffer[self.index] += self.values
        else:
            np.add.at(buffer, self.index, self.values)
        return buffer

    def dense(self):
        return self.add_to(np.zeros(self.shape, self.dtype))

    def astype(self, dtype):
        return IndexedGrad(self.values.astype(dtype), self.index, self.shape)


def is_basic(index):
    """Whether `index` is basic indexing (ints, slices, None, ...), which never repeats an element."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (slice, numbers.Integral)) for p in parts)
