/* C kernels: OpenBLAS, loaded at first use (blas_loader.c). */
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

#endif
