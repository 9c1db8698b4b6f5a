"""Regenerate docs/results.md: run the full version of every seed experiment, put our numbers beside the seeds'.

    python docs/make_results.py            # run everything (about half an hour on 2 cores), then write the page
    python docs/make_results.py --no-run   # rewrite the page from the results.json files already in out/full/

Each run writes out/full/<name>/results.json (and its CSV files and plots); the page's table reads
those files, and the narrative sections in docs/results/*.md follow it.
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "full"


def pct(x):
    return f"{100 * x:.2f} %"


def nmse_rows(r):
    """NMSE of every model on the first test period (the keys after 'weights' and 'train')."""
    first = [k for k in r["nmse"]["persistence"] if k not in ("weights", "train")][0]
    return "; ".join(f"{k} {v[first]:.3f}" for k, v in r["nmse"].items()) + f" (NMSE {first})"


# name, seed, experiment, what the seed reports, command (after `python`), our result from results.json
RUNS = [
    ("sequence_memory_rnn", "000 ANNT", "sequence prediction, RNN 20", "10/10 Good",
     ["examples/sequence_memory.py", "--cell", "rnn"], lambda r: f"{r['good']}/10 Good"),
    ("sequence_memory_lstm", "000 ANNT", "sequence prediction, LSTM 20", "10/10 Good",
     ["examples/sequence_memory.py", "--cell", "lstm"], lambda r: f"{r['good']}/10 Good"),
    ("sequence_memory_gru", "000 ANNT", "sequence prediction, GRU 20", "10/10 Good",
     ["examples/sequence_memory.py", "--cell", "gru"], lambda r: f"{r['good']}/10 Good"),
    ("time_series", "000 ANNT", "time-series prediction, GRU 30", "plots only",
     ["examples/time_series.py"],
     lambda r: f"held-out RMSE {r['heldout_rmse']:.3f} vs last value {r['naive_rmse']:.3f}"),
    ("digits_rows", "000 ANNT", "digits row by row, GRU 56", "97.79 % test (MNIST)",
     ["examples/digits_rows.py"], lambda r: f"{pct(r['test_acc'])} test ({r['data']})"),
    ("city_names", "000 ANNT", "city-name generation, GRU 60", "sampled names",
     ["examples/city_names.py"],
     lambda r: f"{r['heldout_ce']:.3f} vs bigram {r['bigram_ce']:.3f} nats/char; {pct(r['novel_share'])} new names"),
    ("cos_regression", "003 min-char-rnn", "cos regression, Elman 100", "plots only",
     ["examples/cos_regression.py"],
     lambda r: f"tape vs hand BPTT {r['grad_max_rel_diff']:.1e}; test MSE {r['test_mse']:.2e} "
               f"vs last value {r['baseline_mse']:.2e}"),
    ("stateful_step", "001 BPTT intro", "RNN with a step method", "no numbers",
     ["examples/stateful_step.py"],
     lambda r: f"per-step sum vs tape {r['per_step_sum_vs_tape']:.1e}; test MSE {r['test_mse']:.2e} "
               f"vs {r['baseline_mse']:.2f}"),
    ("manual_unroll", "004 TensorFlow", "manual unrolling, 2 steps", "the same outputs",
     ["examples/manual_unroll.py"], lambda r: f"gradients agree to {r['grads_rel_diff']:.1e}"),
    ("variable_length", "004 TensorFlow", "variable-length sequences", "zeros past each length",
     ["examples/variable_length.py"], lambda r: f"equal to per-sequence runs; gradients {r['grads_rel_diff']:.1e}"),
    ("mnist_rnn", "004 TensorFlow", "classifier, 150 basic RNN neurons", "98 % (MNIST)",
     ["examples/mnist_rnn.py"], lambda r: f"{pct(r['test_accuracy'])} test ({r['data']})"),
    ("projection_series", "004 TensorFlow", "time series, output projection", "plot only",
     ["examples/projection_series.py"],
     lambda r: f"test MSE {r['test_mse']:.4f} vs last value {r['baseline_mse']:.3f}"),
    ("deep_rnn", "004 TensorFlow", "3-layer MultiRNNCell; forget bias 1 vs 0", "forget bias 1.0 advised",
     ["examples/deep_rnn.py"],
     lambda r: f"accuracy {r['final_accuracy_bias_1.0']:.3f} (bias 1) vs {r['final_accuracy_bias_0.0']:.3f} (bias 0)"),
    ("sunspots", "002 lecture", "sunspots: TDNN vs recurrent nets", "NMSE table",
     ["examples/sunspots.py"], nmse_rows),
    ("pulse_converter", "002 lecture", "pulse converter: weights and test error", "41 146 131 252 190 2726",
     ["examples/pulse_converter.py"],
     lambda r: "weights " + " ".join(str(w) for w in r["weights"].values()) + "; NMSE "
               + ", ".join(f"{k} {v:.3f}" for k, v in r["test_nmse"].items())),
    ("bidirectional", "002 lecture", "bidirectional vs unidirectional LSTM", "bidirectional helps",
     ["examples/bidirectional.py"],
     lambda r: f"{pct(r['bidirectional']['test_accuracy'])} vs {pct(r['unidirectional']['test_accuracy'])}"),
    ("char_model", "002 lecture", "character model, stacked LSTM", "samples",
     ["examples/char_model.py"], lambda r: f"{r['valid_bpc']:.3f} vs unigram {r['unigram_bpc']:.3f} bits/char"),
    ("seq2seq", "004 TensorFlow", "encoder-decoder translation", "(target >= 95 %)",
     ["examples/seq2seq.py"], lambda r: f"{pct(r['heldout_exact_match'])} exact match held out"),
]


def run(name, command):
    """Run one full experiment; returns (name, seconds, return code)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    log = OUT / f"{name}.log"
    start = time.perf_counter()
    with open(log, "w") as f:
        code = subprocess.call([sys.executable, *command, "--out", str(OUT / name)], cwd=ROOT, env=env,
                               stdout=f, stderr=subprocess.STDOUT)
    return name, time.perf_counter() - start, code


def page(times):
    lines = ["# The seed experiments, reproduced", "",
             "Generated by `python docs/make_results.py` on "
             f"{datetime.date.today()} ({platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}, "
             "one BLAS thread per run). Each row is the full run of one example (`python <command>`, the seed's "
             "settings by default); the sections after the table explain each experiment, its deviations from "
             "the seed, and further runs.", "",
             "| seed | experiment | the seed reports | ours | command | time |", "|---|---|---|---|---|---|"]
    for name, seed, what, theirs, command, ours in RUNS:
        path = OUT / name / "results.json"
        result = ours(json.loads(path.read_text())) if path.exists() else "not run"
        seconds = f"{times[name]:.0f} s" if name in times else ""
        lines.append(f"| {seed} | {what} | {theirs} | {result} | `python {' '.join(command)}` | {seconds} |")
    for section in sorted((ROOT / "docs" / "results").glob("*.md")):
        lines += ["", section.read_text().strip()]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-run", action="store_true", help="only rewrite the page from out/full/*/results.json")
    ap.add_argument("--jobs", type=int, default=2, help="experiments run at once (default 2)")
    ap.add_argument("--only", default="", help="comma list of experiment names to run")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    times_file = OUT / "times.json"
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    if not args.no_run:
        chosen = [r for r in RUNS if not args.only or r[0] in args.only.split(",")]
        with ThreadPoolExecutor(args.jobs) as pool:
            for name, seconds, code in pool.map(lambda r: run(r[0], r[4]), chosen):
                print(f"{name}: exit {code}, {seconds:.0f} s", flush=True)
                if code == 0:
                    times[name] = seconds
        times_file.write_text(json.dumps(times, indent=2))
    (ROOT / "docs" / "results.md").write_text(page(times))
    print("wrote docs/results.md")


if __name__ == "__main__":
    main()
