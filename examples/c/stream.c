/*
 * stream.c — stream a batch of inputs through a Cortex model, one step at a time.
 *
 *   cortex_stream [MODEL_DIR] [BATCH] [STEPS]
 *
 * MODEL_DIR defaults to examples/models/lstm_stack (relative: run from the repo
 * root; the CMake build also knows the absolute path as a fallback), BATCH to 4,
 * STEPS to 1000. Prints the model description, a few outputs and the throughput.
 *
 * The loop uses cx_model_step_into: inputs and outputs live in caller buffers, and
 * after the first step the library allocates nothing.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cortex.h"

#define DEFAULT_MODEL_DIR "examples/models/lstm_stack"

/* Report a failed Cortex call (status name + the library's message) and bail out. */
#define CHECK(call)                                                                  \
  do {                                                                               \
    cx_status check_status_ = (call);                                                \
    if (check_status_ != CX_STATUS_OK) {                                             \
      fprintf(stderr, "error: %s failed: %s: %s\n", #call, cx_status_name(check_status_), \
              cx_last_error());                                                      \
      goto fail;                                                                     \
    }                                                                                \
  } while (0)

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int is_directory(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static long parse_positive(const char *text, const char *what) {
  char *end = NULL;
  long v;
  errno = 0;
  v = strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < 1) {
    fprintf(stderr, "error: %s must be a positive integer, got '%s'\n", what, text);
    exit(2);
  }
  return v;
}

/* Inputs come from a ring of precomputed frames, so that the timed loop measures
 * Cortex and not sin(). */
#define FRAMES 256

/* A deterministic input: a sine pattern that differs per stream, feature and step. */
static void fill_input(float *x, int64_t batch, int64_t d, long t) {
  int64_t b, i;
  for (b = 0; b < batch; ++b) {
    for (i = 0; i < d; ++i) {
      x[b * d + i] = (float)sin(0.05 * (double)t + 0.3 * (double)i + 1.7 * (double)b);
    }
  }
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : DEFAULT_MODEL_DIR;
  long batch = argc > 2 ? parse_positive(argv[2], "BATCH") : 4;
  long steps = argc > 3 ? parse_positive(argv[3], "STEPS") : 1000;
  cx_model_t *model = NULL;
  cx_state_t *state = NULL;
  char *info = NULL;
  float *x = NULL, *y = NULL;
  size_t info_len = 0;
  int64_t d_in = 0, d_out = 0;
  int64_t x_shape[2], y_shape[2];
  DLTensor xt, yt;
  double t0, elapsed;
  long t;
  int rc = 1;
  cx_status st;

  if (argc > 4 || (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))) {
    fprintf(stderr, "usage: %s [MODEL_DIR] [BATCH] [STEPS]\n", argv[0]);
    return 2;
  }
#ifdef CORTEX_EXAMPLE_MODEL_DIR
  if (argc <= 1 && !is_directory(dir)) dir = CORTEX_EXAMPLE_MODEL_DIR;
#else
  (void)is_directory;
#endif
  if (cx_abi_version() != CX_ABI_VERSION) {
    fprintf(stderr, "error: libcortex ABI %u, this program was built for %d\n",
            (unsigned)cx_abi_version(), CX_ABI_VERSION);
    return 1;
  }
  printf("cortex %s, model %s, batch %ld, %ld steps\n", cx_version_string(), dir, batch, steps);

  CHECK(cx_model_load(dir, NULL, &model));
  CHECK(cx_model_dims(model, &d_in, &d_out));

  /* Size query, then the copy. */
  st = cx_model_info_json(model, NULL, 0, &info_len);
  if (st != CX_STATUS_BUFFER_TOO_SMALL) CHECK(st);
  info = malloc(info_len);
  if (info == NULL) {
    fprintf(stderr, "error: out of memory\n");
    goto fail;
  }
  CHECK(cx_model_info_json(model, info, info_len, &info_len));
  printf("model info: %s\n", info);

  CHECK(cx_state_create(model, (int64_t)batch, &state));

  x = malloc(sizeof(float) * (size_t)(FRAMES * batch * d_in));
  y = malloc(sizeof(float) * (size_t)(batch * d_out));
  if (x == NULL || y == NULL) {
    fprintf(stderr, "error: out of memory\n");
    goto fail;
  }
  for (t = 0; t < FRAMES; ++t) fill_input(x + t * batch * d_in, batch, d_in, t);

  /* DLPack views over our buffers: x [B, D_in], y [B, D_out], compact float32 on the CPU. */
  x_shape[0] = batch;
  x_shape[1] = d_in;
  y_shape[0] = batch;
  y_shape[1] = d_out;
  memset(&xt, 0, sizeof xt);
  xt.data = x;
  xt.device.device_type = kDLCPU;
  xt.ndim = 2;
  xt.dtype.code = kDLFloat;
  xt.dtype.bits = 32;
  xt.dtype.lanes = 1;
  xt.shape = x_shape;
  yt = xt;
  yt.data = y;
  yt.shape = y_shape;

  t0 = now_seconds();
  for (t = 0; t < steps; ++t) {
    xt.data = x + (t % FRAMES) * batch * d_in;
    CHECK(cx_model_step_into(model, state, &xt, NULL, &yt));
    if (t < 3 || t == steps - 1) {
      printf("step %5ld: y[0][0..3] = % .6f % .6f % .6f % .6f\n", t, y[0], y[1 % d_out], y[2 % d_out],
             y[3 % d_out]);
    }
  }
  elapsed = now_seconds() - t0;
  printf("%ld steps x %ld streams in %.3f s: %.0f steps/s (%.0f stream-steps/s)\n", steps, batch, elapsed,
         (double)steps / elapsed, (double)steps * (double)batch / elapsed);
  rc = 0;

fail:
  free(x);
  free(y);
  free(info);
  cx_state_free(state);
  cx_model_free(model);
  return rc;
}
