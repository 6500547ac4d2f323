/* C kernels: OpenBLAS loaded at first use (blas_loader.c) and packed small-M products (packed_gemm.c). */
#ifndef CORTEX_KERNELS_H
#define CORTEX_KERNELS_H

#include <stddef.h>

/* Load libopenblas.so.0 once (thread-safe). Returns NULL on success, otherwise a
 * static message saying what is missing. */
const char *cx_blas_load(void);

/* Row-major C = alpha * A[m,k] * W[n,k]^T + beta * C (an nn.Linear product). */
void cx_blas_sgemm_nt(int m, int n, int k, float alpha, const float *a, int lda,
                      const float *w, int ldw, float beta, float *c, int ldc);
/* Row-major y = alpha * W[n,k] x + beta * y. */
void cx_blas_sgemv_n(int n, int k, float alpha, const float *w, int ldw,
                     const float *x, float beta, float *y);

void cx_blas_set_threads(int n);
int cx_blas_get_threads(void);
/* The kernel family OpenBLAS chose, e.g. "SkylakeX"; "" before loading. */
const char *cx_blas_corename(void);


/* ---- packed small-M products (packed_gemm.c) ---- */

/* Floats needed to pack a weight W [n, k]. */
size_t cx_packed_size(int n, int k);
/* Pack W [n, k] (row-major, nn.Linear layout) into `packed` (64-byte aligned). */
void cx_pack_weights(const float *w, int n, int k, float *packed);
/* C[m, n] = A[m, k] · Wᵀ (accumulate = 0) or C += A · Wᵀ (accumulate = 1). */
void cx_packed_gemm(int m, int n, int k, const float *a, int lda, const float *packed, float *c, int ldc,
                    int accumulate);
/* ISA in use: 2 = AVX-512F, 1 = AVX2+FMA, 0 = portable C. */
int cx_packed_level(void);
/* Tests: force a level (<= the detected one; -1 = automatic). Returns 0 if refused. */
int cx_packed_force_level(int level);

#endif
