/* Small-M matrix products over weights packed once at load time.
 *
 * The per-step recurrence of sequence mode multiplies a few rows (the batch) by a
 * fixed weight, T times. Called from inside the recurrence's parts (parallel.c), each
 * thread streams its own share of the weight, packed once into panels of 16
 * outputs, P[n/16][k][16] (zero-padded), so no library call repacks it or wakes
 * threads per step.
 *
 * The same panels serve whole sequences (nn.Linear over B·T rows): there a block of
 * 6 rows x 4 panels reuses each weight vector six times, and the loop runs panel
 * group by panel group so a group's weights stay in L2 while every row passes.
 *
 * The ISA is chosen at run time (AVX-512F, else AVX2+FMA, else portable C), so the
 * library still runs on any x86-64 (and builds elsewhere with the portable path).
 * Every output is one FMA chain over k in order, whatever the block shape, the row
 * count or the thread split: a row's result does not depend on which other rows
 * share the call (bitwise), and the AVX-512 and AVX2 paths agree bitwise. Results
 * differ from OpenBLAS only by summation order (~1e-7 relative). */
#include <stddef.h>
#include <string.h>

#include "cortex_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CX_X86 1
#endif

#define PANEL 16
/* Register blocks: RB rows x PB panels of accumulators (AVX-512 has 32 registers:
 * 2 x 8 accumulators + 8 weight vectors; 8 independent FMA chains hide latency). */
#define RB 2
#define PB 8
/* Large-M blocks: 6 rows x 4 panels (24 accumulators + 4 weight vectors). */
#define RB_BIG 6
#define PB_BIG 4
#define RB_MAX 6
/* From this many rows on, the large blocks. */
#define BIG_M 6
#define PB_MAX 8

size_t cxk_packed_size(int n, int k) { return (size_t)((n + PANEL - 1) / PANEL) * (size_t)k * PANEL; }

void cxk_pack_weights(const float *w, int n, int k, float *packed) {
  const int panels = (n + PANEL - 1) / PANEL;
  for (int j = 0; j < panels; j++)
    for (int kk = 0; kk < k; kk++)
      for (int l = 0; l < PANEL; l++) {
        const int row = j * PANEL + l;
        packed[((size_t)j * k + kk) * PANEL + l] = row < n ? w[(size_t)row * k + kk] : 0.0f;
      }
}

/* ---- portable ----------------------------------------------------------- */

static void gemm_portable(int m, int n, int k, const float *a, int lda, const float *p, float *c, int ldc,
                          int acc) {
  const int panels = (n + PANEL - 1) / PANEL;
  for (int i = 0; i < m; i++)
    for (int j = 0; j < panels; j++) {
      float s[PANEL] = {0};
      const float *pp = p + (size_t)j * k * PANEL;
      for (int kk = 0; kk < k; kk++) {
        const float av = a[(size_t)i * lda + kk];
        for (int l = 0; l < PANEL; l++) s[l] += av * pp[(size_t)kk * PANEL + l];
      }
      const int cols = n - j * PANEL < PANEL ? n - j * PANEL : PANEL;
      float *dst = c + (size_t)i * ldc + (size_t)j * PANEL;
      for (int l = 0; l < cols; l++) dst[l] = acc ? dst[l] + s[l] : s[l];
    }
}

#ifdef CX_X86
/* ---- AVX-512 ------------------------------------------------------------- */

__attribute__((target("avx512f"), always_inline)) static inline void block512(
    const int rb, const int pb, int n, int k, const float *a, int lda, const float *p, int j0, float *c, int ldc,
    int acc) {
  __m512 s[RB_MAX][PB_MAX];
  for (int r = 0; r < rb; r++)
    for (int q = 0; q < pb; q++) s[r][q] = _mm512_setzero_ps();
  for (int kk = 0; kk < k; kk++) {
    __m512 w[PB_MAX];
    for (int q = 0; q < pb; q++) w[q] = _mm512_load_ps(p + ((size_t)(j0 + q) * k + kk) * PANEL);
    for (int r = 0; r < rb; r++) {
      const __m512 av = _mm512_set1_ps(a[(size_t)r * lda + kk]);
      for (int q = 0; q < pb; q++) s[r][q] = _mm512_fmadd_ps(av, w[q], s[r][q]);
    }
  }
  for (int q = 0; q < pb; q++) {
    const int col = (j0 + q) * PANEL;
    const int cols = n - col < PANEL ? n - col : PANEL;
    const __mmask16 mask = (__mmask16)(cols == PANEL ? 0xFFFFu : ((1u << cols) - 1u));
    for (int r = 0; r < rb; r++) {
      float *dst = c + (size_t)r * ldc + col;
      __m512 v = s[r][q];
      if (acc) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, dst));
      _mm512_mask_storeu_ps(dst, mask, v);
    }
  }
}

#define BLOCK_ROW(FN, R)                                          \
  switch (pb) {                                                   \
    case 1: FN(R, 1, n, k, ai, lda, p, j0, ci, ldc, acc); break;  \
    case 2: FN(R, 2, n, k, ai, lda, p, j0, ci, ldc, acc); break;  \
    case 3: FN(R, 3, n, k, ai, lda, p, j0, ci, ldc, acc); break;  \
    case 4: FN(R, 4, n, k, ai, lda, p, j0, ci, ldc, acc); break;  \
    case 5: FN(R, 5, n, k, ai, lda, p, j0, ci, ldc, acc); break;  \
    case 6: FN(R, 6, n, k, ai, lda, p, j0, ci, ldc, acc); break;  \
    case 7: FN(R, 7, n, k, ai, lda, p, j0, ci, ldc, acc); break;  \
    default: FN(R, 8, n, k, ai, lda, p, j0, ci, ldc, acc); break; \
  }

/* Dispatch a (rows, panels) block to a fully unrolled instance. */
#define BLOCK_CASES(FN) \
  if (rb == 1) {        \
    BLOCK_ROW(FN, 1)    \
  } else {              \
    BLOCK_ROW(FN, 2)    \
  }

#define BLOCK_ROW_BIG(FN, R)                                      \
  switch (pb) {                                                   \
    case 1: FN(R, 1, n, k, ai, lda, p, j0, ci, ldc, acc); break;  \
    case 2: FN(R, 2, n, k, ai, lda, p, j0, ci, ldc, acc); break;  \
    case 3: FN(R, 3, n, k, ai, lda, p, j0, ci, ldc, acc); break;  \
    default: FN(R, 4, n, k, ai, lda, p, j0, ci, ldc, acc); break; \
  }

#define BLOCK_CASES_BIG(FN)                 \
  switch (rb) {                             \
    case 1: BLOCK_ROW_BIG(FN, 1) break;     \
    case 2: BLOCK_ROW_BIG(FN, 2) break;     \
    case 3: BLOCK_ROW_BIG(FN, 3) break;     \
    case 4: BLOCK_ROW_BIG(FN, 4) break;     \
    case 5: BLOCK_ROW_BIG(FN, 5) break;     \
    default: BLOCK_ROW_BIG(FN, 6) break;    \
  }

/* Panels [p0, p1) of the product. Few rows: every row block streams all the panels
 * (the weights are the traffic). Many rows: panel groups outside, rows inside. */
__attribute__((target("avx512f"))) static void gemm_avx512(int m, int n, int k, const float *a, int lda,
                                                            const float *p, float *c, int ldc, int acc) {
  const int panels = (n + PANEL - 1) / PANEL;
  if (m >= BIG_M) {
    for (int j0 = 0; j0 < panels; j0 += PB_BIG) {
      const int pb = panels - j0 < PB_BIG ? panels - j0 : PB_BIG;
      for (int i0 = 0; i0 < m; i0 += RB_BIG) {
        const int rb = m - i0 < RB_BIG ? m - i0 : RB_BIG;
        const float *ai = a + (size_t)i0 * lda;
        float *ci = c + (size_t)i0 * ldc;
        BLOCK_CASES_BIG(block512)
      }
    }
    return;
  }
  for (int i0 = 0; i0 < m; i0 += RB) {
    const int rb = m - i0 < RB ? m - i0 : RB;
    const float *ai = a + (size_t)i0 * lda;
    float *ci = c + (size_t)i0 * ldc;
    for (int j0 = 0; j0 < panels; j0 += PB) {
      const int pb = panels - j0 < PB ? panels - j0 : PB;
      BLOCK_CASES(block512)
    }
  }
}

/* ---- AVX2 + FMA: a 16-wide panel is two 8-wide halves ---------------------- */

__attribute__((target("avx2,fma"), always_inline)) static inline void block256(
    const int rb, const int pb, int n, int k, const float *a, int lda, const float *p, int j0, float *c, int ldc,
    int acc) {
  __m256 s[RB_MAX][PB_MAX][2];
  for (int r = 0; r < rb; r++)
    for (int q = 0; q < pb; q++) s[r][q][0] = s[r][q][1] = _mm256_setzero_ps();
  for (int kk = 0; kk < k; kk++) {
    __m256 w[PB_MAX][2];
    for (int q = 0; q < pb; q++) {
      const float *src = p + ((size_t)(j0 + q) * k + kk) * PANEL;
      w[q][0] = _mm256_load_ps(src);
      w[q][1] = _mm256_load_ps(src + 8);
    }
    for (int r = 0; r < rb; r++) {
      const __m256 av = _mm256_set1_ps(a[(size_t)r * lda + kk]);
      for (int q = 0; q < pb; q++) {
        s[r][q][0] = _mm256_fmadd_ps(av, w[q][0], s[r][q][0]);
        s[r][q][1] = _mm256_fmadd_ps(av, w[q][1], s[r][q][1]);
      }
    }
  }
  for (int q = 0; q < pb; q++) {
    const int col = (j0 + q) * PANEL;
    const int cols = n - col < PANEL ? n - col : PANEL;
    for (int r = 0; r < rb; r++) {
      float *dst = c + (size_t)r * ldc + col;
      float tmp[PANEL];
      _mm256_storeu_ps(tmp, s[r][q][0]);
      _mm256_storeu_ps(tmp + 8, s[r][q][1]);
      for (int l = 0; l < cols; l++) dst[l] = acc ? dst[l] + tmp[l] : tmp[l];
    }
  }
}

__attribute__((target("avx2,fma"))) static void gemm_avx2(int m, int n, int k, const float *a, int lda,
                                                           const float *p, float *c, int ldc, int acc) {
  const int panels = (n + PANEL - 1) / PANEL;
  /* 16 ymm registers: one row x up to 3 panels (6 accumulators + 6 weight halves), or
   * for many rows, 4 rows x 1 panel (8 accumulators + 2 weight halves). */
  if (m >= BIG_M) {
    for (int j0 = 0; j0 < panels; j0++) {
      for (int i0 = 0; i0 < m; i0 += 4) {
        const int rb = m - i0 < 4 ? m - i0 : 4;
        const float *ai = a + (size_t)i0 * lda;
        float *ci = c + (size_t)i0 * ldc;
        switch (rb) {
          case 1: block256(1, 1, n, k, ai, lda, p, j0, ci, ldc, acc); break;
          case 2: block256(2, 1, n, k, ai, lda, p, j0, ci, ldc, acc); break;
          case 3: block256(3, 1, n, k, ai, lda, p, j0, ci, ldc, acc); break;
          default: block256(4, 1, n, k, ai, lda, p, j0, ci, ldc, acc); break;
        }
      }
    }
    return;
  }
  for (int i0 = 0; i0 < m; i0++) {
    const float *ai = a + (size_t)i0 * lda;
    float *ci = c + (size_t)i0 * ldc;
    for (int j0 = 0; j0 < panels; j0 += 3) {
      const int pb = panels - j0 < 3 ? panels - j0 : 3;
      BLOCK_ROW(block256, 1)
    }
  }
}
#endif

/* ---- dispatch -------------------------------------------------------------- */

typedef void (*gemm_fn)(int, int, int, const float *, int, const float *, float *, int, int);

static int detected_level(void) {
#ifdef CX_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return 2;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
  return 0;
}

static int forced_level = -1;

int cxk_packed_level(void) { return forced_level >= 0 ? forced_level : detected_level(); }

int cxk_packed_force_level(int level) {
  if (level < 0) {
    forced_level = -1;
    return 1;
  }
  if (level > detected_level()) return 0;
  forced_level = level;
  return 1;
}

void cxk_packed_gemm(int m, int n, int k, const float *a, int lda, const float *packed, float *c, int ldc,
                    int accumulate) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate)
      for (int i = 0; i < m; i++) memset(c + (size_t)i * ldc, 0, (size_t)n * sizeof(float));
    return;
  }
  switch (cxk_packed_level()) {
#ifdef CX_X86
    case 2: gemm_avx512(m, n, k, a, lda, packed, c, ldc, accumulate); return;
    case 1: gemm_avx2(m, n, k, a, lda, packed, c, ldc, accumulate); return;
#endif
    default: gemm_portable(m, n, k, a, lda, packed, c, ldc, accumulate); return;
  }
}
