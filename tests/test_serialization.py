"""tapegrad.save / tapegrad.load: exact round trips, atomic writes, clear errors, crash safety, bit-exact resume."""
import gc
import os
import pathlib
import signal
import subprocess
import sys
import time
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tapegrad as tg
from tapegrad.errors import CheckpointError, TapegradError
from tapegrad.optim import Adam, clip_grad_norm
from tapegrad.serialization import FORMAT_VERSION

ROOT = pathlib.Path(__file__).resolve().parents[1]


def assert_same(a, b, where="root"):
    """Equal values of the same types; arrays of the same dtype and shape (NaNs equal)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}/{i}")
    elif isinstance(a, float) and a != a:
        assert b != b, where
    else:
        assert a == b, where


def listing(directory):
    return sorted(p.name for p in pathlib.Path(directory).iterdir())


NESTED = {
    "model": {"cell.W_hh": np.arange(12, dtype=np.float32).reshape(3, 4), "cell.b": np.zeros(4, np.float16),
              "emb": np.asfortranarray(np.random.default_rng(0).normal(size=(5, 2)))},
    "optim": {"optimizer": "Adam", "hyper": {"lr": 1e-3, "betas": (0.9, 0.999)}, "step_count": 5,
              "state": [{"step": 5, "exp_avg": np.ones((3, 4), np.float32)}, {"step": 0}]},
    "epoch": 3, "best": float("nan"), "worst": float("-inf"), "big": 2 ** 80, "done": False, "note": None,
    "name": "héllo / wörld \u2603", "scalars": [np.float64(0.1), np.int8(-3), np.bool_(True), np.complex64(1 - 2j)],
    "odd": {"": {"x": np.array(7, dtype=np.uint16)}, "empty": {}, "empty_list": [], "empty_arr": np.zeros((0, 3))},
    "arrays": [np.array([True, False]), np.array(["ab", "c"]), np.array([1 + 2j]), np.array(2 ** 62, np.int64)],
    "mixed": ("a", [1, (2.5, np.ones(2))], {"k": ()}),
}


def test_round_trip_nested(tmp_path):
    path = tmp_path / "ckpt.npz"
    tg.save(NESTED, path)
    back = tg.load(str(path))
    assert_same(NESTED, back)
    assert back["model"]["emb"].flags.f_contiguous and back["model"]["cell.W_hh"].flags.writeable
    assert listing(tmp_path) == ["ckpt.npz"]
    files = np.load(path).files                # arrays are plain .npz entries named by key path
    assert "model/cell.W_hh" in files and "optim/state/0/exp_avg" in files and "mixed/1/1/1" in files


def test_top_level_array_overwrite_and_permissions(tmp_path):
    path = tmp_path / "a.npz"
    tg.save(np.arange(3), path)
    assert_same(tg.load(path), np.arange(3))
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask          # as open() would make it, not mkstemp's 0600
    os.chmod(path, 0o640)
    tg.save({"x": 1}, path)
    assert tg.load(path) == {"x": 1} and os.stat(path).st_mode & 0o777 == 0o640


leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8),
    st.sampled_from([np.float32, np.float64, np.int32, np.uint8, np.bool_, np.complex128]).flatmap(
        lambda dt: st.lists(st.integers(0, 9), max_size=6).map(lambda v: np.array(v, dtype=dt))),
    st.floats(allow_nan=False, width=32).map(np.float32),
)
trees = st.recursive(leaves, lambda kids: st.one_of(
    st.lists(kids, max_size=3), st.lists(kids, max_size=3).map(tuple),
    st.dictionaries(st.text(max_size=5).filter(lambda k: "/" not in k and "\x00" not in k), kids, max_size=3)),
    max_leaves=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trees)
def test_round_trip_property(tmp_path, obj):
    path = tmp_path / "p.npz"
    tg.save(obj, path)
    assert_same(obj, tg.load(path))


# -- atomicity -------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, match", [
    ({"w": np.ones(3), "x": object()}, "cannot store a object at 'x'"),
    ({"w": np.ones(3), "t": tg.tensor(np.ones(2))}, "cannot store a Tensor at 't'"),
    ({"a": {1: np.ones(2)}}, "dict keys must be str without '/' or NUL, got 1 in the dict at 'a'"),
    ({"a/b": 1}, "got 'a/b'"),
    ({"\x00": np.ones(1)}, r"got '\\x00'"),                  # found by the round-trip property test
    ({"a": [np.array([None])]}, "array at 'a/0' has dtype object"),
    ({"__tapegrad_tree__": np.ones(1)}, "reserved"),
])
def test_unserialisable_save_leaves_previous_file(tmp_path, bad, match):
    path = tmp_path / "ckpt.npz"
    tg.save({"epoch": 1, "w": np.ones(3)}, path)
    with pytest.raises(CheckpointError, match=match):
        tg.save(bad, path)
    assert_same(tg.load(path), {"epoch": 1, "w": np.ones(3)})
    assert listing(tmp_path) == ["ckpt.npz"]


@pytest.mark.parametrize("failure", ["write", "fsync"])
def test_failure_midway_leaves_previous_file_and_no_temp(tmp_path, monkeypatch, failure):
    path = tmp_path / "ckpt.npz"
    tg.save({"epoch": 1}, path)
    if failure == "write":                     # the second array fails, after the first one was written
        real, calls = np.lib.format.write_array, []

        def write_array(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
            return real(*args, **kwargs)
        monkeypatch.setattr(np.lib.format, "write_array", write_array)
    else:
        def fsync(fd):
            raise OSError(5, "Input/output error")
        monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError):
        tg.save({"epoch": 2, "a": np.ones(1000), "b": np.ones(1000)}, path)
    monkeypatch.undo()
    assert tg.load(path) == {"epoch": 1}
    assert listing(tmp_path) == ["ckpt.npz"]


# -- bad files -------------------------------------------------------------------------------------
@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.npz"
    tg.save({"w": np.arange(10000, dtype=np.float64), "epoch": 2}, path)
    return path


def test_truncated_file(good):
    data = good.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 30):
        good.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f"load '{good}'.*truncated or corrupted") as e:
            tg.load(good)
        assert isinstance(e.value, TapegradError)


def test_failed_loads_close_the_file(good):
    data = good.read_bytes()
    np.save(good.with_suffix(".npy"), np.ones(3))
    for cut in (0, 10, len(data) // 2, len(data) - 30, None):
        if cut is not None:
            good.write_bytes(data[:cut])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(CheckpointError):
                tg.load(good if cut is not None else good.with_suffix(".npy"))
            gc.collect()                  # an unclosed handle warns when it is collected
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == [], cut


def test_corrupted_array_bytes_fail_the_crc(good):
    data = bytearray(good.read_bytes())
    i = data.index(np.arange(5000, 5001, dtype=np.float64).tobytes())
    data[i] ^= 0xFF
    good.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted.*CRC"):
        tg.load(good)


def test_garbage_npy_and_foreign_npz(tmp_path):
    cases = {"garbage.npz": b"not a checkpoint at all" * 10}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    np.save(tmp_path / "plain.npy", np.ones(3))
    np.savez(tmp_path / "foreign.npz", w=np.ones(3))
    with pytest.raises(CheckpointError, match="garbage.npz.*truncated or corrupted"):
        tg.load(tmp_path / "garbage.npz")
    with pytest.raises(CheckpointError, match=r"plain.npy.*not an \.npz archive"):
        tg.load(tmp_path / "plain.npy")
    with pytest.raises(CheckpointError, match="foreign.npz.*not a tapegrad checkpoint"):
        tg.load(tmp_path / "foreign.npz")
    with pytest.raises(FileNotFoundError):
        tg.load(tmp_path / "missing.npz")


def replace_entry(path, name, array):
    """Rewrite the archive at `path` with entry `name` holding `array` (pickled if it is an object array)."""
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(path, "w") as zf:
        for n, raw in entries.items():
            if n == name + ".npy":
                with zf.open(n, "w") as member:
                    np.lib.format.write_array(member, array, allow_pickle=True)
            else:
                zf.writestr(n, raw)


def test_other_format_version(good):
    replace_entry(good, "__tapegrad_format_version__", np.array(FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match=f"good.npz.*format version {FORMAT_VERSION + 1}, but this tapegrad "
                                              f"reads version {FORMAT_VERSION}"):
        tg.load(good)


EXPLOITED = []


def _exploit():
    EXPLOITED.append(True)


class Payload:
    def __reduce__(self):
        return _exploit, ()


def test_loading_never_unpickles(good):
    replace_entry(good, "w", np.array([Payload()], dtype=object))
    with pytest.raises(CheckpointError, match="good.npz.*pickled Python objects, which tapegrad checkpoints never "
                                              "contain") as e:
        tg.load(good)
    assert EXPLOITED == []
    assert "allow_pickle" not in str(e.value) and e.value.__cause__ is None     # no advice to load it unsafely


# -- crash safety ----------------------------------------------------------------------------------
SAVER = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from tapegrad import save
path, i = sys.argv[2], int(sys.argv[3])
w = np.empty(2_000_000)
while True:
    w.fill(i)
    save({"i": i, "w": w, "log": ["step"] * i}, path)
    if i == int(sys.argv[3]):
        print("saved", flush=True)
    i += 1
"""


def test_sigkill_mid_save_keeps_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    tg.save({"i": 0, "w": np.zeros(2_000_000), "log": []}, path)
    rng = np.random.default_rng(1234)
    last, start = 0, time.monotonic()
    for _round in range(5):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(ROOT), str(path), str(last + 1)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        assert line == "saved\n", proc.stderr.read()
        time.sleep(rng.uniform(0.0, 0.2))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        ckpt = tg.load(path)                    # whichever save last completed, whole
        assert ckpt["i"] > last and np.all(ckpt["w"] == ckpt["i"]) and ckpt["log"] == ["step"] * ckpt["i"]
        last = ckpt["i"]
        for stray in tmp_path.glob(".ckpt.npz.*.tmp"):   # a killed save may leave its temp file, never the target
            stray.unlink()
        if time.monotonic() - start > 4:
            break
    assert listing(tmp_path) == ["ckpt.npz"]


# -- resuming training -----------------------------------------------------------------------------
T, N_IN, N_H, N_OUT = 6, 3, 5, 2
DATA_RNG = np.random.default_rng(7)
XS = DATA_RNG.normal(size=(T, 1, N_IN)).astype(np.float32)
YS = DATA_RNG.normal(size=(T, 1, N_OUT)).astype(np.float32)
NAMES = ("W_xh", "W_hh", "b_h", "W_hy")


def make_params(seed):
    rng = np.random.default_rng(seed)
    shapes = {"W_xh": (N_IN, N_H), "W_hh": (N_H, N_H), "b_h": (N_H,), "W_hy": (N_H, N_OUT)}
    return {n: tg.tensor(rng.normal(scale=0.5, size=shapes[n]).astype(np.float32), requires_grad=True, name=n)
            for n in NAMES}


def train(params, opt, steps):
    """Tanh RNN over the fixed sequence; squared error at every step; BPTT by backward on the tape."""
    for _ in range(steps):
        opt.zero_grad()
        h = tg.tensor(np.zeros((1, N_H), np.float32))
        loss = 0
        for x, y in zip(XS, YS):
            h = tg.tanh(x @ params["W_xh"] + h @ params["W_hh"] + params["b_h"])
            loss = loss + ((h @ params["W_hy"] - y) ** 2).sum()
        loss.backward()
        clip_grad_norm(opt.params, 1.0)
        opt.step()


def test_resumed_training_continues_bit_for_bit(tmp_path):
    straight = make_params(0)
    opt = Adam([straight[n] for n in NAMES], lr=0.01, weight_decay=1e-3)
    train(straight, opt, 10)

    first = make_params(0)
    opt1 = Adam([first[n] for n in NAMES], lr=0.01, weight_decay=1e-3)
    train(first, opt1, 5)
    tg.save({"params": {n: first[n].data for n in NAMES}, "optim": opt1.state_dict(), "step": 5},
            tmp_path / "ckpt.npz")
    del first, opt1

    resumed = make_params(99)                  # different values: only the checkpoint can make them match
    opt2 = Adam([resumed[n] for n in NAMES])
    ckpt = tg.load(tmp_path / "ckpt.npz")
    for n in NAMES:
        np.copyto(resumed[n].data, ckpt["params"][n])
    opt2.load_state_dict(ckpt["optim"])
    assert ckpt["step"] == 5 and opt2.hyper["lr"] == 0.01 and opt2.step_count == 5
    train(resumed, opt2, 5)

    for n in NAMES:
        assert resumed[n].data.dtype == np.float32
        assert np.array_equal(resumed[n].data, straight[n].data), n
    for s1, s2 in zip(opt.state_dict()["state"], opt2.state_dict()["state"]):
        assert s1["step"] == s2["step"] == 10
        assert np.array_equal(s1["exp_avg"], s2["exp_avg"]) and np.array_equal(s1["exp_avg_sq"], s2["exp_avg_sq"])
