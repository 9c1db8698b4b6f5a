"""tapegrad: autodiff on numpy where backpropagation through time falls out of an explicit tape."""
from .anomaly import detect_anomaly
from .autodiff import backward, grad
from .checkpoint import checkpoint
from .compile import compile
from .errors import (AnomalyError, ArgumentError, CheckpointError, DTypeError, GraphError, IndexOutOfRange,
                     InvalidValueError, ShapeError, TapegradError)
from .ops import (abs, add, astype, broadcast_to, clip, concat, div, dropout, exp, expand_dims, getitem, log,
                  log_softmax, logsumexp, matmul, max, maximum, mean, minimum, mul, neg, one_hot, pow, relu,
                  reshape, sigmoid, softmax, split, sqrt, squeeze, stack, sub, sum, take, tanh, transpose, where)
from .ops import (argmax, argmin, cos, cumsum, einsum, elu, erf, expm1, flip, gelu, leaky_relu, log1p, logsigmoid,
                  min, norm, pad, repeat, roll, sign, sin, softplus, std, take_along_axis, tile, tril, triu, var)
from .op import Joint, PerInput, defop
from .losses import (binary_cross_entropy_with_logits, cross_entropy, huber_loss, kl_div, l1_loss, mse_loss,
                     nll_loss)
from .tape import Record, Scope, Tape, enable_grad, is_grad_enabled, no_grad, scope
from .tensor import Tensor, get_default_dtype, set_default_dtype, tensor
from .gradcheck import gradcheck, gradgradcheck
from . import nn, optim
from . import check, testing, viz
from .serialization import load, save

__all__ = ["detect_anomaly", "backward", "grad", "checkpoint", "compile", "AnomalyError", "ArgumentError",
           "CheckpointError", "DTypeError", "GraphError", "IndexOutOfRange", "InvalidValueError", "ShapeError",
           "TapegradError", "abs", "add", "astype", "broadcast_to", "clip", "concat", "div", "dropout", "exp",
           "expand_dims", "getitem", "log", "log_softmax", "logsumexp", "matmul", "max", "maximum", "mean", "minimum",
           "mul", "neg", "one_hot", "pow", "relu", "reshape", "sigmoid", "softmax", "split", "sqrt", "squeeze",
           "stack", "sub", "sum", "take", "tanh", "transpose", "where", "argmax", "argmin", "cos", "cumsum", "einsum",
           "elu", "erf", "expm1", "flip", "gelu", "leaky_relu", "log1p", "logsigmoid", "min", "norm", "pad", "repeat",
           "roll", "sign", "sin", "softplus", "std", "take_along_axis", "tile", "tril", "triu", "var", "Joint",
           "PerInput", "defop", "binary_cross_entropy_with_logits", "cross_entropy", "huber_loss", "kl_div",
           "l1_loss", "mse_loss", "nll_loss", "Record", "Scope", "Tape", "enable_grad", "is_grad_enabled", "no_grad",
           "scope", "Tensor", "get_default_dtype", "set_default_dtype", "tensor", "gradcheck", "gradgradcheck", "nn",
           "optim", "check", "testing", "viz", "load", "save"]

__version__ = "0.1.0"
