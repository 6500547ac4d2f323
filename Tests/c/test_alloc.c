/*
 * test_alloc.c — cx_model_step_into makes no heap allocation after warm-up.
 *
 * This executable defines malloc, calloc, realloc, free, posix_memalign,
 * aligned_alloc, memalign, valloc and pvalloc itself (delegating to glibc's
 * __libc_* entry points) and is linked with --export-dynamic, so every allocation
 * of the process, libcortex.so's included, goes through the counters below. The
 * test first proves that the interposition sees libcortex's allocations (an
 * allocating cx_model_step must count > 0), then counts 1000 cx_model_step_into
 * calls with B = 1 and B = 4 and requires 0.
 *
 * Every further GOLDEN_DIR argument (one per core) gets the same check, plain and with
 * resets, at B = 1 and B = 4.
 *
 *   test_alloc GOLDEN_DIR EXAMPLE_MODEL_DIR [MORE_GOLDEN_DIRS...]
 */
#define _POSIX_C_SOURCE 200809L

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

/* ------------------------------------------------------------ interposer -- */

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);
extern void *__libc_memalign(size_t alignment, size_t size);

void *aligned_alloc(size_t alignment, size_t size);
void *memalign(size_t alignment, size_t size);
void *valloc(size_t size);
void *pvalloc(size_t size);

static int counting;      /* read/written with __atomic builtins */
static long alloc_calls;  /* malloc/calloc/realloc/memalign family while counting */
static long free_calls;   /* free while counting */

static void count_alloc(void) {
  if (__atomic_load_n(&counting, __ATOMIC_RELAXED)) __atomic_fetch_add(&alloc_calls, 1, __ATOMIC_RELAXED);
}

void *malloc(size_t size) {
  count_alloc();
  return __libc_malloc(size);
}

void *calloc(size_t n, size_t size) {
  count_alloc();
  return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size) {
  count_alloc();
  return __libc_realloc(p, size);
}

void free(void *p) {
  if (p != NULL && __atomic_load_n(&counting, __ATOMIC_RELAXED)) __atomic_fetch_add(&free_calls, 1, __ATOMIC_RELAXED);
  __libc_free(p);
}

void *memalign(size_t alignment, size_t size) {
  count_alloc();
  return __libc_memalign(alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size) {
  count_alloc();
  return __libc_memalign(alignment, size);
}

int posix_memalign(void **out, size_t alignment, size_t size) {
  void *p;
  count_alloc();
  if (alignment < sizeof(void *) || (alignment & (alignment - 1)) != 0) return 22; /* EINVAL */
  p = __libc_memalign(alignment, size);
  if (p == NULL && size != 0) return 12; /* ENOMEM */
  *out = p;
  return 0;
}

void *valloc(size_t size) {
  count_alloc();
  return __libc_memalign(4096, size);
}

void *pvalloc(size_t size) {
  count_alloc();
  return __libc_memalign(4096, (size + 4095) & ~(size_t)4095);
}

static void start_counting(void) {
  __atomic_store_n(&alloc_calls, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&free_calls, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&counting, 1, __ATOMIC_SEQ_CST);
}

static long stop_counting(long *frees) {
  __atomic_store_n(&counting, 0, __ATOMIC_SEQ_CST);
  if (frees) *frees = __atomic_load_n(&free_calls, __ATOMIC_SEQ_CST);
  return __atomic_load_n(&alloc_calls, __ATOMIC_SEQ_CST);
}

/* ------------------------------------------------------------------ tests -- */

#define STEPS 1000

static void fill(float *x, size_t n, int t) {
  size_t i;
  for (i = 0; i < n; ++i) x[i] = (float)((int)((i * 7 + (size_t)t * 13) % 19) - 9) * 0.1f;
}

typedef enum { PLAIN, WITH_RESETS, FLOAT64_X, STRIDED_Y } variant;
static const char *const variant_names[] = {"float32 x, y", "float32 x, y + [B] resets", "float64 x",
                                            "strided y"};

/* Counted allocations of STEPS cx_model_step_into calls after `warm` warm-up steps. */
static long count_steps(cx_model_t *m, int64_t batch, variant v, int warm_with_variant, long *frees) {
  int64_t d_in = 0, d_out = 0;
  cx_state_t *s = NULL;
  float *x, *y, *resets;
  double *x64;
  int64_t xs[2], ys[2], rs[1], ystr[2];
  DLTensor xt, yt, rt, x64t, ywt;
  long count;
  int t, failures = 0;
  cx_status st;
  REQUIRE_OK(cx_model_dims(m, &d_in, &d_out));
  REQUIRE_OK(cx_state_create(m, batch, &s));
  {
    /* Routed adapters: bind stream b to slot b % 2 (every model here has >= 2 slots). */
    size_t need = 0;
    char *info;
    (void)cx_model_info_json(m, NULL, 0, &need);
    info = tu_xmalloc(need);
    REQUIRE_OK(cx_model_info_json(m, info, need, &need));
    if (tu_contains(info, "\"num_slots\"")) {
      int64_t ids[64], n = batch, b;
      DLTensor it;
      CHECK(batch <= 64, "batch too large for the route ids buffer");
      for (b = 0; b < batch && b < 64; ++b) ids[b] = b % 2;
      it = tu_dl(ids, kDLInt, 64, 1, &n, NULL);
      REQUIRE_OK(cx_state_set_route_ids(s, &it));
    }
    free(info);
  }
  x = tu_xmalloc((size_t)(batch * d_in) * sizeof(float));
  x64 = tu_xmalloc((size_t)(batch * d_in) * sizeof(double));
  y = tu_xmalloc((size_t)(batch * d_out * 2) * sizeof(float));
  resets = tu_xmalloc((size_t)batch * sizeof(float));
  memset(resets, 0, (size_t)batch * sizeof(float));
  xs[0] = batch;
  xs[1] = d_in;
  ys[0] = batch;
  ys[1] = d_out;
  rs[0] = batch;
  ystr[0] = 2 * d_out;
  ystr[1] = 1;
  xt = tu_dl_f32(x, 2, xs);
  yt = tu_dl_f32(y, 2, ys);
  rt = tu_dl_f32(resets, 1, rs);
  x64t = tu_dl(x64, kDLFloat, 64, 2, xs, NULL);
  ywt = tu_dl(y, kDLFloat, 32, 2, ys, ystr);

  /* Warm-up: the first step sizes the state's scratch arena. */
  for (t = 0; t < 3; ++t) {
    fill(x, (size_t)(batch * d_in), t);
    if (warm_with_variant && v == WITH_RESETS) {
      REQUIRE_OK(cx_model_step_into(m, s, &xt, &rt, &yt));
    } else if (warm_with_variant && v == FLOAT64_X) {
      REQUIRE_OK(cx_model_step_into(m, s, &x64t, NULL, &yt));
    } else if (warm_with_variant && v == STRIDED_Y) {
      REQUIRE_OK(cx_model_step_into(m, s, &xt, NULL, &ywt));
    } else {
      REQUIRE_OK(cx_model_step_into(m, s, &xt, NULL, &yt));
    }
  }
  start_counting();
  for (t = 0; t < STEPS; ++t) {
    x[t % (batch * d_in)] += 0.001f; /* the input changes a little every step */
    switch (v) {
      case PLAIN: st = cx_model_step_into(m, s, &xt, NULL, &yt); break;
      case WITH_RESETS:
        resets[t % batch] = (float)(t % 7 == 0);
        st = cx_model_step_into(m, s, &xt, &rt, &yt);
        break;
      case FLOAT64_X:
        x64[t % (batch * d_in)] = 0.5 * (double)(t % 5);
        st = cx_model_step_into(m, s, &x64t, NULL, &yt);
        break;
      default: st = cx_model_step_into(m, s, &xt, NULL, &ywt); break;
    }
    failures += st != CX_STATUS_OK;
  }
  count = stop_counting(frees);
  CHECK(failures == 0, "%d of %d steps failed: %s", failures, STEPS, cx_last_error());
  cx_state_free(s);
  free(x);
  free(x64);
  free(y);
  free(resets);
  return count;
}

int main(int argc, char **argv) {
  char *golden_model;
  cx_model_t *models[2];
  const char *names[2];
  int k, b;
  long count, frees;
  static const int64_t batches[2] = {1, 4};

  if (argc < 3) {
    fprintf(stderr, "usage: %s GOLDEN_DIR EXAMPLE_MODEL_DIR [MORE_GOLDEN_DIRS...]\n", argv[0]);
    return 2;
  }
  golden_model = tu_path(argv[1], "model");
  REQUIRE_OK(cx_model_load(golden_model, NULL, &models[0]));
  REQUIRE_OK(cx_model_load(argv[2], NULL, &models[1]));
  names[0] = "golden lstm_stack (d=24)";
  names[1] = "example lstm_stack (d=64)";

  /* 0. The interposer sees libcortex's allocations: an allocating step counts > 0. */
  {
    cx_state_t *s = NULL;
    cx_tensor_t *y = NULL;
    float x[4 * 24];
    int64_t xs[2] = {4, 24};
    DLTensor xt = tu_dl_f32(x, 2, xs);
    fill(x, 4 * 24, 0);
    REQUIRE_OK(cx_state_create(models[0], 4, &s));
    REQUIRE_OK(cx_model_step(models[0], s, &xt, NULL, &y)); /* warm-up */
    cx_tensor_free(y);
    start_counting();
    REQUIRE_OK(cx_model_step(models[0], s, &xt, NULL, &y));
    cx_tensor_free(y);
    count = stop_counting(&frees);
    printf("interposition check: one allocating cx_model_step (+ cx_tensor_free): %ld allocations, %ld frees\n",
           count, frees);
    CHECK(count > 0, "the malloc interposer did not see libcortex's allocations: this test cannot prove anything");
    cx_state_free(s);
  }

  /* 1. The promise: zero allocations per cx_model_step_into after warm-up. */
  for (k = 0; k < 2; ++k) {
    for (b = 0; b < 2; ++b) {
      count = count_steps(models[k], batches[b], PLAIN, 1, &frees);
      printf("%s, B=%lld: %d x cx_model_step_into (%s): %ld allocations, %ld frees\n", names[k],
             (long long)batches[b], STEPS, variant_names[PLAIN], count, frees);
      CHECK(count == 0 && frees == 0, "%s, B=%lld: cx_model_step_into allocated %ld times in %d steps", names[k],
            (long long)batches[b], count, STEPS);
    }
  }

  /* 2. The other input kinds, warmed up with the same kind of call. */
  for (k = 1; k <= 3; ++k) {
    count = count_steps(models[1], 4, (variant)k, 1, &frees);
    printf("%s, B=4: %d x cx_model_step_into (%s): %ld allocations, %ld frees\n", names[1], STEPS,
           variant_names[k], count, frees);
    CHECK(count == 0 && frees == 0, "%s: %ld allocations in %d steps", variant_names[k], count, STEPS);
  }

  /* 3. Warmed up with plain steps only, then a new kind of call: the scratch arena may
   *    have to grow once; after that, nothing. */
  for (k = 1; k <= 3; ++k) {
    count = count_steps(models[1], 4, (variant)k, 0, &frees);
    printf("%s, B=4: %d x cx_model_step_into (%s, warmed up without it): %ld allocations\n", names[1], STEPS,
           variant_names[k], count);
    CHECK(count <= 2, "%s after a plain warm-up: %ld allocations in %d steps (more than a one-time growth)",
          variant_names[k], count, STEPS);
  }

  /* 4. Every core's golden model. */
  for (k = 3; k < argc; ++k) {
    char *dir = tu_path(argv[k], "model");
    cx_model_t *m = NULL;
    int vi;
    REQUIRE_OK(cx_model_load(dir, NULL, &m));
    for (b = 0; b < 2; ++b) {
      for (vi = PLAIN; vi <= WITH_RESETS; ++vi) {
        count = count_steps(m, batches[b], (variant)vi, 1, &frees);
        printf("%s, B=%lld: %d x cx_model_step_into (%s): %ld allocations, %ld frees\n", argv[k],
               (long long)batches[b], STEPS, variant_names[vi], count, frees);
        CHECK(count == 0 && frees == 0, "%s, B=%lld (%s): %ld allocations in %d steps", argv[k],
              (long long)batches[b], variant_names[vi], count, STEPS);
      }
    }
    cx_model_free(m);
    free(dir);
  }

  cx_model_free(models[0]);
  cx_model_free(models[1]);
  free(golden_model);
  return tu_finish("test_alloc");
}
