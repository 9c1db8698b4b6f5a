"""Throughput of the matrix products one BPTT step runs, per gate (hand-written) and fused (built-in cells).

The built-in cells fuse the gate matmuls and project all steps' inputs with one matmul; this pays off
where small products run below the BLAS's peak. This script measures, single-threaded, the GMAC/s
of the products of the large LSTM size (B=64, D=256, H=512, T=100) both ways.

    python benchmarks/gemm_shapes.py [--B 64] [--D 256] [--H 512] [--T 100] [--gates 4]
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import timeit  # noqa: E402

import numpy as np  # noqa: E402


def gmacs(a, b, number):
    """(ms per product, GMAC/s) of a @ b, best of 5 repeats."""
    seconds = min(timeit.repeat(lambda: a @ b, number=number, repeat=5)) / number
    return seconds * 1e3, a.shape[0] * a.shape[1] * b.shape[1] / seconds / 1e9


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, default in (("B", 64), ("D", 256), ("H", 512), ("T", 100), ("gates", 4)):
        ap.add_argument(f"--{name}", type=int, default=default)
    args = ap.parse_args(argv)
    B, D, H, T, G = args.B, args.D, args.H, args.T, args.gates
    rng = np.random.default_rng(0)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    x, h, g, W, W_all = r(B, D), r(B, H), r(B, H), r(H, H), r(H, G * H)
    xs, gs, U_all = r(T * B, D), r(T * B, G * H), r(D, G * H)
    rows = [
        ("per gate", "x_t U_k", x, r(D, H), 50), ("per gate", "h_t W_k", h, W, 50),
        ("per gate", "h_t^T da_k (dW_k)", h.T, g, 50), ("per gate", "da_k W_k^T (dh)", g, W.T, 50),
        ("fused", "x U, all steps", xs, U_all, 2), ("fused", "h_t W_h, all gates", h, W_all, 20),
        ("fused", "h_t^T da (dW_h)", h.T, r(B, G * H), 20), ("fused", "x^T da, all steps (dW_x)", xs.T, gs, 2),
        ("fused", "(W_h da^T)^T (dh)", W_all, r(B, G * H).T, 20),
    ]
    print(f"single-threaded float32 products of one LSTM-size step, B={B} D={D} H={H} T={T} gates={G}")
    print(f"{'layout':>9}  {'product':<26} {'shape':<24} {'ms':>8} {'GMAC/s':>7}")
    for layout, name, a, b, number in rows:
        ms, rate = gmacs(a, b, number)
        print(f"{layout:>9}  {name:<26} {str(a.shape) + '@' + str(b.shape):<24} {ms:8.3f} {rate:7.1f}")


if __name__ == "__main__":
    main()
