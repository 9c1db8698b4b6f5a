"""The least Python an eager tape can do per op: a floor for eager tapegrad in benchmarks/bptt.py.

Each op runs its numpy kernel, makes one output object and appends (output, inputs, backward closure)
to a list; backward walks the list in reverse, calls each closure once and adds the results into the
inputs' `.grad` (in place once a gradient is its own array). Nothing else: no checks, no scopes, no
dtype or shape handling beyond a bias row sum, no freeing, no heap (every record is visited). The kernels
are those of tapegrad's eager rules (the same products and elementwise calls), so

    minimal tape - (the compiled step, which runs those kernels with no bookkeeping at all)

is what any eager tape of this code costs in CPython at the least, and eager tapegrad's own excess over
the minimal tape is its checks and features. Not a framework: it knows the ops the benchmark's cells use.
"""
import numpy as np

_TAPE: list = []


class Var:
    """An array, its gradient, and whether the gradient array is its own (so += cannot touch another's)."""
    __slots__ = ("data", "grad", "own")

    def __init__(self, data):
        self.data, self.grad, self.own = data, None, False

    def __add__(self, other):
        x, y = self.data, _data(other)
        if np.ndim(y) == 1 and x.ndim == 2:                  # a bias row: its gradient sums the batch
            return _record(np.add(x, y), (self, other), lambda g: (g, np.add.reduce(g, axis=0)))
        return _record(np.add(x, y), (self, other), lambda g: (g, g))

    __radd__ = __add__

    def __rsub__(self, other):                                # 1 - z (the GRU)
        return _record(np.subtract(other, self.data), (self,), lambda g: (-g,))

    def __mul__(self, other):
        x, y = self.data, _data(other)
        return _record(np.multiply(x, y), (self, other), lambda g: (g * y, g * x))

    def __matmul__(self, other):
        x, y = self.data, other.data                          # tapegrad's kernels for 2-d products
        return _record(np.dot(x, y), (self, other), lambda g: ((y @ g.T).T, x.T @ g))

    def item(self):
        return self.data.item()

    def backward(self):
        self.grad = np.ones_like(self.data)
        for out, inputs, back in reversed(_TAPE):
            g = out.grad
            if g is None:
                continue
            for v, gv in zip(inputs, back(g)):
                if type(v) is not Var:
                    continue
                if v.grad is None:
                    v.grad, v.own = gv, False
                elif v.own:
                    v.grad += gv
                else:
                    v.grad = v.grad + gv
                    v.own = True
        _TAPE.clear()


def _data(v):
    return v.data if type(v) is Var else v


def _record(out, inputs, back):
    v = Var(out)
    _TAPE.append((v, inputs, back))
    return v


def tanh(x):
    a = np.tanh(x.data)
    return _record(a, (x,), lambda g: (g * (1 - a * a),))


def sigmoid(x):
    s = np.multiply(x.data, np.float32(0.5))                  # tapegrad's stable sigmoid: tanh(x/2)/2 + 1/2
    np.tanh(s, out=s)
    s *= np.float32(0.5)
    s += np.float32(0.5)
    return _record(s, (x,), lambda g: (g * s * (1 - s),))


def mse(pred, target):
    diff = pred.data - target.data
    return _record(np.asarray(np.vdot(diff, diff) / diff.size, diff.dtype), (pred,),
                   lambda g: (diff * (float(g) * 2 / diff.size),))
