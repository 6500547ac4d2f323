#!/usr/bin/env python3
"""Benchmark Cortex's matrix products: its packed kernel against OpenBLAS on the same split.

    CORTEX_LIBRARY=<libcortex.so> python3 scripts/bench_kernels.py [--threads 2]

For nn.Linear shapes (rows x outputs x inputs) of the OpenMythos benchmark model and a
few larger ones: `cx_parallel_linear` (OpenBLAS SGEMM, output columns split over
Cortex's threads: the path every nn.Linear took before weights were packed) against
`cx_parallel_packed_gemm` (weights packed once, Cortex's kernel, panels split over the
threads), GFLOP/s, best of 5 timings. Also the row-wise kernels on one thread. Needs numpy and
the cortex_swift package (or CORTEX_LIBRARY); not a test.
"""
import argparse
import ctypes
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))

SHAPES = [(128, 128, 256), (128, 384, 128), (128, 80, 256), (128, 512, 64), (128, 256, 256), (32, 128, 256),
          (32, 256, 128), (128, 4096, 256), (1, 256, 256), (1, 4096, 256), (8, 256, 256), (64, 1024, 1024),
          (512, 4096, 1024)]


def best(fn, reps):
    fn()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - t) / reps)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from cortex_swift import _lib  # finds libcortex.so (CORTEX_LIBRARY or the package's copy)

    lib = ctypes.CDLL(_lib._library_path())  # the kernels' C symbols, not the cx_ ABI
    P, I, F = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    lib.cx_blas_load.restype = ctypes.c_char_p
    err = lib.cx_blas_load()
    if err:
        sys.exit(err.decode())
    lib.cx_blas_set_threads(args.threads)
    lib.cx_parallel_linear.argtypes = [I, I, I, P, I, P, P, I, F]
    lib.cx_parallel_packed_gemm.argtypes = [I, I, I, P, I, P, P, I, I]
    lib.cx_pack_weights.argtypes = [P, I, I, P]
    lib.cx_packed_size.restype = ctypes.c_size_t
    lib.cx_packed_size.argtypes = [I, I]
    lib.cx_rmsnorm.argtypes = [P, I, I, P, F]
    lib.cx_softmax_rows.argtypes = [P, I, I, I, F]
    print(f"{args.threads} threads, packed kernel ISA level {lib.cx_packed_level()} (2 = AVX-512, 1 = AVX2)\n")
    print("| rows × outputs × inputs | OpenBLAS, split (GFLOP/s) | packed (GFLOP/s) | speed-up |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    for m, n, k in SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((n, k), dtype=np.float32)
        c = np.zeros((m, n), np.float32)
        size = lib.cx_packed_size(n, k)
        raw = np.zeros(size + 16, np.float32)
        off = (-(raw.ctypes.data % 64) // 4) % 16  # the kernel reads 64-byte aligned panels
        packed = raw[off:off + size]
        lib.cx_pack_weights(w.ctypes.data, n, k, packed.ctypes.data)
        reps = max(20, int(2e8 / (m * n * k)))
        t_blas = best(lambda: lib.cx_parallel_linear(m, n, k, a.ctypes.data, k, w.ctypes.data, c.ctypes.data, n, 0.0), reps)
        t_pack = best(lambda: lib.cx_parallel_packed_gemm(m, n, k, a.ctypes.data, k, packed.ctypes.data, c.ctypes.data,
                                                          n, 0), reps)
        g = 2 * m * n * k / 1e9
        print(f"| {m} × {n} × {k} | {g / t_blas:.1f} | {g / t_pack:.1f} | {t_blas / t_pack:.2f}× |")
    lib.cx_blas_set_threads(1)
    x = rng.standard_normal((1024, 256), dtype=np.float32)
    ones = np.ones(256, np.float32)
    s = rng.standard_normal((1024, 128), dtype=np.float32)
    t_norm = best(lambda: lib.cx_rmsnorm(x.ctypes.data, 1024, 256, ones.ctypes.data, 1e-6), 200)
    t_soft = best(lambda: lib.cx_softmax_rows(s.ctypes.data, 1024, 128, 128, 0.1), 200)
    print(f"\none thread: RMSNorm 1024 × 256 {1e6 * t_norm:.1f} µs, softmax 1024 × 128 {1e6 * t_soft:.1f} µs")


if __name__ == "__main__":
    main()
