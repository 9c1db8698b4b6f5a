"""What every example script shares: its command line, progress, CSV output and optional plots.

    parser = example_parser(__doc__)            # adds --quick, --seed, --out
    args = parser.parse_args(argv)
    for epoch in progress(range(args.epochs), "epochs"):
        ...
    write_csv(out / "fit.csv", {"original": y, "prediction": p})
    plot_lines(out / "fit.png", {"original": y, "prediction": p}, title="...")

Each example's `main(argv=None)` returns a dict of its results, which the tests assert on.
"""
import argparse
import csv
import json
import pathlib
import sys

import numpy as np


def example_parser(doc, out_default):
    """An argparse parser with the flags every example has."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run (< 20 s) that still checks its result")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default=out_default, help=f"output folder (default {out_default})")
    return parser


def out_dir(path):
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def progress(iterable, desc, every=1):
    """tqdm's progress bar when tqdm is installed and stderr is a terminal (disable=None: no bar, so no stream of
    carriage-return updates, in a log or a pipe); else a line every `every` items (on stderr)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _plain_progress(iterable, desc, every)
    if not sys.stderr.isatty():
        return _plain_progress(iterable, desc, every)
    return tqdm(iterable, desc=desc, file=sys.stderr, leave=False, disable=None)


def _plain_progress(iterable, desc, every):
    """A line every `every` items, at most about ten lines in all (a log stays readable)."""
    items = list(iterable)
    every = max(every, -(-len(items) // 10))
    for i, item in enumerate(items):
        if i % every == 0 or i == len(items) - 1:
            print(f"{desc} {i + 1}/{len(items)}", file=sys.stderr)
        yield item


def write_csv(path, columns):
    """Write equally long columns {name: values} as a CSV file with a header row."""
    names = list(columns)
    rows = zip(*(np.asarray(columns[n]).ravel() for n in names))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        writer.writerows(rows)
    return path


def plot_lines(path, series, title="", xlabel="", ylabel="", logy=False):
    """Line plot of {label: values} to a PNG when matplotlib is installed; returns the path or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for label, values in series.items():
        ax.plot(np.asarray(values).ravel(), label=label, linewidth=1.2)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if logy:
        ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_results(out, results):
    """Write the dict `results` to <out>/results.json (numpy numbers and arrays become JSON numbers and lists);
    returns the dict as written."""
    results = _json_ready(results)
    (out_dir(out) / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def finish(args, results, checks):
    """Save `results` (see save_results) and report the claims the run must reach; with --quick, a failed
    claim raises SystemExit naming every failed one. checks: [(passed, message if not passed)]."""
    results = save_results(args.out, results)
    failed = [message for passed, message in checks if not passed]
    for message in failed:
        print(f"NOT REACHED: {message}", file=sys.stderr)
    if args.quick and failed:
        raise SystemExit("quick run did not reach its result: " + "; ".join(failed))
    return results


def _json_ready(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        return {str(k): _json_ready(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_ready(x) for x in v]
    return v
