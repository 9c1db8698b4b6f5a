"""The RNN-lecture examples (and the TensorFlow tutorial's encoder-decoder), each run in --quick mode.

Each quick run trains a real network and asserts its own result inside main; these tests check the
returned numbers again.
"""
import importlib.util
import json
import pathlib
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))


def run(name, tmp_path):
    results = __import__(name).main(["--quick", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "results.json").read_text()) == results
    return results


@pytest.mark.skipif(importlib.util.find_spec("statsmodels") is None,
                    reason="the sunspot series comes from the optional statsmodels package")
def test_sunspots_models_beat_persistence(tmp_path):
    nmse = run("sunspots", tmp_path)["nmse"]
    assert set(nmse) == {"persistence", "tdnn", "elman", "bptt", "tbptt", "lstm"}
    assert [nmse[m]["weights"] for m in ("tdnn", "elman", "lstm")] == [29, 41, 146]
    base = nmse["persistence"]["1921-1955"]
    for model, row in nmse.items():
        if model != "persistence":
            assert row["1921-1955"] < base, model
    assert (tmp_path / "predictions.csv").exists()


def test_sunspots_data_from_csv_or_a_clear_message(tmp_path, monkeypatch):
    import sunspots
    path = tmp_path / "series.csv"
    path.write_text("year,value\n1700,5\n1701,11\n1702,16\n")
    years, values = sunspots.load_series(path)
    assert years.tolist() == [1700, 1701, 1702] and values.tolist() == [5, 11, 16]
    monkeypatch.setattr(sunspots.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match="statsmodels.*--csv"):
        sunspots.load_series()


def test_pulse_converter_counts_and_ranking(tmp_path):
    results = run("pulse_converter", tmp_path)
    assert results["weights"] == {"RNN 5": 41, "LSTM 5": 146, "RNN 10": 131, "LSTM 5-3": 252, "GRU 5-3": 190,
                                  "LSTM 25 (inverse)": 2726, "LSTM 5 (inverse)": 146}
    errors = results["test_nmse"]
    assert set(errors) == {"RNN 5", "LSTM 5"}
    assert errors["LSTM 5"] < errors["RNN 5"] / 2 and errors["RNN 5"] < 1
    assert (tmp_path / "lstm_5.csv").exists()


def test_bidirectional_beats_unidirectional(tmp_path):
    results = run("bidirectional", tmp_path)
    bi, uni = results["bidirectional"], results["unidirectional"]
    assert abs(bi["weights"] - uni["weights"]) / bi["weights"] < 0.05
    assert bi["test_accuracy"] > results["causal_bound"] > uni["test_accuracy"] - 0.02
    assert bi["test_accuracy"] > uni["test_accuracy"] + 0.1


def test_char_model_beats_unigram(tmp_path):
    results = run("char_model", tmp_path)
    assert results["valid_bpc"] < results["unigram_bpc"] - 0.3
    assert all(text.startswith(seed) for seed, text in results["samples_after"].items())
    assert (tmp_path / "samples.txt").exists()


def test_seq2seq_exact_match(tmp_path):
    results = run("seq2seq", tmp_path)
    assert results["heldout_exact_match"] > 0.5          # chance is about 1 in 1000
    assert (tmp_path / "heldout.csv").exists()
