/* Native timing of a Cortex model through the C ABI (no Python in the loop).
 *
 *   bench_model MODEL_DIR THREADS [T]
 *
 * Prints one JSON object: step latency (cx_model_step_into, caller buffers, the
 * allocation-free path) at B=1 and B=32, and sequence-mode throughput
 * (cx_model_forward_into) at T (default 128) for B=1 and B=32. Used by scripts/bench.py. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>

#include "cortex.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void check(cx_status s, const char *what) {
  if (s != CX_STATUS_OK) {
    fprintf(stderr, "%s failed: %s\n", what, cx_last_error());
    exit(1);
  }
}

static DLTensor view(float *data, int ndim, int64_t *shape) {
  DLTensor t;
  t.data = data;
  t.device.device_type = kDLCPU;
  t.device.device_id = 0;
  t.ndim = ndim;
  t.dtype.code = kDLFloat;
  t.dtype.bits = 32;
  t.dtype.lanes = 1;
  t.shape = shape;
  t.strides = NULL;
  t.byte_offset = 0;
  return t;
}

/* Median-free simple timing: warm up, then run until ~0.5 s has passed. */
static double time_steps(cx_model_t *m, int64_t B, int64_t D) {
  cx_state_t *st;
  check(cx_state_create(m, B, &st), "state");
  float *x = calloc((size_t)(B * D), sizeof(float)), *y = calloc((size_t)(B * D), sizeof(float));
  for (int64_t i = 0; i < B * D; i++) x[i] = (float)((i % 17) - 8) * 0.05f;
  int64_t shape[2] = {B, D};
  DLTensor xt = view(x, 2, shape), yt = view(y, 2, shape);
  for (int i = 0; i < 50; i++) check(cx_model_step_into(m, st, &xt, NULL, &yt), "step");
  long n = 0;
  double t0 = now(), t;
  do {
    for (int i = 0; i < 100; i++) check(cx_model_step_into(m, st, &xt, NULL, &yt), "step");
    n += 100;
    t = now();
  } while (t - t0 < 0.5);
  free(x); free(y);
  cx_state_free(st);
  return (t - t0) / (double)n;
}

static double time_sequence(cx_model_t *m, int64_t B, int64_t T, int64_t D) {
  cx_state_t *st;
  check(cx_state_create(m, B, &st), "state");
  float *x = calloc((size_t)(B * T * D), sizeof(float)), *y = calloc((size_t)(B * T * D), sizeof(float));
  for (int64_t i = 0; i < B * T * D; i++) x[i] = (float)((i % 23) - 11) * 0.03f;
  int64_t shape[3] = {B, T, D};
  DLTensor xt = view(x, 3, shape), yt = view(y, 3, shape);
  /* Two warm-up calls: the first sizes the state's scratch, the second merges it into
   * one block; later calls allocate nothing. */
  check(cx_model_forward_into(m, st, &xt, NULL, &yt), "forward");
  check(cx_model_forward_into(m, st, &xt, NULL, &yt), "forward");
  long n = 0;
  double t0 = now(), t;
  do {
    check(cx_model_forward_into(m, st, &xt, NULL, &yt), "forward");
    n++;
    t = now();
  } while (t - t0 < 0.5);
  free(x); free(y);
  cx_state_free(st);
  return (double)(n * B * T) / (t - t0);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL_DIR THREADS [T [step1|step32|seq1|seq32]]\n", argv[0]);
    return 2;
  }
  check(cx_set_num_threads(atoi(argv[2])), "threads");
  cx_model_t *m;
  check(cx_model_load(argv[1], NULL, &m), "load");
  int64_t din, dout;
  check(cx_model_dims(m, &din, &dout), "dims");
  const int64_t T = argc > 3 ? atoi(argv[3]) : 128;
  if (argc > 4) { /* one measurement only (for profilers) */
    const char *w = argv[4];
    double v = strcmp(w, "step1") == 0    ? 1e3 * time_steps(m, 1, din)
               : strcmp(w, "step32") == 0 ? 1e3 * time_steps(m, 32, din)
               : strcmp(w, "seq1") == 0   ? time_sequence(m, 1, T, din)
                                          : time_sequence(m, 32, T, din);
    printf("{\"%s\": %.5f}\n", w, v);
    cx_model_free(m);
    return 0;
  }
  printf("{\"step_b1_ms\": %.5f, \"step_b32_ms\": %.5f, \"seq_b1_tok_s\": %.0f, \"seq_b32_tok_s\": %.0f}\n",
         1e3 * time_steps(m, 1, din), 1e3 * time_steps(m, 32, din),
         time_sequence(m, 1, T, din), time_sequence(m, 32, T, din));
  cx_model_free(m);
  return 0;
}
