/* C kernels: OpenBLAS loaded at first use (blas_loader.c), products over weights packed
 * at load (packed_gemm.c: every float32 nn.Linear), a thread pool with a barrier
 * (parallel.c), row-wise RMSNorm / softmax / SwiGLU (rowwise.c) and products
 * with INT8 weights (int8_linear.c). */
#ifndef CORTEX_KERNELS_H
#define CORTEX_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* ---- OpenBLAS (blas_loader.c) ---- */

/* Load libopenblas.so.0 once (thread-safe). Returns NULL on success, otherwise a
 * static message saying what is missing. */
const char *cxk_blas_load(void);

/* Row-major C = alpha * A[m,k] * W[n,k]^T + beta * C (an nn.Linear product). */
void cxk_blas_sgemm_nt(int m, int n, int k, float alpha, const float *a, int lda,
                      const float *w, int ldw, float beta, float *c, int ldc);
/* Row-major C[m,n] = alpha * op(A) op(B) + beta * C, op = transpose when trans_* != 0
 * (single-threaded, on the calling thread). */
void cxk_blas_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                   const float *b, int ldb, float beta, float *c, int ldc);
/* Row-major y = alpha * W[n,k] x + beta * y. */
void cxk_blas_sgemv_n(int n, int k, float alpha, const float *w, int ldw,
                     const float *x, float beta, float *y);
/* Row-major y = alpha * W[n,k]^T x + beta * y (x has n entries, y has k). */
void cxk_blas_sgemv_t(int n, int k, float alpha, const float *w, int ldw,
                     const float *x, float beta, float *y);

/* Threads Cortex splits work over (parallel.c): n >= 1, at most CX_MAX_THREADS; n <= 0
 * restores the default (cxk_default_threads). OpenBLAS itself always runs
 * single-threaded inside each part. Safe to call at any time: calls already running
 * keep their split. */
#define CX_MAX_THREADS 512
void cxk_blas_set_threads(int n);
int cxk_blas_get_threads(void);
/* CORTEX_NUM_THREADS when set to a positive integer, else the CPUs this process may
 * use: its affinity mask, capped by its cgroup's CPU quota. */
int cxk_default_threads(void);
/* The kernel family OpenBLAS chose, e.g. "SkylakeX"; "" before loading. */
const char *cxk_blas_corename(void);

/* ---- products over packed weights (packed_gemm.c) ---- */

/* Floats needed to pack a weight W [n, k]. */
size_t cxk_packed_size(int n, int k);
/* Pack W [n, k] (row-major, nn.Linear layout) into `packed` (64-byte aligned). */
void cxk_pack_weights(const float *w, int n, int k, float *packed);
/* C[m, n] = A[m, k] · Wᵀ (accumulate = 0) or C += A · Wᵀ (accumulate = 1). */
void cxk_packed_gemm(int m, int n, int k, const float *a, int lda, const float *packed, float *c, int ldc,
                    int accumulate);
/* ISA in use: 2 = AVX-512F, 1 = AVX2+FMA, 0 = portable C. */
int cxk_packed_level(void);
/* Tests: force a level (<= the detected one; -1 = automatic). Returns 0 if refused. */
int cxk_packed_force_level(int level);

/* ---- the thread pool (parallel.c) ---- */

/* A task body: part in [0, parts). */
typedef void (*cxk_task_fn)(void *ctx, int part, int parts);

/* Run `fn` as up to `parts` parts: part 0 on the caller, the others on idle workers of
 * Cortex's pool (or on the caller, for parts no worker started by the time the caller
 * finished its own); returns when every part is done. Parts must not wait for each
 * other (see cxk_parallel_run_together). The parts actually used
 * (passed to fn, and returned) may be fewer: never more than the thread count, the
 * idle workers, or this call's share of the pool while other calls run. Tasks must
 * split work and never change it, so results do not depend on the parts. Nested calls
 * (from inside a part) take only idle workers: they never deadlock or oversubscribe. */
int cxk_parallel_run(cxk_task_fn fn, void *ctx, int parts);

/* cxk_parallel_run for a task whose parts meet at cxk_parallel_barrier: every part runs
 * on its own thread at once. The part count is fixed before any part starts (the
 * workers that started within 200 microseconds, plus the caller). */
int cxk_parallel_run_together(cxk_task_fn fn, void *ctx, int parts);

/* Inside a task run by cxk_parallel_run_together: wait until all its parts reach this
 * point. A no-op when parts == 1. */
void cxk_parallel_barrier(int parts);

/* A barrier for a group of a together-task's parts (zero-initialised; reusable). */
typedef struct {
  uint32_t count, gen, sleepers;
  uint32_t pad[13]; /* a 64-byte line of its own in arrays */
} cxk_barrier;
/* Wait until `parties` threads (the same ones each time) reach this barrier. */
void cxk_barrier_wait(cxk_barrier *b, int parties);

/* Parts for `work` units when each part should have at least `grain` of them, at most
 * `items` (the pieces the work divides into) and the thread count; at least 1. */
int cxk_parallel_parts(long work, long grain, long items);
/* Tests: on != 0 makes cxk_parallel_parts ignore the grain, so even tiny inputs split
 * into as many parts as they have items (the bitwise checks across thread counts). */
void cxk_parallel_force_split(int on);

/* C[m, n] (+)= A[m, k]·Wᵀ over W packed by cxk_pack_weights, split by panels (and by
 * rows when there are more parts than panels) over Cortex's threads when the product
 * is large enough; bitwise the same result for any split (see packed_gemm.c). */
void cxk_parallel_packed_gemm(int m, int n, int k, const float *a, int lda, const float *packed, float *c, int ldc,
                             int accumulate);

/* ---- row-wise kernels (rowwise.c; AVX-512 / AVX2 / baseline chosen at load) ---- */

/* RMSNorm of each of `rows` contiguous rows of n floats, in place: x·rsqrt(mean x² + eps)·w
 * (w may be NULL); rows split over Cortex's threads when there are enough. */
void cxk_rmsnorm(float *p, int rows, int n, const float *w, float eps);
/* x += add (a residual; add may be NULL), then dst = RMSNorm(x)·w, rows split as above. */
void cxk_add_rmsnorm(float *x, const float *add, float *dst, int rows, int n, const float *w, float eps);
/* Softmax of scale·x over the first n floats of each of `rows` rows (row stride ld), in
 * place, on the calling thread. */
void cxk_softmax_rows(float *p, int rows, int n, int ld, float scale);
/* The LSTM cell for hidden units j0 ..< j1 (multiples of 16, or H) of one row: gates = the
 * row's W_hh h in the recurrence's block order (per 16 units: i, f, g, o), xg = its input
 * projection (i[H], f[H], g[H], o[H]) and bias (same order; may be NULL); updates c,
 * writes the new h to h and y. reset: h and c were zero before this step. On the
 * calling thread. */
void cxk_lstm_cell(const float *gates, const float *xg, const float *bias, int H, int j0, int j1, float *c, float *h,
                  float *y, int reset);
/* g = silu(g)·u over n floats (SwiGLU's gate), split over Cortex's threads when large. */
void cxk_silu_mul(float *g, const float *u, long n);

/* OpenMythos's recurrent loop, per row of n floats (rows split over the threads), in the
 * reference's order of operations: the loop input dst = RMSNorm((h + emb on the first l
 * channels) + e)·w; the LTI injection h = (a ⊙ h + b ⊙ e) + o; and out += coef[r]·h
 * (ACT's weighted sum; coef NULL: out += h, a residual). */
void cxk_mythos_loop_input(float *dst, const float *h, const float *e, const float *emb, int l, int rows, int n,
                          const float *w, float eps);
void cxk_mythos_inject(float *h, const float *e, const float *o, const float *a, const float *b, int rows, int n);
void cxk_rows_axpy(float *out, const float *coef, const float *h, int rows, int n);

/* ---- INT8 weights (int8_linear.c) ---- */

/* C[m, n] = A[m, k] · (diag(scales) Q)ᵀ + beta·C with Q [n, k] int8 row-major (per output
 * channel scales); the fp32 weight is never formed (tiles of 1 MB at most). */
void cxk_int8_linear(int m, int n, int k, const float *a, int lda, const int8_t *q, const float *scales, float *c,
                    int ldc, float beta);

#endif
