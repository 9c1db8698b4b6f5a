"""Cost per time step of one LSTM BPTT training step as T grows (issue 16): is eager tapegrad linear in T?

One step is bptt.py's LSTM step (forward over T steps, MSE at every step, backward to every parameter)
at B = 16, D = 32, H = 128 (output size O = D), for T = 100, 1,000, 5,000 and 20,000. Reported per
contender: the step time divided by T in microseconds, that cost over the contender's own cost at the
smallest T (T = 100 by default; 1.00 everywhere means linear in T), and that cost over hand-careful's at
the same T. Contenders, setup, the correctness check against hand-numpy and the timing method
(interleaved rounds, min over rounds of the median of `repeat` steps, single thread) are bptt.py's;
rounds and repeats shrink as T grows, since this is about how the cost scales, not about a few percent.

tapegrad-nn-compiled traces the step on its first two calls (linear in T, 6 s at T = 600), so it is run
only up to --compiled-max-T (default 5,000) and shown as n/a above.

    python benchmarks/long_unroll.py [--T 100,1000,5000,20000] [--contenders ...] [--rounds N --repeat M]
"""
import bptt  # noqa: I001 -- first: it sets the single-thread variables before numpy is imported

import argparse
import sys

import numpy as np

B, D, H = 16, 32, 128
TS = (100, 1000, 5000, 20000)
NAMES = (bptt.CAREFUL, "tapegrad-nn", "tapegrad", "tapegrad-nn-compiled")
COMPILED_MAX_T = 5000


def schedule(T):
    """(rounds, repeat) for a sequence of length T: fewer at large T, where one step takes seconds."""
    return (5, 3) if T <= 100 else (3, 3) if T <= 1000 else (2, 1) if T <= 5000 else (1, 1)


def measure(Ts, names=NAMES, B=B, D=D, H=H, rounds=None, repeat=None, compiled_max_t=COMPILED_MAX_T,
            out=sys.stdout):
    """{T: {name: us per time step, or None where not run}}; prints one line per T as it goes."""
    result = {}
    for T in Ts:
        run = [n for n in names if "compiled" not in n or T <= compiled_max_t]
        r, m = schedule(T)
        steps = bptt.make_steps(run, "lstm", dict(B=B, D=D, H=H, T=T))
        ms = bptt.time_steps(steps, rounds or r, repeat or m)
        result[T] = {n: ms[n] * 1e3 / T if ms.get(n) is not None else None for n in names}
        print(f"  T = {T}: " + ", ".join(f"{n} {_fmt(v, '.0f')}" for n, v in result[T].items()) + " us/step",
              file=out, flush=True)
    return result


def _fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def _ratio(a, b):
    return None if a is None or b is None else a / b


def print_table(result, names, out=sys.stdout):
    """Markdown table: us per step, the ratio to the same contender at the smallest T, the ratio to hand-careful."""
    T0 = min(result)
    cols = ["T"] + [f"{n} us/step" for n in names] + [f"{n} /T={T0}" for n in names] + \
        [f"{n} /careful" for n in names if n != bptt.CAREFUL]
    print("| " + " | ".join(cols) + " |", file=out)
    print("|" + "---|" * len(cols), file=out)
    for T, v in result.items():
        cells = [f"{T:,}"] + [_fmt(v[n], ".0f") for n in names] + \
            [_fmt(_ratio(v[n], result[T0][n]), ".2f") for n in names] + \
            [_fmt(_ratio(v[n], v.get(bptt.CAREFUL)), ".2f") for n in names if n != bptt.CAREFUL]
        print("| " + " | ".join(cells) + " |", file=out)


def main(argv=None, out=sys.stdout):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", default=",".join(map(str, TS)), help="comma list of sequence lengths")
    ap.add_argument("--contenders", default=",".join(NAMES), help="comma list of bptt.py contenders")
    ap.add_argument("--B", type=int, default=B)
    ap.add_argument("--D", type=int, default=D)
    ap.add_argument("--H", type=int, default=H)
    ap.add_argument("--rounds", type=int, help="rounds at every T (default: 5 at T <= 100 down to 1 at 20,000)")
    ap.add_argument("--repeat", type=int, help="steps per round at every T (default: 3 down to 1)")
    ap.add_argument("--compiled-max-T", type=int, default=COMPILED_MAX_T,
                    help="largest T for the compiled contenders (their tracing is slow at large T)")
    args = ap.parse_args(argv)
    Ts = sorted(int(t) for t in args.T.split(","))
    names = [n for n in args.contenders.split(",") if n]
    print(f"numpy {np.__version__}, python {sys.version.split()[0]}, single thread; LSTM, "
          f"B = {args.B}, D = {args.D}, H = {args.H}", file=out)
    result = measure(Ts, names, args.B, args.D, args.H, args.rounds, args.repeat, args.compiled_max_T, out)
    print_table(result, names, out)
    return result


if __name__ == "__main__":
    main()
