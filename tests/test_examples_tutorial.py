"""The tutorial-seed examples' --quick runs (each asserts its own result too; these check the returned numbers)."""
import importlib
import json
import pathlib
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))


def quick(name, tmp_path):
    results = importlib.import_module(name).main(["--quick", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "results.json").read_text()) == results
    return results


def test_cos_regression(tmp_path):
    r = quick("cos_regression", tmp_path)
    assert r["grad_max_rel_diff"] <= 1e-9
    assert r["test_mse"] < r["baseline_mse"]


def test_stateful_step(tmp_path):
    r = quick("stateful_step", tmp_path)
    assert r["per_step_sum_vs_tape"] <= 1e-12 and r["per_step_vs_hand_bptt"] <= 1e-12
    assert r["stream_vs_unrolled"] <= 1e-12 and r["reset_repeat"] == 0
    assert r["test_mse"] < 0.1 * r["baseline_mse"]


def test_manual_unroll(tmp_path):
    r = quick("manual_unroll", tmp_path)
    # float32 products that unroll may send through BLAS in other shapes: equal within the example's tolerance
    for key in ("outputs_static_vs_hand", "outputs_dynamic_vs_hand", "final_state_vs_Y1"):
        assert r[key] <= r["float32_tolerance"], key
    assert r["grads_rel_diff"] < 1e-5


def test_variable_length(tmp_path):
    r = quick("variable_length", tmp_path)
    for key in ("outputs_past_length", "state_vs_last_valid_output", "grad_of_padding"):    # exact by construction
        assert r[key] == 0, key
    for key in ("outputs_vs_alone", "states_vs_alone"):     # float32 through BLAS products of other shapes
        assert r[key] <= r["float32_tolerance"], key
    assert r["grads_rel_diff"] < 1e-5


def test_mnist_rnn(tmp_path):
    pytest.importorskip("sklearn", reason="the default digits are scikit-learn's bundled 8x8 set")
    r = quick("mnist_rnn", tmp_path)
    assert r["test_accuracy"] >= 0.9 > r["baseline_accuracy"]


def test_projection_series(tmp_path):
    r = quick("projection_series", tmp_path)
    assert r["test_mse"] < 0.5 * r["baseline_mse"]


def test_deep_rnn(tmp_path):
    r = quick("deep_rnn", tmp_path)
    assert r["state_shapes"] == [[2, 100]] * 3 and r["top_state_vs_last_output"] == 0
    assert r["final_accuracy_bias_1.0"] >= 0.9
