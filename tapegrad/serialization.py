"""`save` / `load` of state dicts as `.npz` files, written atomically and read without pickle.

    tapegrad.save({"model": model.state_dict(), "optim": opt.state_dict(), "epoch": 3}, "ckpt.npz")
    ckpt = tapegrad.load("ckpt.npz")

What can be stored: numpy arrays (any non-object dtype) and numpy scalars, int, float, str, bool, None, and
dicts with str keys (no "/" in them), lists and tuples of those, nested to any depth. Each array is one `.npy`
entry named by its key path ("model/cell.W_hh", "optim/state/0/exp_avg"); the nesting and the other values
live in a JSON entry, next to a format-version entry. Loading restores dtypes, shapes, dict key order, lists,
tuples (as tuples) and numpy scalars exactly, and never unpickles: nothing in the file is executed.

The file is written to a temporary file in the same directory, flushed and fsynced, then renamed over `path`
(`os.replace`, atomic) and the directory fsynced, so a crash mid-save leaves the previous file intact (and at
worst a stray hidden `.<name>.*.tmp` file).
"""
import json
import os
import tempfile
import zipfile
from typing import Any

import numpy as np

from .errors import CheckpointError

__all__ = ["save", "load", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_VERSION_ENTRY = "__tapegrad_format_version__"
_TREE_ENTRY = "__tapegrad_tree__"
_SCALARS = (bool, int, float, str, type(None))


def save(obj: object, path: str | os.PathLike) -> None:
    """Write `obj` (a state dict; see the module docstring for what it may hold) to `path` atomically."""
    path = os.fspath(path)
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(obj, None, arrays, path)
    arrays[_TREE_ENTRY] = np.frombuffer(json.dumps(tree).encode(), dtype=np.uint8)
    arrays[_VERSION_ENTRY] = np.array(FORMAT_VERSION, dtype=np.int64)
    directory, name = os.path.split(os.path.abspath(path))
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for entry, arr in arrays.items():
                    with zf.open(entry + ".npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, arr, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    _fsync_directory(directory)


def load(path: str | os.PathLike) -> object:
    """Read what `save` wrote. A missing file raises FileNotFoundError; a truncated or corrupted file, or one of
    another format version, raises CheckpointError naming the path and the problem. The file is closed on every
    path out, errors included."""
    path = os.fspath(path)
    with open(path, "rb") as f:       # ours to close: np.load's own handle outlives a failed archive read
        try:
            contents = np.load(f, allow_pickle=False)
            if not isinstance(contents, np.lib.npyio.NpzFile):
                raise CheckpointError(f"load {path!r}: not a tapegrad checkpoint (a .npy file, not an .npz archive)")
            with contents as npz:
                return _read(npz, path)
        except CheckpointError:
            raise
        except Exception as e:   # zipfile.BadZipFile, bad .npy headers, CRC mismatches, truncated reads, bad JSON
            error = CheckpointError(f"load {path!r}: truncated or corrupted checkpoint ({_reason(e)})")
            raise error from (None if "allow_pickle" in str(e) else e)


def _reason(e: Exception) -> str:
    """numpy's error text without its advice to load the file with allow_pickle=True: a tapegrad checkpoint never
    holds pickled objects, so an entry that needs pickle means the file is corrupted or not ours, and unpickling
    it could run arbitrary code."""
    text = str(e)
    if "allow_pickle" in text:
        return "an entry holds pickled Python objects, which tapegrad checkpoints never contain; it is not loaded"
    return f"{type(e).__name__}: {text}"


def _read(npz: np.lib.npyio.NpzFile, path: str) -> object:
    if _VERSION_ENTRY not in npz.files or _TREE_ENTRY not in npz.files:
        raise CheckpointError(f"load {path!r}: not a tapegrad checkpoint (no format-version or tree entry)")
    version = npz[_VERSION_ENTRY]
    if version.shape != () or version.item() != FORMAT_VERSION:
        found = version.item() if version.shape == () else version
        raise CheckpointError(f"load {path!r}: checkpoint format version {found!r}, but this tapegrad reads "
                              f"version {FORMAT_VERSION}")
    return _decode(json.loads(npz[_TREE_ENTRY].tobytes().decode()), npz, path)


def _encode(obj: object, key: str | None, arrays: dict[str, np.ndarray], path: str) -> dict[str, Any]:
    """The JSON tree of `obj`, collecting its arrays into `arrays` under their key paths (`key` None: the root)."""
    where = "the top level" if key is None else repr(key)
    if isinstance(obj, (np.ndarray, np.generic)):
        if obj.dtype.hasobject:
            raise CheckpointError(f"save {path!r}: the array at {where} has dtype object, which cannot be stored "
                                  "without pickle")
        if key in (_TREE_ENTRY, _VERSION_ENTRY):
            raise CheckpointError(f"save {path!r}: the key {key!r} is reserved for tapegrad's own entries")
        key = "" if key is None else key
        arrays[key] = np.asarray(obj)
        return {"array" if isinstance(obj, np.ndarray) else "scalar": key}
    if isinstance(obj, _SCALARS):
        return {"value": obj}
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, str) or "/" in k or "\x00" in k:    # '/' joins key paths; zip names end at NUL
                raise CheckpointError(f"save {path!r}: dict keys must be str without '/' or NUL, got {k!r} in the "
                                      f"dict at {where}")
        return {"dict": {k: _encode(v, _join(key, k), arrays, path) for k, v in obj.items()}}
    if isinstance(obj, (list, tuple)):
        kind = "list" if isinstance(obj, list) else "tuple"
        return {kind: [_encode(v, _join(key, str(i)), arrays, path) for i, v in enumerate(obj)]}
    raise CheckpointError(f"save {path!r}: cannot store a {type(obj).__name__} at {where} "
                          "(supported: numpy arrays and scalars, int, float, str, bool, None, and dicts with str "
                          "keys, lists and tuples of those)")


def _join(key: str | None, k: str) -> str:
    return k if key is None else f"{key}/{k}"


def _decode(node: Any, npz: np.lib.npyio.NpzFile, path: str) -> object:
    if not isinstance(node, dict) or len(node) != 1:
        raise CheckpointError(f"load {path!r}: malformed tree entry near {str(node)[:80]!r}")
    (kind, body), = node.items()
    if kind == "value":
        return body
    if kind == "dict":
        return {k: _decode(v, npz, path) for k, v in body.items()}
    if kind in ("list", "tuple"):
        items = [_decode(v, npz, path) for v in body]
        return items if kind == "list" else tuple(items)
    if kind in ("array", "scalar"):
        arr = npz[body]
        return arr if kind == "array" else arr[()]
    raise CheckpointError(f"load {path!r}: unknown node kind {kind!r} in the tree entry")


def _file_mode(path: str) -> int:
    """The permissions `path` should get (mkstemp's are 0600): the existing file's, else 0666 less the umask."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_directory(directory: str) -> None:
    """Make the rename durable; not every platform (Windows) can open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
