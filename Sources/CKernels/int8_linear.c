/* Products with INT8 weights: C[m, n] = A[m, k] · (diag(s) Q)ᵀ + beta·C, Q [n, k] int8
 * row-major (an nn.Linear weight quantised per output channel, s its scales). The fp32
 * weight is never materialised: a few rows (m <= 4, the step mode) read Q directly
 * (int8 -> float inside the dot product: a quarter of the fp32 memory traffic); more
 * rows dequantise tiles of weight rows (1 MB at most) into a per-thread scratch and
 * multiply each through SGEMM. Whole tiles of output columns are split over Cortex's threads
 * (cxk_parallel_run). */
#include <stdint.h>
#include <stdlib.h>

#include "cortex_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define TILE_FLOATS (1 << 18) /* 1 MB of dequantised weight rows per thread at most */
#define FEW_ROWS 4

/* ---- dot products of up to 4 float rows with one int8 row ---- */

static void dots_portable(int m, int k, const float *a, int lda, const int8_t *q, float *acc) {
  for (int r = 0; r < m; ++r) {
    const float *x = a + (size_t)r * lda;
    float s = 0;
    for (int i = 0; i < k; ++i) s += x[i] * (float)q[i];
    acc[r] = s;
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static void dots_avx2(int m, int k, const float *a, int lda, const int8_t *q,
                                                          float *acc) {
  __m256 s[FEW_ROWS][2];
  for (int r = 0; r < m; ++r) s[r][0] = s[r][1] = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= k; i += 16) {
    const __m128i b = _mm_loadu_si128((const __m128i *)(q + i));
    const __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
    const __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)));
    for (int r = 0; r < m; ++r) {
      const float *x = a + (size_t)r * lda + i;
      s[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(x), w0, s[r][0]);
      s[r][1] = _mm256_fmadd_ps(_mm256_loadu_ps(x + 8), w1, s[r][1]);
    }
  }
  for (int r = 0; r < m; ++r) {
    float t = hsum256(_mm256_add_ps(s[r][0], s[r][1]));
    const float *x = a + (size_t)r * lda;
    for (int j = i; j < k; ++j) t += x[j] * (float)q[j];
    acc[r] = t;
  }
}

/* AVX-512: 16 weights per conversion, two accumulators per row. */
__attribute__((target("avx512f"))) static void dots_avx512(int m, int k, const float *a, int lda, const int8_t *q,
                                                           float *acc) {
  __m512 s[FEW_ROWS][2];
  for (int r = 0; r < m; ++r) s[r][0] = s[r][1] = _mm512_setzero_ps();
  int i = 0;
  for (; i + 32 <= k; i += 32) {
    const __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + i))));
    const __m512 w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + i + 16))));
    for (int r = 0; r < m; ++r) {
      const float *x = a + (size_t)r * lda + i;
      s[r][0] = _mm512_fmadd_ps(_mm512_loadu_ps(x), w0, s[r][0]);
      s[r][1] = _mm512_fmadd_ps(_mm512_loadu_ps(x + 16), w1, s[r][1]);
    }
  }
  for (int r = 0; r < m; ++r) {
    float t = _mm512_reduce_add_ps(_mm512_add_ps(s[r][0], s[r][1]));
    const float *x = a + (size_t)r * lda;
    for (int j = i; j < k; ++j) t += x[j] * (float)q[j];
    acc[r] = t;
  }
}

/* 2: AVX-512F, 1: AVX2+FMA, 0: portable C. */
static int int8_level(void) {
  static int level = -1;
  if (level < 0)
    level = __builtin_cpu_supports("avx512f") ? 2 : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
  return level;
}
#endif

static void dots(int m, int k, const float *a, int lda, const int8_t *q, float *acc) {
#if defined(__x86_64__)
  switch (int8_level()) {
  case 2: dots_avx512(m, k, a, lda, q, acc); return;
  case 1: dots_avx2(m, k, a, lda, q, acc); return;
  default: break;
  }
#endif
  dots_portable(m, k, a, lda, q, acc);
}

/* ---- the split product ---- */

typedef struct {
  int m, n, k, lda, ldc;
  const float *a, *s;
  const int8_t *q;
  float *c;
  float beta;
} int8_job;

/* A per-thread tile buffer, grown once (no allocation per call after warm-up). */
static __thread float *tile_buf;
static __thread size_t tile_cap;

static float *tile_scratch(size_t n) {
  if (n > tile_cap) {
    float *p = (float *)realloc(tile_buf, n * sizeof(float));
    if (p == NULL) return NULL;
    tile_buf = p;
    tile_cap = n;
  }
  return tile_buf;
}

/* Output rows per tile: as many as fit 1 MB (OpenBLAS packs A once per tile, so tiles
 * should be wide), at least 16 and at most 256, a multiple of 16. Tiles start at fixed
 * rows, and the threads split whole tiles: every product is the same OpenBLAS call
 * whatever the thread count (its results can depend on a call's shape). */
static int tile_rows_for(int k) {
  int rows = TILE_FLOATS / (k > 0 ? k : 1);
  if (rows > 256) rows = 256;
  rows &= ~15;
  return rows < 16 ? 16 : rows;
}

static void int8_part(void *ctx, int part, int parts) {
  const int8_job *j = (const int8_job *)ctx;
  const int tile_rows = j->m <= FEW_ROWS ? 16 : tile_rows_for(j->k);
  const int tiles = (j->n + tile_rows - 1) / tile_rows;
  const int n0 = (int)((long)tiles * part / parts) * tile_rows;
  int n1 = (int)((long)tiles * (part + 1) / parts) * tile_rows;
  if (n1 > j->n) n1 = j->n;
  if (n1 <= n0) return;
  if (j->m <= FEW_ROWS) { /* one dot product per output: no tiles needed */
    float acc[FEW_ROWS];
    for (int o = n0; o < n1; ++o) {
      dots(j->m, j->k, j->a, j->lda, j->q + (size_t)o * j->k, acc);
      for (int r = 0; r < j->m; ++r) {
        float *c = j->c + (size_t)r * j->ldc + o;
        *c = (j->beta == 0 ? 0 : j->beta * *c) + j->s[o] * acc[r];
      }
    }
    return;
  }
  float *tile = tile_scratch((size_t)tile_rows * j->k);
  if (tile == NULL) { /* out of memory: the slow path still gives the right answer */
    float acc[1];
    for (int r = 0; r < j->m; ++r)
      for (int o = n0; o < n1; ++o) {
        dots(1, j->k, j->a + (size_t)r * j->lda, j->lda, j->q + (size_t)o * j->k, acc);
        float *c = j->c + (size_t)r * j->ldc + o;
        *c = (j->beta == 0 ? 0 : j->beta * *c) + j->s[o] * acc[0];
      }
    return;
  }
  for (int o0 = n0; o0 < n1; o0 += tile_rows) {
    const int rows = n1 - o0 < tile_rows ? n1 - o0 : tile_rows;
    for (int t = 0; t < rows; ++t) {
      const int8_t *q = j->q + (size_t)(o0 + t) * j->k;
      const float s = j->s[o0 + t];
      float *f = tile + (size_t)t * j->k;
      for (int i = 0; i < j->k; ++i) f[i] = (float)q[i] * s;
    }
    cxk_blas_sgemm_nt(j->m, rows, j->k, 1.0f, j->a, j->lda, tile, j->k, j->beta, j->c + o0, j->ldc);
  }
}

void cxk_int8_linear(int m, int n, int k, const float *a, int lda, const int8_t *q, const float *scales, float *c,
                    int ldc, float beta) {
  if (m <= 0 || n <= 0) return;
  int8_job j = {m, n, k, lda, ldc, a, scales, q, c, beta};
  const int tile_rows = m <= FEW_ROWS ? 16 : tile_rows_for(k);
  cxk_parallel_run(int8_part, &j, cxk_parallel_parts((long)m * n * k, 32768, (n + tile_rows - 1) / tile_rows));
}
