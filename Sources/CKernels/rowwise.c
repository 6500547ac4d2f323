/* Row-wise kernels of whole sequences: RMSNorm, softmax, SwiGLU's silu(g)·u and the
 * OpenMythos loop's elementwise steps.
 *
 * Written once as plain loops (rowwise_body.h) and compiled three times (AVX-512F,
 * AVX2+FMA, baseline x86-64); each call takes the copy for the level packed_gemm.c
 * detected (cxk_packed_level), so the library still runs on any x86-64. Not ifunc /
 * target_clones: those resolvers run before the sanitizers' runtimes start and crash
 * TSan and ASan builds. The Swift module itself is built for the baseline (SSE2),
 * where its 8-lane SIMD code runs as pairs of 4-lane instructions; these loops run 16
 * lanes wide on AVX-512.
 *
 * Reductions keep 16 partial sums (element i goes to sum i % 16) combined in a fixed
 * order, so a row's result does not depend on the ISA's vector width beyond FMA
 * contraction (~1 ulp). exp is the Cephes polynomial of Kernels.exp (Swift). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cortex_kernels.h"

#define LANES 16

/* 16 floats as one value: a zmm register on AVX-512, two ymm on AVX2, four xmm on the
 * baseline. Written with vector types rather than left to the auto-vectoriser, which
 * kept partial sums in memory and unrolled past short rows (32-float heads). */
typedef float v16 __attribute__((vector_size(64)));

/* Helpers are macros: a function taking or returning a 64-byte vector has a different
 * ABI per ISA, which the compiler refuses outside AVX-512 code. */
#define LOAD16(p) __extension__({ v16 v_; memcpy(&v_, (p), sizeof v_); v_; })
#define STORE16(p, v) __extension__({ v16 s_ = (v); memcpy((p), &s_, sizeof s_); })
/* The first n < 16 floats at p, zero-padded. */
#define LOAD_TAIL(p, n) __extension__({ v16 t_ = {0}; for (int l_ = 0; l_ < (n); l_++) t_[l_] = (p)[l_]; t_; })
#define SPLAT(x) ((v16){0} + (x))
/* Sum of the 16 lanes, pairwise in a fixed order. */
#define HSUM(v) __extension__({                                                               \
  typedef float v8_ __attribute__((vector_size(32)));                                         \
  typedef float v4_ __attribute__((vector_size(16)));                                         \
  const v16 w_ = (v);                                                                         \
  const v8_ h_ = __builtin_shufflevector(w_, w_, 0, 1, 2, 3, 4, 5, 6, 7) +                    \
                 __builtin_shufflevector(w_, w_, 8, 9, 10, 11, 12, 13, 14, 15);               \
  const v4_ q_ = __builtin_shufflevector(h_, h_, 0, 1, 2, 3) + __builtin_shufflevector(h_, h_, 4, 5, 6, 7); \
  (q_[0] + q_[2]) + (q_[1] + q_[3]);                                                          \
})

/* Σ a[i]·b[i] over k floats, in 16 partial sums (element i in sum i % 16). */
__attribute__((always_inline)) static inline float dot(const float *a, const float *b, int k) {
  v16 acc = {0};
  int i = 0;
  for (; i + LANES <= k; i += LANES) acc += LOAD16(a + i) * LOAD16(b + i);
  if (i < k) acc += LOAD_TAIL(a + i, k - i) * LOAD_TAIL(b + i, k - i);
  return HSUM(acc);
}

/* exp(x) for float32: x = n·ln2 + r, a degree-6 polynomial in r, 2^n through the
 * exponent bits. Clamped to [-87.3, 88.3]; NaN stays NaN. Branch-free, so the loops
 * that call it vectorise. */
__attribute__((always_inline)) static inline float cxk_exp(float x) {
  const float magic = 12582912.0f; /* 1.5·2^23: rounds x·log2(e) in the mantissa */
  float v = x > 88.3f ? 88.3f : x;
  v = v < -87.3f ? -87.3f : v;
  const float t = v * 1.44269504f + magic;
  const float n = t - magic;
  float r = v - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const float z = r * r;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * z + r + 1.0f;
  int32_t bits;
  memcpy(&bits, &t, sizeof bits);
  bits = (int32_t)((uint32_t)(bits - 0x4B400000 + 127) << 23);
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  const float e = y * scale;
  return x != x ? x : e;
}

/* tanh(x) as Kernels.tanh (Swift): the Cephes odd polynomial for |x| < 0.625 (keeps
 * relative accuracy near 0), 1 - 2/(e^{2|x|} + 1) elsewhere; NaN stays NaN. */
__attribute__((always_inline)) static inline float cxk_tanh(float x) {
  const float a = x < 0 ? -x : x;
  const float large = 1.0f - 2.0f / (cxk_exp(2.0f * a) + 1.0f);
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * x + x;
  const float r = a < 0.625f ? small : (x < 0 ? -large : large);
  return x != x ? x : r;
}

/* The arguments of the row-split kernels: RMSNorm and the OpenMythos loop's steps (see
 * loop_rows in rowwise_body.h). */
typedef struct {
  int kind, rows, n, l;
  float *dst, *h;
  const float *e, *o, *emb, *w, *a, *b, *coef;
  float eps;
} loop_job;

/* ---- one copy of the kernels per ISA, and the dispatch ---- */

#define CX_ISA_FN(name) name##_base
#include "rowwise_body.h"
#undef CX_ISA_FN

#if defined(__x86_64__) && defined(__clang__)
#define CX_HAVE_ISA_COPIES 1
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#define CX_ISA_FN(name) name##_avx2
#include "rowwise_body.h"
#undef CX_ISA_FN
#pragma clang attribute pop

#pragma clang attribute push(__attribute__((target("avx512f"))), apply_to = function)
#define CX_ISA_FN(name) name##_avx512
#include "rowwise_body.h"
#undef CX_ISA_FN
#pragma clang attribute pop
#endif

/* The level cxk_packed_level() reports (tests can force a lower one). */
#ifdef CX_HAVE_ISA_COPIES
#define DISPATCH(name, ...)                               \
  do {                                                    \
    switch (cxk_packed_level()) {                          \
      case 2: name##_avx512(__VA_ARGS__); break;          \
      case 1: name##_avx2(__VA_ARGS__); break;            \
      default: name##_base(__VA_ARGS__); break;           \
    }                                                     \
  } while (0)
#else
#define DISPATCH(name, ...) name##_base(__VA_ARGS__)
#endif

void cxk_softmax_rows(float *p, int rows, int n, int ld, float scale) { DISPATCH(softmax_rows, p, rows, n, ld, scale); }

void cxk_lstm_cell(const float *gates, const float *xg, const float *bias, int H, int j0, int j1, float *c, float *h,
                  float *y, int reset) {
  DISPATCH(lstm_cell, gates, xg, bias, H, j0, j1, c, h, y, reset);
}

/* ---- split over Cortex's threads (rows, or equal slices) ---- */

/* A part should have at least this many elements (a few microseconds of work). */
#define SPLIT_ELEMENTS 8192L

typedef struct {
  float *g;
  const float *u;
  long n;
} silu_job;

static void silu_part(void *ctx, int part, int parts) {
  const silu_job *j = (const silu_job *)ctx;
  /* Slices of whole 16-float blocks, so a thread's stores never share a cache line. */
  const long blocks = (j->n + 15) / 16;
  const long i0 = blocks * part / parts * 16, i1e = blocks * (part + 1) / parts * 16;
  const long i1 = i1e < j->n ? i1e : j->n;
  if (i1 > i0) DISPATCH(silu_mul, j->g + i0, j->u + i0, i1 - i0);
}

void cxk_silu_mul(float *g, const float *u, long n) {
  if (n <= 0) return;
  silu_job j = {g, u, n};
  cxk_parallel_run(silu_part, &j, cxk_parallel_parts(n, SPLIT_ELEMENTS, (n + 15) / 16));
}

/* ---- row kernels split by rows: RMSNorm and the OpenMythos loop's steps ---- */

/* Per row r of n floats, rows split over the threads:
 *   kind 0: dst = RMSNorm((h + emb on the first l channels) + e)·w      (the loop input)
 *   kind 1: h = (a ⊙ h + b ⊙ e) + o                                    (LTI injection)
 *   kind 2: out += coef[r] · h, or out += h without coef                (ACT's sum; a residual)
 *   kind 3: h += o when o is given, then dst = RMSNorm(h)·w             (cxk_add_rmsnorm)
 * in the reference's order of operations. */

static void loop_part(void *ctx, int part, int parts) {
  const loop_job *j = (const loop_job *)ctx;
  const int r0 = (int)((long)j->rows * part / parts), r1 = (int)((long)j->rows * (part + 1) / parts);
  if (r1 > r0) DISPATCH(loop_rows, j, r0, r1);
}

static void run_loop_job(loop_job *j) {
  if (j->rows <= 0 || j->n <= 0) return;
  cxk_parallel_run(loop_part, j, cxk_parallel_parts((long)j->rows * j->n, SPLIT_ELEMENTS, j->rows));
}

void cxk_mythos_loop_input(float *dst, const float *h, const float *e, const float *emb, int l, int rows, int n,
                          const float *w, float eps) {
  loop_job j = {0, rows, n, l, dst, (float *)h, e, NULL, emb, w, NULL, NULL, NULL, eps};
  run_loop_job(&j);
}

void cxk_mythos_inject(float *h, const float *e, const float *o, const float *a, const float *b, int rows, int n) {
  loop_job j = {1, rows, n, 0, NULL, h, e, o, NULL, NULL, a, b, NULL, 0.0f};
  run_loop_job(&j);
}

void cxk_rows_axpy(float *out, const float *coef, const float *h, int rows, int n) {
  loop_job j = {2, rows, n, 0, out, (float *)h, h, NULL, NULL, NULL, NULL, NULL, coef, 0.0f};
  run_loop_job(&j);
}

void cxk_add_rmsnorm(float *x, const float *add, float *dst, int rows, int n, const float *w, float eps) {
  loop_job j = {3, rows, n, 0, dst, x, NULL, add, NULL, w, NULL, NULL, NULL, eps};
  run_loop_job(&j);
}

void cxk_rmsnorm(float *p, int rows, int n, const float *w, float eps) { cxk_add_rmsnorm(p, NULL, p, rows, n, w, eps); }
