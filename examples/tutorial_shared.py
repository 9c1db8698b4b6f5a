"""What the tutorial-seed examples (cos_regression, stateful_step, manual_unroll, variable_length,
mnist_rnn, projection_series, deep_rnn) share beyond `common.py`: progress lines with the loss,
side-by-side printing, and writing/checking results.
"""
import sys

import numpy as np
from common import progress


def parse(parser, argv, quick):
    """Parse argv; with --quick the defaults become `quick` ({dest: value}), flags given still win."""
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**quick)
        args = parser.parse_args(argv)
    return args


def training_steps(n, desc, losses, lines=20):
    """Iterate range(n) behind a progress bar; every n/lines items print the mean of the latest `losses`."""
    every = max(1, n // lines)
    for i in progress(range(n), desc, every=n + 1):
        yield i
        if (i + 1) % every == 0 or i + 1 == n:
            recent = losses[-every:]
            print(f"{desc} {i + 1}/{n}  loss {float(np.mean(recent)):.6g}", file=sys.stderr)


def side_by_side(title, left, right, names=("by hand", "unroll")):
    """Print two arrays of the same shape row by row, next to each other."""
    left, right = np.asarray(left), np.asarray(right)
    print(f"{title}  ({names[0]} | {names[1]})")
    rows_l = np.array2string(left, precision=5, suppress_small=True, max_line_width=200).splitlines()
    rows_r = np.array2string(right, precision=5, suppress_small=True, max_line_width=200).splitlines()
    width = max(len(r) for r in rows_l)
    for a, b in zip(rows_l, rows_r):
        print(f"  {a:<{width}} | {b}")
