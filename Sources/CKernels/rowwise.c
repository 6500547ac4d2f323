/* Row-wise kernels of whole sequences: RMSNorm, softmax, SwiGLU's silu(g)·u.
 *
 * Written once as plain loops and compiled three times (target_clones: AVX-512,
 * Haswell's AVX2+FMA, baseline x86-64); the dynamic loader picks the clone for the
 * CPU, so the library still runs on any x86-64. The Swift module itself is built for
 * the baseline (SSE2), where its 8-lane SIMD code runs as pairs of 4-lane
 * instructions; these loops run 16 lanes wide on AVX-512.
 *
 * Reductions keep 16 partial sums (element i goes to sum i % 16) combined in a fixed
 * order, so a row's result does not depend on the ISA's vector width beyond FMA
 * contraction (~1 ulp). exp is the Cephes polynomial of Kernels.exp (Swift). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cortex_kernels.h"

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__)) && defined(__ELF__)
#define CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define CLONES
#endif

#define LANES 16

/* exp(x) for float32: x = n·ln2 + r, a degree-6 polynomial in r, 2^n through the
 * exponent bits. Clamped to [-87.3, 88.3]; NaN stays NaN. Branch-free, so the loops
 * that call it vectorise. */
static inline float cx_exp(float x) {
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

/* Sum of 16 partial sums, pairwise in a fixed order. */
static inline float fold16(const float *acc) {
  float h[8];
  for (int l = 0; l < 8; l++) h[l] = acc[l] + acc[l + 8];
  for (int l = 0; l < 4; l++) h[l] += h[l + 4];
  return (h[0] + h[2]) + (h[1] + h[3]);
}

CLONES static void rmsnorm_rows(float *p, int rows, int n, const float *w, float eps) {
  for (int r = 0; r < rows; r++) {
    float *row = p + (size_t)r * n;
    float acc[LANES] = {0};
    int i = 0;
    for (; i + LANES <= n; i += LANES)
      for (int l = 0; l < LANES; l++) acc[l] += row[i + l] * row[i + l];
    for (int l = 0; i + l < n; l++) acc[l] += row[i + l] * row[i + l];
    const float inv = 1.0f / sqrtf(fold16(acc) / (float)n + eps);
    if (w != NULL)
      for (int j = 0; j < n; j++) row[j] = row[j] * inv * w[j];
    else
      for (int j = 0; j < n; j++) row[j] = row[j] * inv;
  }
}

CLONES void cx_softmax_rows(float *p, int rows, int n, int ld, float scale) {
  if (n <= 0) return;
  for (int r = 0; r < rows; r++) {
    float *row = p + (size_t)r * ld;
    /* Max in 16 lanes; NaN never wins a comparison (as torch's max skips nothing,
     * a NaN row stays NaN through the sum below). */
    float mx[LANES];
    for (int l = 0; l < LANES; l++) mx[l] = -INFINITY;
    int i = 0;
    for (; i + LANES <= n; i += LANES)
      for (int l = 0; l < LANES; l++) mx[l] = row[i + l] > mx[l] ? row[i + l] : mx[l];
    for (int l = 0; i + l < n; l++) mx[l] = row[i + l] > mx[l] ? row[i + l] : mx[l];
    float m = mx[0];
    for (int l = 1; l < LANES; l++) m = mx[l] > m ? mx[l] : m;
    float acc[LANES] = {0};
    i = 0;
    for (; i + LANES <= n; i += LANES)
      for (int l = 0; l < LANES; l++) {
        const float e = cx_exp((row[i + l] - m) * scale);
        row[i + l] = e;
        acc[l] += e;
      }
    for (int l = 0; i + l < n; l++) {
      const float e = cx_exp((row[i + l] - m) * scale);
      row[i + l] = e;
      acc[l] += e;
    }
    const float inv = 1.0f / fold16(acc);
    for (int j = 0; j < n; j++) row[j] *= inv;
  }
}

CLONES static void silu_mul(float *g, const float *u, long n) {
  for (long i = 0; i < n; i++) {
    const float x = g[i];
    g[i] = x * (1.0f / (1.0f + cx_exp(-x))) * u[i];
  }
}

/* ---- split over Cortex's threads (rows, or equal slices) ---- */

typedef struct {
  float *p;
  const float *w;
  int rows, n;
  float eps;
} norm_job;

static void norm_part(void *ctx, int part, int parts) {
  const norm_job *j = (const norm_job *)ctx;
  const int r0 = (int)((long)j->rows * part / parts), r1 = (int)((long)j->rows * (part + 1) / parts);
  if (r1 > r0) rmsnorm_rows(j->p + (size_t)r0 * j->n, r1 - r0, j->n, j->w, j->eps);
}

/* Two parts from this many elements on (a few microseconds of work each). */
#define SPLIT_ELEMENTS 16384

void cx_rmsnorm(float *p, int rows, int n, const float *w, float eps) {
  if (rows <= 0 || n <= 0) return;
  norm_job j = {p, w, rows, n, eps};
  cx_parallel_run(norm_part, &j, (long)rows * n >= SPLIT_ELEMENTS && rows >= 2 ? cx_blas_get_threads() : 1);
}

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
  if (i1 > i0) silu_mul(j->g + i0, j->u + i0, i1 - i0);
}

void cx_silu_mul(float *g, const float *u, long n) {
  if (n <= 0) return;
  silu_job j = {g, u, n};
  cx_parallel_run(silu_part, &j, n >= SPLIT_ELEMENTS ? cx_blas_get_threads() : 1);
}
