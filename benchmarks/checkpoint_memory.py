"""Memory-efficient BPTT: an LSTM (B=16, H=256) over T=2000 steps, plain vs `unroll(checkpoint_every=k)`.

Reports the tracemalloc peak of one training step (forward, loss, backward) and its time,
single-threaded, and checks the two give the same gradients. Target: peak <= 25 % of plain BPTT at
<= 1.5x the time (sqrt(T) segments cost about one extra forward pass).

The loss (--loss):
    mse    (default) MSE at every step through a Linear head: mse_loss(head(outs), ys)
    every  a loss over every stacked output, no head: mean(outs * outs)  (issue #16; target <= 0.30)
    final  a loss on the final state only: mean(h_T * h_T)
    all    each of the three in turn

    python benchmarks/checkpoint_memory.py [--loss mse|every|final|all] [--T 2000] [--k 45] [--B 16] [--H 256] [--D 32]
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import tapegrad as tg  # noqa: E402

LOSSES = ("mse", "every", "final")


def make_step(cell, head, xs, ys, k, loss_kind="mse"):
    def step():
        for p in (*cell.parameters(), *head.parameters()):
            p.grad = None
        out, (h, _) = tg.nn.unroll(cell, xs, time_major=True, checkpoint_every=k)
        if loss_kind == "mse":
            loss = tg.mse_loss(head(out), ys)
        elif loss_kind == "every":
            loss = tg.mean(out * out)
        else:
            loss = tg.mean(h * h)
        loss.backward()
        return [p.grad for p in cell.parameters()]
    return step


def measure(step):
    """(peak MiB above the start, seconds) of one step."""
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    grads = step()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - start
    tracemalloc.stop()
    return peak / 2**20, seconds, grads


def best_time(step, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", type=int, default=2000)
    ap.add_argument("--k", type=int, default=45, help="steps per checkpointed segment (default 45, about sqrt(T))")
    ap.add_argument("--B", type=int, default=16)
    ap.add_argument("--H", type=int, default=256)
    ap.add_argument("--D", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3, help="timed steps per variant (min is reported)")
    ap.add_argument("--loss", choices=(*LOSSES, "all"), default="mse",
                    help="mse: MSE through a Linear head at every step (default); every: mean(outs * outs) over "
                         "all stacked outputs; final: mean(h_T * h_T); all: each in turn")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    cell = tg.nn.LSTMCell(args.D, args.H, rng=1)
    head = tg.nn.Linear(args.H, args.D, rng=2)
    xs = tg.tensor(rng.standard_normal((args.T, args.B, args.D)).astype(np.float32))
    ys = tg.tensor(rng.standard_normal((args.T, args.B, args.D)).astype(np.float32))
    print(f"LSTM B={args.B} H={args.H} D={args.D} T={args.T}, checkpoint_every={args.k}, single thread")
    for kind in LOSSES if args.loss == "all" else (args.loss,):
        run_one(cell, head, xs, ys, args, kind)


def run_one(cell, head, xs, ys, args, kind):
    plain, ckpt = make_step(cell, head, xs, ys, None, kind), make_step(cell, head, xs, ys, args.k, kind)
    mem_plain, _, g_plain = measure(plain)
    mem_ckpt, _, g_ckpt = measure(ckpt)
    worst = _max_relative_difference(g_plain, g_ckpt)
    accuracy = _max_relative_difference(_float64_gradients(cell, head, xs, ys, kind), g_plain)
    t_plain, t_ckpt = best_time(plain, args.repeat), best_time(ckpt, args.repeat)
    target = 0.30 if kind == "every" else 0.25
    print(f"loss: {DESCRIBED[kind]}")
    print(f"{'':>22}{'peak MiB':>12}{'time s':>10}")
    print(f"{'plain BPTT':>22}{mem_plain:12.1f}{t_plain:10.2f}")
    print(f"{'checkpointed':>22}{mem_ckpt:12.1f}{t_ckpt:10.2f}")
    print(f"memory ratio {mem_ckpt / mem_plain:.3f} (target <= {target:.2f}), time ratio {t_ckpt / t_plain:.2f} "
          f"(target <= 1.5), max relative gradient difference {worst:.1e}")
    print(f"(for scale: plain BPTT in float32 differs from the float64 gradient by {accuracy:.1e}; "
          "the checkpointed sums add the per-step terms in another order)")


DESCRIBED = {"mse": "mse_loss(head(outs), ys), MSE at every step through a Linear head",
             "every": "mean(outs * outs) over every stacked output",
             "final": "mean(h_T * h_T) on the final state"}


def _max_relative_difference(grads_a, grads_b):
    """max over parameters of max|a - b| / max|a|."""
    return max(float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-30)) for a, b in zip(grads_a, grads_b))


def _float64_gradients(cell, head, xs, ys, kind="mse"):
    """The plain BPTT gradients of the same float32 parameters and data, computed in float64."""
    cell64 = tg.nn.LSTMCell(cell.input_size, cell.hidden_size, dtype=np.float64)
    head64 = tg.nn.Linear(head.in_features, head.out_features, dtype=np.float64)
    for p64, p in zip((*cell64.parameters(), *head64.parameters()), (*cell.parameters(), *head.parameters())):
        p64.data[...] = p.data
    step = make_step(cell64, head64, xs.astype(np.float64), ys.astype(np.float64), None, kind)
    return step()


if __name__ == "__main__":
    main()
