/* Loads OpenBLAS at first use instead of linking it.
 *
 * Why: Debian's OpenBLAS (0.3.21, DYNAMIC_ARCH) picks its kernels in a load-time
 * constructor from the CPU model number, and falls back to "Prescott" (SSE3) on CPUs
 * it does not know, such as recent virtualised Xeons with AVX-512: 2-3x slower. The
 * override, OPENBLAS_CORETYPE, is read by that constructor, so it must be set before
 * the library is loaded. When the user has not set it, we choose from CPUID what the
 * CPU supports (SkylakeX with AVX-512, Haswell with AVX2+FMA), then dlopen. If the
 * host process already loaded OpenBLAS, dlopen returns that instance unchanged. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>

#include "cortex_kernels.h"

/* CBLAS enum values (cblas.h): RowMajor 101, NoTrans 111, Trans 112. */
typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int,
                         float, float *, int);
typedef void (*sgemv_fn)(int, int, int, int, float, const float *, int, const float *, int, float,
                         float *, int);
typedef void (*set_threads_fn)(int);
typedef char *(*corename_fn)(void);

static pthread_once_t once = PTHREAD_ONCE_INIT;
static const char *load_error = "OpenBLAS not loaded";
static sgemm_fn p_sgemm;
static sgemv_fn p_sgemv;
static set_threads_fn p_set_threads;
static corename_fn p_corename;

static const char *preferred_core(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return NULL;
}

static void load(void) {
  const char *core = preferred_core();
  if (getenv("OPENBLAS_CORETYPE") == NULL && core != NULL) setenv("OPENBLAS_CORETYPE", core, 0);
  void *h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_GLOBAL);
  if (h == NULL) h = dlopen("libopenblas.so", RTLD_NOW | RTLD_GLOBAL);
  if (h == NULL) {
    load_error = "cannot load OpenBLAS (libopenblas.so.0); install it, e.g. apt-get install libopenblas0";
    return;
  }
  p_sgemm = (sgemm_fn)dlsym(h, "cblas_sgemm");
  p_sgemv = (sgemv_fn)dlsym(h, "cblas_sgemv");
  p_set_threads = (set_threads_fn)dlsym(h, "openblas_set_num_threads");
  p_corename = (corename_fn)dlsym(h, "openblas_get_corename");
  if (p_sgemm == NULL || p_sgemv == NULL) {
    load_error = "the loaded OpenBLAS lacks cblas_sgemm/cblas_sgemv";
    return;
  }
  /* Cortex owns the threads (parallel.c splits products over its own pool): a second
   * pool of spinning OpenBLAS workers would fight it for the cores. */
  if (p_set_threads != NULL) p_set_threads(1);
  load_error = NULL;
}

const char *cxk_blas_load(void) {
  pthread_once(&once, load);
  return load_error;
}

void cxk_blas_sgemm_nt(int m, int n, int k, float alpha, const float *a, int lda, const float *w, int ldw,
                      float beta, float *c, int ldc) {
  p_sgemm(101, 111, 112, m, n, k, alpha, a, lda, w, ldw, beta, c, ldc);
}

void cxk_blas_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                   const float *b, int ldb, float beta, float *c, int ldc) {
  p_sgemm(101, trans_a ? 112 : 111, trans_b ? 112 : 111, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cxk_blas_sgemv_n(int n, int k, float alpha, const float *w, int ldw, const float *x, float beta, float *y) {
  p_sgemv(101, 111, n, k, alpha, w, ldw, x, 1, beta, y, 1);
}

void cxk_blas_sgemv_t(int n, int k, float alpha, const float *w, int ldw, const float *x, float beta, float *y) {
  p_sgemv(101, 112, n, k, alpha, w, ldw, x, 1, beta, y, 1);
}

const char *cxk_blas_corename(void) {
  if (p_corename == NULL) return "";
  const char *s = p_corename();
  return s ? s : "";
}
