#!/usr/bin/env python3
"""Benchmark Cortex's matrix products: its packed kernel against OpenBLAS on the same split.

    python3 scripts/bench_kernels.py [--threads 2]

For nn.Linear shapes (rows x outputs x inputs) of the OpenMythos benchmark model and a
few larger ones: OpenBLAS SGEMM (its own threads) against `cxk_parallel_packed_gemm`
(weights packed once, Cortex's kernel, panels split over Cortex's threads), GFLOP/s,
best of 5 timings. Also the row-wise kernels on one thread. libcortex.so exports only
the C ABI, so the kernels are compiled here into a private library (needs clang, numpy and
OpenBLAS); not a test.
"""
import argparse
import ctypes
import glob
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
    kernels = os.path.join(tempfile.mkdtemp(), "libcxk.so")
    subprocess.run(["clang", "-O2", "-shared", "-fPIC", "-I", os.path.join(ROOT, "Sources/CKernels/include"),
                    *sorted(glob.glob(os.path.join(ROOT, "Sources/CKernels/*.c"))), "-o", kernels, "-ldl", "-lpthread"],
                   check=True)
    lib = ctypes.CDLL(kernels)
    P, I, F = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    lib.cxk_blas_load.restype = ctypes.c_char_p
    err = lib.cxk_blas_load()
    if err:
        sys.exit(err.decode())
    lib.cxk_blas_set_threads(args.threads)
    lib.cxk_blas_sgemm.argtypes = [I, I, I, I, I, F, P, I, P, I, F, P, I]
    lib.cxk_parallel_packed_gemm.argtypes = [I, I, I, P, I, P, P, I, I]
    lib.cxk_pack_weights.argtypes = [P, I, I, P]
    lib.cxk_packed_size.restype = ctypes.c_size_t
    lib.cxk_packed_size.argtypes = [I, I]
    lib.cxk_rmsnorm.argtypes = [P, I, I, P, F]
    lib.cxk_softmax_rows.argtypes = [P, I, I, I, F]
    print(f"{args.threads} threads, packed kernel ISA level {lib.cxk_packed_level()} (2 = AVX-512, 1 = AVX2)\n")
    print("| rows × outputs × inputs | OpenBLAS SGEMM (GFLOP/s) | packed (GFLOP/s) | speed-up |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    for m, n, k in SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((n, k), dtype=np.float32)
        c = np.zeros((m, n), np.float32)
        size = lib.cxk_packed_size(n, k)
        raw = np.zeros(size + 16, np.float32)
        off = (-(raw.ctypes.data % 64) // 4) % 16  # the kernel reads 64-byte aligned panels
        packed = raw[off:off + size]
        lib.cxk_pack_weights(w.ctypes.data, n, k, packed.ctypes.data)
        reps = max(20, int(2e8 / (m * n * k)))
        # c = a · wᵀ, as nn.Linear computes it.
        t_blas = best(lambda: lib.cxk_blas_sgemm(0, 1, m, n, k, 1.0, a.ctypes.data, k, w.ctypes.data, k, 0.0,
                                                 c.ctypes.data, n), reps)
        t_pack = best(lambda: lib.cxk_parallel_packed_gemm(m, n, k, a.ctypes.data, k, packed.ctypes.data, c.ctypes.data,
                                                          n, 0), reps)
        g = 2 * m * n * k / 1e9
        print(f"| {m} × {n} × {k} | {g / t_blas:.1f} | {g / t_pack:.1f} | {t_blas / t_pack:.2f}× |")
    lib.cxk_blas_set_threads(1)
    x = rng.standard_normal((1024, 256), dtype=np.float32)
    ones = np.ones(256, np.float32)
    s = rng.standard_normal((1024, 128), dtype=np.float32)
    t_norm = best(lambda: lib.cxk_rmsnorm(x.ctypes.data, 1024, 256, ones.ctypes.data, 1e-6), 200)
    t_soft = best(lambda: lib.cxk_softmax_rows(s.ctypes.data, 1024, 128, 128, 0.1), 200)
    print(f"\none thread: RMSNorm 1024 × 256 {1e6 * t_norm:.1f} µs, softmax 1024 × 128 {1e6 * t_soft:.1f} µs")


if __name__ == "__main__":
    main()
