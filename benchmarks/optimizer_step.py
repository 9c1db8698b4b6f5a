"""What an Adam step costs beside a compiled training step (issue 16, item 5: fold the optimizer into the replay?).

For bptt.py's compiled fast steps (the cell from ops, and tapegrad.nn's) at each size, times in one run:
the training step itself; `Adam.step()` as it runs (all parameters as one flat array when they are small,
see tapegrad.optim.Optimizer); `Adam.step()` one parameter at a time (`flat_max_mean_size = 0`); and the
per-parameter update written out straight-line with its buffers bound once, which is what folding
`opt.step()` into the generated program would run (no Python bookkeeping, the same numpy calls per
parameter). Same timing method as bptt.py (min over rounds of the median of `repeat` calls, single thread).

    python benchmarks/optimizer_step.py [--sizes tiny,small] [--cells lstm]
"""
import bptt  # noqa: I001 -- first: it sets the single-thread variables before numpy is imported

import argparse
import math

import numpy as np

import tapegrad as tg

CONTENDERS = ("tapegrad-compiled-fast", "tapegrad-nn-compiled-fast")


def straight_line_adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    """Adam (as tapegrad.optim.Adam, no weight decay) written out per parameter on buffers bound once."""
    b1, b2 = betas
    bound = [(p, np.zeros_like(p.data), np.zeros_like(p.data), np.empty_like(p.data)) for p in params]
    count = [0]

    def step():
        count[0] += 1
        t = count[0]
        root, scale = math.sqrt(1 - b2 ** t), lr / (1 - b1 ** t)
        for q, m, v, tmp in bound:
            g, p = q.grad, q.data
            m -= g
            m *= b1
            m += g
            np.multiply(g, g, out=tmp)
            tmp *= 1 - b2
            v *= b2
            v += tmp
            np.sqrt(v, out=tmp)
            tmp /= root
            tmp += eps
            np.divide(m, tmp, out=tmp)
            tmp *= scale
            p -= tmp
    return step


def measure(size, cell, name, rounds=5, repeat=5):
    """{what: ms} for one contender: its step, and the three Adam steps over its parameters."""
    step = bptt.make_steps([name], cell, size)[name]
    if step is None:
        return None
    params = step.params
    flat, alone = tg.optim.Adam(params), tg.optim.Adam(params)
    alone.flat_max_mean_size = 0
    calls = {"step": step, "Adam": flat.step, "Adam per parameter": alone.step,
             "straight-line (folded)": straight_line_adam(params)}
    return bptt.time_steps(calls, rounds, repeat), len(params), sum(p.size for p in params)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="tiny,small")
    ap.add_argument("--cells", default="lstm")
    args = ap.parse_args(argv)
    print(f"numpy {np.__version__}, single thread; ms, and in brackets the share of step + that Adam step")
    cols = ("step", "Adam", "Adam per parameter", "straight-line (folded)")
    print(f"{'size':>6} {'cell':>6} {'contender':>26} {'params':>14} " + " ".join(f"{c:>26}" for c in cols))
    for size in args.sizes.split(","):
        for cell in args.cells.split(","):
            for name in CONTENDERS:
                got = measure(size, cell, name)
                if got is None:
                    continue
                ms, n, values = got
                shares = [""] + [f"({ms[c] / (ms['step'] + ms[c]):.0%})" for c in cols[1:]]
                print(f"{size:>6} {cell:>6} {name:>26} {f'{n} / {values:,}':>14} "
                      + " ".join(f"{f'{ms[c]:.4f} {s}':>26}" for c, s in zip(cols, shares)))


if __name__ == "__main__":
    main()
