/* Small-M matrix products over weights packed once at load time.
 *
 * Step mode and the per-step recurrence of sequence mode multiply a few rows (the
 * batch) by a fixed weight. OpenBLAS repacks the weight on every call and wakes its
 * threads each time, which dominates at these sizes. Here the weight W [n, k]
 * (nn.Linear layout) is packed once into panels of 16 outputs, P[n/16][k][16]
 * (zero-padded), and a register-blocked kernel streams it exactly once per call.
 *
 * The ISA is chosen at run time (AVX-512F, else AVX2+FMA, else portable C), so the
 * library still runs on any x86-64 (and builds elsewhere with the portable path).
 * Results differ from OpenBLAS only by summation order (~1e-7 relative). */
#include <stddef.h>
#include <string.h>

#include "cortex_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CX_X86 1
#endif

#define PANEL 16
#define RB 4 /* rows per register block */
#define PB 4 /* panels per register block */

size_t cx_packed_size(int n, int k) { return (size_t)((n + PANEL - 1) / PANEL) * (size_t)k * PANEL; }

void cx_pack_weights(const float *w, int n, int k, float *packed) {
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
  __m512 s[RB][PB];
  for (int r = 0; r < rb; r++)
    for (int q = 0; q < pb; q++) s[r][q] = _mm512_setzero_ps();
  for (int kk = 0; kk < k; kk++) {
    __m512 w[PB];
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

#define BLOCK_CASES(FN)                                                                                       \
  switch (rb * 8 + pb) {                                                                                      \
    case 1 * 8 + 1: FN(1, 1, n, k, ai, lda, p, j0, ci, ldc, acc); break;                                     \
    case 1 * 8 + 2: FN(1, 2, n, k, ai, lda, p, j0, ci, ldc, acc); break;                                     \
    case 1 * 8 + 3: FN(1, 3, n, k, ai, lda, p, j0, ci, ldc, acc); break;                                     \
    case 1 * 8 + 4: FN(1, 4, n, k, ai, lda, p, j0, ci, ldc, acc); break;                                     \
    case 2 * 8 + 1: FN(2, 1, n, k, ai, lda, p, j0, ci, ldc, acc); break;                                     \
    case 2 * 8 + 2: FN(2, 2, n, k, ai, lda, p, j0, ci, ldc, acc); break;                                     \
    case 2 * 8 + 3: FN(2, 3, n, k, ai, lda, p, j0, ci, ldc, acc); break;                                     \
    case 2 * 8 + 4: FN(2, 4, n, k, ai, lda, p, j0, ci, ldc, acc); break;                                     \
    case 3 * 8 + 1: FN(3, 1, n, k, ai, lda, p, j0, ci, ldc, acc); break;                                     \
    case 3 * 8 + 2: FN(3, 2, n, k, ai, lda, p, j0, ci, ldc, acc); break;                                     \
    case 3 * 8 + 3: FN(3, 3, n, k, ai, lda, p, j0, ci, ldc, acc); break;                                     \
    case 3 * 8 + 4: FN(3, 4, n, k, ai, lda, p, j0, ci, ldc, acc); break;                                     \
    case 4 * 8 + 1: FN(4, 1, n, k, ai, lda, p, j0, ci, ldc, acc); break;                                     \
    case 4 * 8 + 2: FN(4, 2, n, k, ai, lda, p, j0, ci, ldc, acc); break;                                     \
    case 4 * 8 + 3: FN(4, 3, n, k, ai, lda, p, j0, ci, ldc, acc); break;                                     \
    default: FN(4, 4, n, k, ai, lda, p, j0, ci, ldc, acc); break;                                            \
  }

__attribute__((target("avx512f"))) static void gemm_avx512(int m, int n, int k, const float *a, int lda,
                                                            const float *p, float *c, int ldc, int acc) {
  const int panels = (n + PANEL - 1) / PANEL;
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
  __m256 s[RB][PB][2];
  for (int r = 0; r < rb; r++)
    for (int q = 0; q < pb; q++) s[r][q][0] = s[r][q][1] = _mm256_setzero_ps();
  for (int kk = 0; kk < k; kk++) {
    __m256 w[PB][2];
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
  for (int i0 = 0; i0 < m; i0 += RB) {
    const int rb = m - i0 < RB ? m - i0 : RB;
    const float *ai = a + (size_t)i0 * lda;
    float *ci = c + (size_t)i0 * ldc;
    for (int j0 = 0; j0 < panels; j0 += PB) {
      const int pb = panels - j0 < PB ? panels - j0 : PB;
      BLOCK_CASES(block256)
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

int cx_packed_level(void) { return forced_level >= 0 ? forced_level : detected_level(); }

int cx_packed_force_level(int level) {
  if (level < 0) {
    forced_level = -1;
    return 1;
  }
  if (level > detected_level()) return 0;
  forced_level = level;
  return 1;
}

void cx_packed_gemm(int m, int n, int k, const float *a, int lda, const float *packed, float *c, int ldc,
                    int accumulate) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate)
      for (int i = 0; i < m; i++) memset(c + (size_t)i * ldc, 0, (size_t)n * sizeof(float));
    return;
  }
  switch (cx_packed_level()) {
#ifdef CX_X86
    case 2: gemm_avx512(m, n, k, a, lda, packed, c, ldc, accumulate); return;
    case 1: gemm_avx2(m, n, k, a, lda, packed, c, ldc, accumulate); return;
#endif
    default: gemm_portable(m, n, k, a, lda, packed, c, ldc, accumulate); return;
  }
}
