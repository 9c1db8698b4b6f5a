"""Handwritten digits for the row-by-row examples: MNIST from IDX files, else scikit-learn's 8x8 digits.

    train, val, test = load_digits(folder)     # each (images (N, rows, cols) float32 in [0, 1], labels (N,) int64)

With a folder, it reads the four MNIST files in it (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
`t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`; the names may also use a dot before `idx` as in the ANNT
sources, end in `.idx`, and be gzipped as `.gz`) and holds out the last sixth of the training set for validation
(ANNT's split: 50,000 / 10,000 / 10,000). Without one, it uses the 1,797 8x8 digits bundled with scikit-learn
(an optional extra), shuffled with `seed` and split 1,199 / 239 / 359 (train / validation / test).
When neither is available it raises `DigitsUnavailable` saying what to install or download.
"""
import gzip
import importlib.util
import pathlib
import re

import numpy as np

# IDX type codes (the third byte of the magic number) -> big-endian numpy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MNIST_NAME = re.compile(r"^(train|t10k)-(images|labels)[-.]idx(?:[13]-ubyte)?(?:\.gz)?$")


class DigitsUnavailable(RuntimeError):
    """Neither MNIST files nor scikit-learn's digits could be loaded; the message says what to do."""


def read_idx(path):
    """The array stored in one IDX file (gzipped if the name ends in .gz): magic 0 0 <type> <ndim>, then ndim
    big-endian uint32 sizes, then the data in C order."""
    path = pathlib.Path(path)
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(n) for n in np.frombuffer(raw[4:header], ">u4"))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: header says shape {shape} ({expected} bytes of data), file has "
                         f"{len(raw) - header}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _mnist_file(folder, prefix, kind):
    hits = sorted(p for p in folder.iterdir() if (m := _MNIST_NAME.match(p.name)) and m.groups() == (prefix, kind))
    if not hits:
        raise DigitsUnavailable(f"{folder}: no {prefix}-{kind} IDX file (expected e.g. {prefix}-{kind}-idx"
                                f"{3 if kind == 'images' else 1}-ubyte[.gz]); download MNIST's four files "
                                f"into this folder")
    return hits[0]


def load_mnist(folder):
    """(train, test) from the four MNIST IDX files in `folder`; images scaled to [0, 1]."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise DigitsUnavailable(f"{folder}: not a folder; pass the folder holding MNIST's IDX files")
    parts = []
    for prefix in ("train", "t10k"):
        images = read_idx(_mnist_file(folder, prefix, "images"))
        labels = read_idx(_mnist_file(folder, prefix, "labels"))
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise ValueError(f"{folder}: {prefix} images {images.shape} and labels {labels.shape} do not match")
        parts.append((images.astype(np.float32) / 255.0, labels.astype(np.int64)))
    return tuple(parts)


def load_sklearn_digits():
    """scikit-learn's 1,797 8x8 digits: images (N, 8, 8) in [0, 1], labels (N,). Read straight from the CSV file
    scikit-learn bundles (importing scikit-learn takes seconds); its `load_digits` if that file has moved."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise DigitsUnavailable("no digits: pass a folder holding MNIST's IDX files, or `pip install scikit-learn` "
                                "for its bundled 8x8 digits")
    bundled = pathlib.Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if bundled.exists():
        table = np.loadtxt(bundled, delimiter=",")
        pixels, labels = table[:, :-1], table[:, -1]
    else:
        from sklearn.datasets import load_digits as sk_load_digits
        pixels, labels = sk_load_digits(return_X_y=True)
    return (pixels / 16.0).reshape(-1, 8, 8).astype(np.float32), labels.astype(np.int64)


def load_digits(folder=None, seed=0):
    """(train, val, test), each (images (N, rows, cols) float32 in [0, 1], labels (N,) int64); see the module doc."""
    if folder is not None:
        (images, labels), test = load_mnist(folder)
        n_val = len(labels) // 6
        return (images[:-n_val], labels[:-n_val]), (images[-n_val:], labels[-n_val:]), test
    images, labels = load_sklearn_digits()
    order = np.random.default_rng(seed).permutation(len(labels))
    images, labels = images[order], labels[order]
    n_test = len(labels) // 5
    n_val = (len(labels) - n_test) // 6
    cut = len(labels) - n_test - n_val
    return ((images[:cut], labels[:cut]), (images[cut:cut + n_val], labels[cut:cut + n_val]),
            (images[cut + n_val:], labels[cut + n_val:]))
