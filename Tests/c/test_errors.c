/*
 * test_errors.c — the error contract of the C ABI, and the input conventions.
 *
 *   test_errors GOLDEN_DIR EXAMPLE_MODEL_DIR SCRATCH_DIR
 *
 * - NULL handles give CX_STATUS_INVALID_HANDLE, NULL pointers CX_STATUS_INVALID_ARGUMENT,
 *   always with a message "[cx_...". Freed and wrong-kind handles are refused.
 * - Rejected inputs (shape, rank, batch, dtype, device, strides) change nothing: the
 *   state serializes to the same bytes, caller buffers and out-params keep their values.
 * - Size queries, state blobs (other model, damaged), resets with masks.
 * - float64/float16/bfloat16 inputs equal float32 ones, strides and byte_offset are
 *   honoured, DLPack exports outlive their handles, imports call the deleter once.
 * - Model loading names what is wrong.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test_util.h"

static const char *golden_dir, *example_dir, *scratch_dir;
static char *golden_model_dir;
static cx_model_t *gm; /* golden model (D = 24) */
static cx_model_t *em; /* example model (D = 64) */
static int64_t D;      /* golden d_in = d_out */
static tu_st_file cases;
static float *seq_x; /* golden seq/x, [B, T, D] */
static int64_t B, T;
static const char *state_path = "PassThroughBlock_0.LSTMCell.h";

/* Distinct non-NULL values for out-params that must stay untouched. */
static char sentinel_storage[4];
#define SENTINEL_MODEL ((cx_model_t *)(void *)&sentinel_storage[0])
#define SENTINEL_STATE ((cx_state_t *)(void *)&sentinel_storage[1])
#define SENTINEL_TENSOR ((cx_tensor_t *)(void *)&sentinel_storage[2])

static void mkdir_p(const char *path) {
  char buf[1024];
  size_t i, n = strlen(path);
  if (n >= sizeof buf) exit(1);
  memcpy(buf, path, n + 1);
  for (i = 1; i <= n; ++i) {
    if (buf[i] == '/' || buf[i] == '\0') {
      char c = buf[i];
      buf[i] = '\0';
      if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "FATAL: mkdir %s: %s\n", buf, strerror(errno));
        exit(1);
      }
      buf[i] = c;
    }
  }
}

/* A state of the golden model that has seen the golden input (non-zero values). */
static cx_state_t *warm_state(void) {
  cx_state_t *s = NULL;
  cx_tensor_t *y = NULL;
  int64_t xs[3];
  DLTensor xt;
  xs[0] = B;
  xs[1] = T;
  xs[2] = D;
  xt = tu_dl_f32(seq_x, 3, xs);
  REQUIRE_OK(cx_state_create(gm, B, &s));
  REQUIRE_OK(cx_model_forward(gm, s, &xt, NULL, &y));
  cx_tensor_free(y);
  return s;
}

/* forward from a zero state; returns y (caller frees) and optionally the state bytes. */
static float *run_forward(cx_model_t *m, const DLTensor *x, const DLTensor *resets, int64_t batch,
                          unsigned char **state_bytes, size_t *state_len) {
  cx_state_t *s = NULL;
  cx_tensor_t *y = NULL;
  int64_t n = 0;
  const float *yp;
  float *out;
  REQUIRE_OK(cx_state_create(m, batch, &s));
  REQUIRE_OK(cx_model_forward(m, s, x, resets, &y));
  yp = tu_tensor_floats(y, &n);
  out = tu_xmalloc((size_t)n * sizeof(float));
  memcpy(out, yp, (size_t)n * sizeof(float));
  if (state_bytes) *state_bytes = tu_state_bytes(s, state_len);
  cx_tensor_free(y);
  cx_state_free(s);
  return out;
}

/* ------------------------------------------------------ NULL / out-params -- */

static void test_null_arguments(void) {
  cx_model_t *m = SENTINEL_MODEL;
  cx_state_t *s = SENTINEL_STATE, *state;
  cx_tensor_t *t = SENTINEL_TENSOR, *tensor = NULL;
  const DLTensor *view = NULL;
  DLManagedTensorVersioned *mv = NULL;
  DLManagedTensor *ml = NULL;
  int64_t a = -7, b = -7;
  size_t needed = 12345;
  char buf[16];
  unsigned char *blob;
  size_t blob_len;
  float x[3 * 24], y[3 * 24];
  int64_t xs[2], ys[2];
  DLTensor xt, yt;
  cx_load_options o;
  char *cfg_path;
  unsigned char *cfg;
  size_t cfg_len;

  printf("-- NULL handles and pointers\n");
  memset(x, 0, sizeof x);
  xs[0] = 3;
  xs[1] = D;
  ys[0] = 3;
  ys[1] = D;
  xt = tu_dl_f32(x, 2, xs);
  yt = tu_dl_f32(y, 2, ys);
  REQUIRE_OK(cx_state_create(gm, 3, &state));
  REQUIRE_OK(cx_state_get_tensor(state, state_path, &tensor));
  blob = tu_state_bytes(state, &blob_len);
  cfg_path = tu_path(golden_model_dir, "config.json");
  cfg = tu_read_file(cfg_path, &cfg_len);

  /* library */
  cx_model_free(NULL);
  cx_state_free(NULL);
  cx_tensor_free(NULL);

  /* load */
  EXPECT_STATUS(cx_model_load(NULL, NULL, &m), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_model_load(golden_model_dir, NULL, NULL), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_model_load_from_memory(NULL, 10, blob, blob_len, NULL, &m), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_model_load_from_memory((const char *)cfg, cfg_len, NULL, 10, NULL, &m),
                CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_model_load_from_memory((const char *)cfg, cfg_len, blob, blob_len, NULL, NULL),
                CX_STATUS_INVALID_ARGUMENT);
  o = cx_load_default_options();
  o.struct_size = 0;
  EXPECT_STATUS(cx_model_load(golden_model_dir, &o, &m), CX_STATUS_INVALID_ARGUMENT);
  {
    /* The options rule: at least the v1 size; a larger struct (a newer header) loads
     * only if the bytes this library does not know are zero; reserved must be zero. */
    unsigned char newer[sizeof(cx_load_options) + 16];
    cx_load_options d = cx_load_default_options(), *p = (cx_load_options *)(void *)newer;
    cx_model_t *q = NULL;
    o = cx_load_default_options();
    o.struct_size = 8; /* smaller than ABI v1's struct: no header ever had it */
    EXPECT_STATUS(cx_model_load(golden_model_dir, &o, &m), CX_STATUS_INVALID_ARGUMENT);
    EXPECT_MESSAGE_HAS("at least");
    o = cx_load_default_options();
    o.reserved[4] = 1;
    EXPECT_STATUS(cx_model_load(golden_model_dir, &o, &m), CX_STATUS_INVALID_ARGUMENT);
    EXPECT_MESSAGE_HAS("reserved");
    memset(newer, 0, sizeof newer);
    memcpy(newer, &d, sizeof d);
    p->struct_size = (uint32_t)sizeof newer;
    if (EXPECT_OK(cx_model_load(golden_model_dir, p, &q))) cx_model_free(q);
    newer[sizeof newer - 1] = 1;
    EXPECT_STATUS(cx_model_load(golden_model_dir, p, &m), CX_STATUS_INVALID_ARGUMENT);
    EXPECT_MESSAGE_HAS("does not know");
  }
  o = cx_load_default_options();
  o.nan_policy = 7;
  EXPECT_STATUS(cx_model_load(golden_model_dir, &o, &m), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_MESSAGE_HAS("nan_policy");
  o = cx_load_default_options();
  o.flags = 1u << 7; /* no such flag */
  EXPECT_STATUS(cx_model_load(golden_model_dir, &o, &m), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_MESSAGE_HAS("flags");
  CHECK(m == SENTINEL_MODEL, "a failed load wrote its out-param");
  o.flags = CX_LOAD_INT8_WEIGHTS; /* a known flag loads */
  {
    cx_model_t *q = NULL;
    char info[65536];
    size_t need = 0;
    if (EXPECT_OK(cx_model_load(golden_model_dir, &o, &q))) {
      EXPECT_OK(cx_model_info_json(q, info, sizeof info, &need));
      CHECK(tu_contains(info, "\"linear\":\"int8\""), "INT8 load: info lacks \"linear\":\"int8\"");
      cx_model_free(q);
    }
  }

  /* model queries */
  EXPECT_STATUS(cx_model_dims(NULL, &a, &b), CX_STATUS_INVALID_HANDLE);
  CHECK(a == -7 && b == -7, "a failed cx_model_dims wrote an out-param (%lld, %lld)", (long long)a, (long long)b);
  /* Properties are skipped where their out-pointer is NULL. */
  EXPECT_STATUS(cx_model_dims(gm, NULL, &b), CX_STATUS_OK);
  EXPECT_STATUS(cx_model_dims(gm, &a, NULL), CX_STATUS_OK);
  CHECK(a == b && a > 0, "cx_model_dims with one NULL out-pointer still writes the other");
  a = b = -7;
  {
    /* The auto-stack builder: NULL recipe, malformed JSON, a bad token, a size query. */
    static const char good[] = "{\"d_hidden\": 8, \"pattern\": \"LC\"}";
    static const char bad_token[] = "{\"d_hidden\": 8, \"pattern\": \"AZ\"}";
    size_t need = 0;
    EXPECT_STATUS(cx_config_auto_stack(NULL, 3, buf, sizeof buf, &needed), CX_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(cx_config_auto_stack("{", 1, buf, sizeof buf, &needed), CX_STATUS_PARSE_ERROR);
    EXPECT_STATUS(cx_config_auto_stack(bad_token, sizeof bad_token - 1, buf, sizeof buf, &needed), CX_STATUS_PARSE_ERROR);
    CHECK(strstr(cx_last_error(), "unknown token") != NULL, "bad token message: %s", cx_last_error());
    EXPECT_STATUS(cx_config_auto_stack(good, sizeof good - 1, NULL, 0, &need), CX_STATUS_BUFFER_TOO_SMALL);
    CHECK(need > 100, "auto stack config size %zu", need);
    EXPECT_STATUS(cx_config_auto_stack(good, sizeof good - 1, buf, sizeof buf, NULL), CX_STATUS_INVALID_ARGUMENT);
  }
  /* The task evaluator: NULL or missing directory, malformed options. */
  EXPECT_STATUS(cx_task_evaluate(NULL, NULL, buf, sizeof buf, &needed), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_task_evaluate("/nonexistent/task", NULL, buf, sizeof buf, &needed), CX_STATUS_IO_ERROR);
  EXPECT_STATUS(cx_task_evaluate(golden_model_dir, "{", buf, sizeof buf, &needed), CX_STATUS_PARSE_ERROR);
  EXPECT_STATUS(cx_model_info_json(NULL, buf, sizeof buf, &needed), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_model_info_json(gm, buf, sizeof buf, NULL), CX_STATUS_INVALID_ARGUMENT);
  CHECK(needed == 12345, "a failed cx_model_info_json wrote needed");

  /* state */
  EXPECT_STATUS(cx_state_create(NULL, 1, &s), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_state_create(gm, 1, NULL), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_state_create(gm, 0, &s), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_state_create(gm, -3, &s), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_state_create(gm, (int64_t)1 << 40, &s), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_state_clone(NULL, &s), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_state_clone(state, NULL), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_state_batch(NULL, &a), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_state_batch(state, NULL), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_state_reset(NULL, NULL), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_state_get_tensor(NULL, state_path, &t), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_state_get_tensor(state, NULL, &t), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_state_get_tensor(state, state_path, NULL), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_state_get_tensor(state, "NoSuchBlock.h", &t), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_MESSAGE_HAS("NoSuchBlock.h");
  EXPECT_STATUS(cx_state_to_bytes(NULL, buf, sizeof buf, &needed), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_state_to_bytes(state, buf, sizeof buf, NULL), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_state_from_bytes(NULL, blob, blob_len, &s), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_state_from_bytes(gm, NULL, blob_len, &s), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_state_from_bytes(gm, blob, blob_len, NULL), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_state_save(NULL, "x.bin"), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_state_save(state, NULL), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_state_load(NULL, "x.bin", &s), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_state_load(gm, NULL, &s), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_state_load(gm, "x.bin", NULL), CX_STATUS_INVALID_ARGUMENT);
  CHECK(s == SENTINEL_STATE, "a failed state call wrote its out-param");
  CHECK(t == SENTINEL_TENSOR, "a failed cx_state_get_tensor wrote its out-param");
  CHECK(needed == 12345, "a failed cx_state_to_bytes wrote needed");

  /* compute */
  EXPECT_STATUS(cx_model_forward(NULL, state, &xt, NULL, &t), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_model_step(NULL, state, &xt, NULL, &t), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_model_forward_into(NULL, state, &xt, NULL, &yt), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_model_step_into(NULL, state, &xt, NULL, &yt), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_model_forward(gm, NULL, &xt, NULL, &t), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_model_step(gm, NULL, &xt, NULL, &t), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_model_forward_into(gm, NULL, &xt, NULL, &yt), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_model_step_into(gm, NULL, &xt, NULL, &yt), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_model_step(gm, state, NULL, NULL, &t), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_model_forward(gm, state, NULL, NULL, &t), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_model_step_into(gm, state, NULL, NULL, &yt), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_model_forward_into(gm, state, NULL, NULL, &yt), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_model_step(gm, state, &xt, NULL, NULL), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_model_step_into(gm, state, &xt, NULL, NULL), CX_STATUS_INVALID_ARGUMENT);
  CHECK(t == SENTINEL_TENSOR, "a failed compute call wrote its out-param");
  CHECK(tu_state_equals(state, blob, blob_len), "a rejected call changed the state");

  /* tensors */
  EXPECT_STATUS(cx_tensor_view(NULL, &view), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_tensor_view(tensor, NULL), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_tensor_to_dlpack(NULL, &mv), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_tensor_to_dlpack(tensor, NULL), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_tensor_to_dlpack_legacy(NULL, &ml), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_tensor_to_dlpack_legacy(tensor, NULL), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_tensor_from_dlpack(NULL, &t), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_tensor_from_dlpack_legacy(NULL, &t), CX_STATUS_INVALID_ARGUMENT);
  CHECK(view == NULL && mv == NULL && ml == NULL && t == SENTINEL_TENSOR, "a failed tensor call wrote its out-param");

  /* library-wide */
  EXPECT_OK(cx_set_num_threads(0));
  CHECK(cx_get_num_threads() >= 1, "cx_get_num_threads() = %d", (int)cx_get_num_threads());
  EXPECT_OK(cx_set_num_threads(1));
  CHECK(cx_get_num_threads() == 1, "cx_get_num_threads() = %d after setting 1", (int)cx_get_num_threads());

  /* The message is thread-local state of the last call: cleared by a success. */
  EXPECT_STATUS(cx_state_batch(NULL, &a), CX_STATUS_INVALID_HANDLE);
  EXPECT_OK(cx_state_batch(state, &a));
  CHECK(a == 3, "batch %lld", (long long)a);

  cx_tensor_free(tensor);
  cx_state_free(state);
  free(blob);
  free(cfg);
  free(cfg_path);
}

/* ----------------------------------------------------- stale / wrong kind -- */

static void test_stale_and_wrong_kind(void) {
  cx_model_t *m = NULL;
  cx_state_t *s = NULL, *s2 = NULL;
  cx_tensor_t *t = NULL;
  const DLTensor *view = NULL;
  int64_t a, b;
  int local = 0;

  printf("-- freed and wrong-kind handles\n");
  REQUIRE_OK(cx_model_load(golden_model_dir, NULL, &m));
  cx_model_free(m);
  EXPECT_STATUS(cx_model_dims(m, &a, &b), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_state_create(m, 1, &s), CX_STATUS_INVALID_HANDLE);
  cx_model_free(m); /* a second free of a dead handle is ignored */

  REQUIRE_OK(cx_state_create(gm, 2, &s));
  cx_state_free(s);
  EXPECT_STATUS(cx_state_batch(s, &a), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_state_reset(s, NULL), CX_STATUS_INVALID_HANDLE);
  cx_state_free(s);

  REQUIRE_OK(cx_state_create(gm, 2, &s));
  REQUIRE_OK(cx_state_get_tensor(s, state_path, &t));
  cx_tensor_free(t);
  EXPECT_STATUS(cx_tensor_view(t, &view), CX_STATUS_INVALID_HANDLE);
  cx_tensor_free(t);

  /* A state outlives the model handle it came from (it keeps the model alive). */
  {
    cx_model_t *m2 = NULL;
    cx_state_t *s2 = NULL, *s3 = NULL;
    size_t len = 0;
    unsigned char *bytes;
    REQUIRE_OK(cx_model_load(golden_model_dir, NULL, &m2));
    REQUIRE_OK(cx_state_create(m2, 2, &s2));
    cx_model_free(m2);
    EXPECT_OK(cx_state_batch(s2, &a));
    bytes = tu_state_bytes(s2, &len);
    EXPECT_OK(cx_state_clone(s2, &s3));
    EXPECT_OK(cx_state_reset(s3, NULL));
    /* The blob of the freed model's state loads into an identical model. */
    cx_state_free(s3);
    s3 = NULL;
    EXPECT_OK(cx_state_from_bytes(gm, bytes, len, &s3));
    cx_state_free(s3);
    cx_state_free(s2);
    free(bytes);
  }

  /* Wrong kinds: a state as a model, a model as a state, a tensor as either. */
  REQUIRE_OK(cx_state_get_tensor(s, state_path, &t));
  EXPECT_STATUS(cx_model_dims((const cx_model_t *)(const void *)s, &a, &b), CX_STATUS_INVALID_HANDLE);
  EXPECT_MESSAGE_HAS("state");
  EXPECT_STATUS(cx_state_create((const cx_model_t *)(const void *)s, 1, &s2), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_state_batch((const cx_state_t *)(const void *)gm, &a), CX_STATUS_INVALID_HANDLE);
  EXPECT_MESSAGE_HAS("model");
  EXPECT_STATUS(cx_model_dims((const cx_model_t *)(const void *)t, &a, &b), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_tensor_view((const cx_tensor_t *)(const void *)s, &view), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_model_dims((const cx_model_t *)(const void *)&local, &a, &b), CX_STATUS_INVALID_HANDLE);
  /* Freeing with the wrong function must not release it. */
  cx_model_free((cx_model_t *)(void *)s);
  cx_tensor_free((cx_tensor_t *)(void *)s);
  EXPECT_OK(cx_state_batch(s, &a));

  /* A state of another model. */
  {
    cx_state_t *es = NULL;
    float x[2 * 24];
    int64_t xs[2] = {2, 24};
    DLTensor xt = tu_dl_f32(x, 2, xs);
    cx_tensor_t *y = SENTINEL_TENSOR;
    memset(x, 0, sizeof x);
    REQUIRE_OK(cx_state_create(em, 2, &es));
    EXPECT_STATUS(cx_model_step(gm, es, &xt, NULL, &y), CX_STATUS_STATE_MISMATCH);
    CHECK(y == SENTINEL_TENSOR, "out-param written");
    cx_state_free(es);
  }
  cx_tensor_free(t);
  cx_state_free(s);
}

/* -------------------------------------------------------- rejected inputs -- */

#define YFILL 12345.0f

typedef struct {
  const char *name;
  DLTensor x;
  const DLTensor *resets;
  DLTensor *y; /* for the _into variants; NULL: a good y */
  cx_status expected;
  const char *needle;
  int step; /* 1: step mode, 0: sequence mode */
} bad_input;

static void run_rejected(cx_state_t *s, const bad_input *c, const unsigned char *before, size_t before_len,
                         DLTensor *good_y) {
  cx_tensor_t *t = SENTINEL_TENSOR;
  float *ydata;
  DLTensor *y = c->y ? c->y : good_y;
  size_t n, i;
  int ok = 1;
  char label[160];
  snprintf(label, sizeof label, "%s (%s)", c->name, c->step ? "step" : "forward");
  if (c->step) {
    ok &= EXPECT_STATUS(cx_model_step(gm, s, &c->x, c->resets, &t), c->expected);
    if (c->needle) EXPECT_MESSAGE_HAS(c->needle);
    ok &= EXPECT_STATUS(cx_model_step_into(gm, s, &c->x, c->resets, y), c->expected);
  } else {
    ok &= EXPECT_STATUS(cx_model_forward(gm, s, &c->x, c->resets, &t), c->expected);
    if (c->needle) EXPECT_MESSAGE_HAS(c->needle);
    ok &= EXPECT_STATUS(cx_model_forward_into(gm, s, &c->x, c->resets, y), c->expected);
  }
  if (c->needle) EXPECT_MESSAGE_HAS(c->needle);
  if (!ok) printf("   (case: %s)\n", label);
  CHECK(t == SENTINEL_TENSOR, "%s: the out-param was written", label);
  CHECK(tu_state_equals(s, before, before_len), "%s: the rejected call changed the state", label);
  /* The caller's output buffer is untouched. */
  ydata = (float *)y->data;
  n = 1;
  for (i = 0; i < (size_t)y->ndim; ++i) n *= (size_t)(y->shape[i] > 0 ? y->shape[i] : 0);
  if (y->dtype.bits == 32 && y->dtype.code == kDLFloat && ydata != NULL) {
    for (i = 0; i < n; ++i) {
      if (ydata[i] != YFILL) {
        CHECK(0, "%s: the caller's y buffer was written (y[%zu] = %g)", label, i, (double)ydata[i]);
        break;
      }
    }
  }
}

static void test_rejected_inputs(void) {
  cx_state_t *s = warm_state();
  size_t len, i;
  unsigned char *before = tu_state_bytes(s, &len);
  float *x = tu_xmalloc((size_t)(4 * T * (D + 1)) * sizeof(float));
  float *ybuf = tu_xmalloc((size_t)(4 * T * (D + 1)) * sizeof(float));
  int32_t xi[3 * 9 * 24];
  double yd[3 * 9 * 24];
  int64_t s_step[2] = {3, 24}, s_seq[3] = {3, 9, 24};
  int64_t s_step_wide[2] = {3, 23}, s_seq_wide[3] = {3, 9, 23};
  int64_t s_batch2[2] = {2, 24}, s_batch2_seq[3] = {2, 9, 24};
  int64_t s_r1[1] = {3 * 24}, s_r4[4] = {3, 1, 1, 24}, s_r9[9] = {3, 1, 1, 1, 1, 1, 1, 1, 24};
  int64_t s_neg[2] = {3, -24};
  int64_t huge_strides[2] = {INT64_MAX / 2, 1}, huge_strides3[3] = {1, INT64_MAX / 4, 1};
  int64_t s_reset2[1] = {2}, s_reset_bt[2] = {3, 9}, s_reset_b[1] = {3};
  float resets[27];
  DLTensor good_step_y, good_seq_y;
  DLTensor r_short, r_bt, r_complex, r_cuda;
  DLTensor y_shape, y_f64, y_cuda, y_i32;
  bad_input cases_[64];
  int n = 0, k;

  printf("-- rejected inputs leave state, buffers and out-params untouched\n");
  for (i = 0; i < (size_t)(4 * T * (D + 1)); ++i) x[i] = 0.25f;
  for (i = 0; i < (size_t)(4 * T * (D + 1)); ++i) ybuf[i] = YFILL;
  for (i = 0; i < 27; ++i) resets[i] = (float)(i % 2);
  memset(xi, 0, sizeof xi);
  for (i = 0; i < 3 * 9 * 24; ++i) yd[i] = YFILL;
  good_step_y = tu_dl_f32(ybuf, 2, s_step);
  good_seq_y = tu_dl_f32(ybuf, 3, s_seq);
  r_short = tu_dl_f32(resets, 1, s_reset2);
  r_bt = tu_dl_f32(resets, 2, s_reset_bt);
  r_complex = tu_dl(resets, 5 /* kDLComplex */, 64, 1, s_reset_b, NULL);
  r_cuda = tu_dl_f32(resets, 1, s_reset_b);
  r_cuda.device.device_type = kDLCUDA;
  y_shape = tu_dl_f32(ybuf, 2, s_step_wide);
  y_f64 = tu_dl(yd, kDLFloat, 64, 2, s_step, NULL);
  y_cuda = tu_dl_f32(ybuf, 2, s_step);
  y_cuda.device.device_type = kDLCUDA;
  y_i32 = tu_dl(xi, kDLInt, 32, 2, s_step, NULL);

#define ADD(NAME, STEP, X, RESETS, Y, STATUS, NEEDLE) \
  do {                                                \
    cases_[n].name = (NAME);                          \
    cases_[n].step = (STEP);                          \
    cases_[n].x = (X);                                \
    cases_[n].resets = (RESETS);                      \
    cases_[n].y = (Y);                                \
    cases_[n].expected = (STATUS);                    \
    cases_[n].needle = (NEEDLE);                      \
    n++;                                              \
  } while (0)

  ADD("wrong feature size", 1, tu_dl_f32(x, 2, s_step_wide), NULL, NULL, CX_STATUS_SHAPE_MISMATCH, "x: expected");
  ADD("wrong feature size", 0, tu_dl_f32(x, 3, s_seq_wide), NULL, NULL, CX_STATUS_SHAPE_MISMATCH, "x: expected");
  ADD("rank 3 in step mode", 1, tu_dl_f32(x, 3, s_seq), NULL, NULL, CX_STATUS_SHAPE_MISMATCH, "x:");
  ADD("rank 2 in sequence mode", 0, tu_dl_f32(x, 2, s_step), NULL, NULL, CX_STATUS_SHAPE_MISMATCH, "x:");
  ADD("rank 1", 1, tu_dl_f32(x, 1, s_r1), NULL, NULL, CX_STATUS_SHAPE_MISMATCH, "x:");
  ADD("rank 4", 0, tu_dl_f32(x, 4, s_r4), NULL, NULL, CX_STATUS_SHAPE_MISMATCH, "x:");
  ADD("rank 9", 1, tu_dl_f32(x, 9, s_r9), NULL, NULL, CX_STATUS_SHAPE_MISMATCH, "x:");
  ADD("rank 0", 1, tu_dl_f32(x, 0, NULL), NULL, NULL, CX_STATUS_SHAPE_MISMATCH, "x:");
  ADD("negative rank", 1, tu_dl_f32(x, -1, s_step), NULL, NULL, CX_STATUS_SHAPE_MISMATCH, "x:");
  ADD("negative dimension", 1, tu_dl_f32(x, 2, s_neg), NULL, NULL, CX_STATUS_SHAPE_MISMATCH, "negative");
  ADD("batch mismatch", 1, tu_dl_f32(x, 2, s_batch2), NULL, NULL, CX_STATUS_SHAPE_MISMATCH, "B=3");
  ADD("batch mismatch", 0, tu_dl_f32(x, 3, s_batch2_seq), NULL, NULL, CX_STATUS_SHAPE_MISMATCH, "B=3");
  ADD("int32 x", 1, tu_dl(xi, kDLInt, 32, 2, s_step, NULL), NULL, NULL, CX_STATUS_DTYPE_MISMATCH, "int32");
  ADD("int32 x", 0, tu_dl(xi, kDLInt, 32, 3, s_seq, NULL), NULL, NULL, CX_STATUS_DTYPE_MISMATCH, "int32");
  ADD("uint8 x", 1, tu_dl(xi, kDLUInt, 8, 2, s_step, NULL), NULL, NULL, CX_STATUS_DTYPE_MISMATCH, "uint8");
  ADD("bool x", 1, tu_dl(xi, CX_DLPACK_CODE_BOOL, 8, 2, s_step, NULL), NULL, NULL, CX_STATUS_DTYPE_MISMATCH, "bool");
  ADD("float32x2 lanes", 1, tu_dl(x, kDLFloat, 32, 2, s_step, NULL), NULL, NULL, CX_STATUS_DTYPE_MISMATCH, "dtype");
  cases_[n - 1].x.dtype.lanes = 2;
  ADD("float8 x", 1, tu_dl(x, kDLFloat, 8, 2, s_step, NULL), NULL, NULL, CX_STATUS_DTYPE_MISMATCH, "dtype");
  ADD("CUDA x", 1, tu_dl_f32(x, 2, s_step), NULL, NULL, CX_STATUS_DEVICE_MISMATCH, "device");
  cases_[n - 1].x.device.device_type = kDLCUDA;
  ADD("CUDA x", 0, tu_dl_f32(x, 3, s_seq), NULL, NULL, CX_STATUS_DEVICE_MISMATCH, "device");
  cases_[n - 1].x.device.device_type = kDLCUDA;
  ADD("overflowing strides", 1, tu_dl(x, kDLFloat, 32, 2, s_step, huge_strides), NULL, NULL,
      CX_STATUS_INVALID_ARGUMENT, "strides");
  ADD("overflowing strides", 0, tu_dl(x, kDLFloat, 32, 3, s_seq, huge_strides3), NULL, NULL,
      CX_STATUS_INVALID_ARGUMENT, "strides");
  ADD("NULL data", 1, tu_dl_f32(NULL, 2, s_step), NULL, NULL, CX_STATUS_INVALID_ARGUMENT, "data");
  ADD("NULL shape", 1, tu_dl_f32(x, 2, NULL), NULL, NULL, CX_STATUS_INVALID_ARGUMENT, "shape");
  ADD("huge byte_offset", 1, tu_dl_f32(x, 2, s_step), NULL, NULL, CX_STATUS_INVALID_ARGUMENT, "byte_offset");
  cases_[n - 1].x.byte_offset = UINT64_MAX - 3;
  ADD("resets of 2 rows", 1, tu_dl_f32(x, 2, s_step), &r_short, NULL, CX_STATUS_SHAPE_MISMATCH, "resets");
  ADD("resets of 2 rows", 0, tu_dl_f32(x, 3, s_seq), &r_short, NULL, CX_STATUS_SHAPE_MISMATCH, "resets");
  ADD("[B, T] resets in step mode", 1, tu_dl_f32(x, 2, s_step), &r_bt, NULL, CX_STATUS_SHAPE_MISMATCH, "resets");
  ADD("complex resets", 0, tu_dl_f32(x, 3, s_seq), &r_complex, NULL, CX_STATUS_DTYPE_MISMATCH, "resets");
  ADD("CUDA resets", 1, tu_dl_f32(x, 2, s_step), &r_cuda, NULL, CX_STATUS_DEVICE_MISMATCH, "resets");
  ADD("y of the wrong shape", 1, tu_dl_f32(x, 2, s_step), NULL, &y_shape, CX_STATUS_SHAPE_MISMATCH, "y:");
  ADD("float64 y", 1, tu_dl_f32(x, 2, s_step), NULL, &y_f64, CX_STATUS_DTYPE_MISMATCH, "y:");
  ADD("CUDA y", 1, tu_dl_f32(x, 2, s_step), NULL, &y_cuda, CX_STATUS_DEVICE_MISMATCH, "y:");
  ADD("int32 y", 1, tu_dl_f32(x, 2, s_step), NULL, &y_i32, CX_STATUS_DTYPE_MISMATCH, "y:");
#undef ADD

  for (k = 0; k < n; ++k) {
    const bad_input *c = &cases_[k];
    /* The allocating variants have no y: skip them for the y cases. */
    if (c->y != NULL) {
      int ok;
      ok = c->step ? EXPECT_STATUS(cx_model_step_into(gm, s, &c->x, c->resets, c->y), c->expected)
                   : EXPECT_STATUS(cx_model_forward_into(gm, s, &c->x, c->resets, c->y), c->expected);
      if (c->needle) EXPECT_MESSAGE_HAS(c->needle);
      if (!ok) printf("   (case: %s)\n", c->name);
      CHECK(tu_state_equals(s, before, len), "%s: the rejected call changed the state", c->name);
      if (c->y->dtype.code == kDLFloat && c->y->dtype.bits == 64) {
        for (i = 0; i < 3 * 24; ++i) CHECK(yd[i] == YFILL, "%s: y written", c->name);
      }
      for (i = 0; i < (size_t)(4 * T * (D + 1)); ++i) {
        if (ybuf[i] != YFILL) {
          CHECK(0, "%s: y buffer written at %zu", c->name, i);
          break;
        }
      }
      continue;
    }
    run_rejected(s, c, before, len, c->step ? &good_step_y : &good_seq_y);
  }
  printf("   %d rejected-input cases\n", n);

  /* NaN under CX_NAN_REJECT: refused, state untouched; propagated by default. */
  {
    cx_load_options o = cx_load_default_options();
    cx_model_t *rm = NULL;
    cx_state_t *rs = NULL;
    cx_tensor_t *t = SENTINEL_TENSOR;
    unsigned char *rb;
    size_t rl;
    DLTensor xt = tu_dl_f32(x, 2, s_step);
    o.nan_policy = CX_NAN_REJECT;
    REQUIRE_OK(cx_model_load(golden_model_dir, &o, &rm));
    REQUIRE_OK(cx_state_create(rm, 3, &rs));
    rb = tu_state_bytes(rs, &rl);
    x[5] = NAN;
    EXPECT_STATUS(cx_model_step(rm, rs, &xt, NULL, &t), CX_STATUS_NAN_INPUT);
    EXPECT_MESSAGE_HAS("non-finite");
    x[5] = INFINITY;
    EXPECT_STATUS(cx_model_step_into(rm, rs, &xt, NULL, &good_step_y), CX_STATUS_NAN_INPUT);
    CHECK(t == SENTINEL_TENSOR && tu_state_equals(rs, rb, rl), "NaN rejection changed something");
    for (i = 0; i < 3 * 24; ++i) CHECK(ybuf[i] == YFILL, "NaN rejection wrote y");
    x[5] = NAN;
    EXPECT_OK(cx_model_step_into(gm, s, &xt, NULL, &good_step_y));
    CHECK(isnan(ybuf[0]), "CX_NAN_PROPAGATE: NaN in row 0 did not reach y[0] (%g)", (double)ybuf[0]);
    x[5] = 0.25f;
    free(rb);
    cx_state_free(rs);
    cx_model_free(rm);
  }

  free(before);
  free(x);
  free(ybuf);
  cx_state_free(s);
}

/* ------------------------------------------------------------ state bytes -- */

static void test_state_bytes(void) {
  cx_state_t *s = warm_state(), *r = SENTINEL_STATE, *loaded = NULL;
  size_t len = 0, needed = 0, i;
  unsigned char *blob = tu_state_bytes(s, &len);
  unsigned char *buf = tu_xmalloc(len + 16);
  unsigned char *damaged = tu_xmalloc(len);
  int refused = 0;
  char *path, *missing, *baddir;

  printf("-- state serialization\n");
  CHECK(len > 48 && memcmp(blob, "CXSTATE1", 8) == 0, "state blob does not start with CXSTATE1");
  /* Size query: too small -> BUFFER_TOO_SMALL + the size, buffer untouched. */
  EXPECT_STATUS(cx_state_to_bytes(s, NULL, 0, &needed), CX_STATUS_BUFFER_TOO_SMALL);
  CHECK(needed == len, "needed %zu, blob %zu", needed, len);
  memset(buf, 0xAB, len + 16);
  needed = 0;
  EXPECT_STATUS(cx_state_to_bytes(s, buf, len - 1, &needed), CX_STATUS_BUFFER_TOO_SMALL);
  CHECK(needed == len, "needed %zu, blob %zu", needed, len);
  for (i = 0; i < len + 16; ++i) {
    if (buf[i] != 0xAB) {
      CHECK(0, "BUFFER_TOO_SMALL wrote byte %zu", i);
      break;
    }
  }
  EXPECT_OK(cx_state_to_bytes(s, buf, len + 16, &needed));
  CHECK(needed == len && memcmp(buf, blob, len) == 0 && buf[len] == 0xAB, "a larger buffer got other bytes");

  /* The same size-query contract for cx_model_info_json. */
  {
    size_t need = 0, got = 0;
    char *info;
    EXPECT_STATUS(cx_model_info_json(gm, NULL, 0, &need), CX_STATUS_BUFFER_TOO_SMALL);
    info = tu_xmalloc(need + 8);
    memset(info, 0x5A, need + 8);
    EXPECT_STATUS(cx_model_info_json(gm, info, need - 1, &got), CX_STATUS_BUFFER_TOO_SMALL);
    CHECK(got == need, "info size query: needed %zu then %zu", need, got);
    for (i = 0; i < need + 8; ++i) {
      if (info[i] != 0x5A) {
        CHECK(0, "cx_model_info_json with a small buffer wrote byte %zu", i);
        break;
      }
    }
    EXPECT_OK(cx_model_info_json(gm, info, need, &got));
    CHECK(got == need && strlen(info) + 1 == need && info[0] == '{', "info JSON: %zu bytes, strlen %zu", got,
          strlen(info));
    free(info);
  }

  /* Round trip. */
  EXPECT_OK(cx_state_from_bytes(gm, blob, len, &r));
  CHECK(r != SENTINEL_STATE && tu_state_equals(r, blob, len), "round trip changed the state");
  cx_state_free(r);
  r = SENTINEL_STATE;

  /* Another model's state. */
  EXPECT_STATUS(cx_state_from_bytes(em, blob, len, &r), CX_STATUS_STATE_MISMATCH);
  EXPECT_MESSAGE_HAS("model");
  CHECK(r == SENTINEL_STATE, "out-param written");

  /* Truncated blobs. */
  EXPECT_STATUS(cx_state_from_bytes(gm, blob, 0, &r), CX_STATUS_PARSE_ERROR);
  EXPECT_STATUS(cx_state_from_bytes(gm, blob, 10, &r), CX_STATUS_PARSE_ERROR);
  EXPECT_STATUS(cx_state_from_bytes(gm, blob, len - 1, &r), CX_STATUS_PARSE_ERROR);
  CHECK(r == SENTINEL_STATE, "out-param written");

  /* Every single-byte corruption must be refused. */
  for (i = 0; i < len; ++i) {
    cx_status st;
    memcpy(damaged, blob, len);
    damaged[i] ^= 0x5A;
    r = SENTINEL_STATE;
    st = cx_state_from_bytes(gm, damaged, len, &r);
    if (st == CX_STATUS_OK) {
      CHECK(0, "a blob with byte %zu flipped was accepted", i);
      cx_state_free(r);
    } else {
      refused++;
      CHECK(r == SENTINEL_STATE, "out-param written on failure (byte %zu)", i);
      CHECK(cx_last_error()[0] != '\0', "no message (byte %zu)", i);
    }
  }
  printf("   %zu-byte blob: %d of %zu single-byte corruptions refused\n", len, refused, len);

  /* Files: save, load, load into another model, missing file, bad directory. */
  path = tu_path(scratch_dir, "state.bin");
  missing = tu_path(scratch_dir, "no-such-state.bin");
  baddir = tu_path(scratch_dir, "no/such/dir/state.bin");
  remove(missing);
  EXPECT_OK(cx_state_save(s, path));
  EXPECT_OK(cx_state_load(gm, path, &loaded));
  CHECK(loaded != NULL && tu_state_equals(loaded, blob, len), "save + load changed the state");
  cx_state_free(loaded);
  r = SENTINEL_STATE;
  EXPECT_STATUS(cx_state_load(em, path, &r), CX_STATUS_STATE_MISMATCH);
  EXPECT_STATUS(cx_state_load(gm, missing, &r), CX_STATUS_IO_ERROR);
  EXPECT_MESSAGE_HAS("no-such-state.bin");
  EXPECT_STATUS(cx_state_save(s, baddir), CX_STATUS_IO_ERROR);
  CHECK(r == SENTINEL_STATE, "out-param written");

  /* Clone is deep. */
  {
    cx_state_t *c = NULL;
    EXPECT_OK(cx_state_clone(s, &c));
    CHECK(tu_state_equals(c, blob, len), "clone differs");
    EXPECT_OK(cx_state_reset(c, NULL));
    CHECK(tu_state_equals(s, blob, len), "resetting a clone changed the original");
    cx_state_free(c);
  }

  free(path);
  free(missing);
  free(baddir);
  free(blob);
  free(buf);
  free(damaged);
  cx_state_free(s);
}

/* ------------------------------------------------------------------ reset -- */

static float *state_tensor(const cx_state_t *s, const char *path, int64_t *n) {
  cx_tensor_t *t = NULL;
  const float *p;
  float *out;
  REQUIRE_OK(cx_state_get_tensor(s, path, &t));
  p = tu_tensor_floats(t, n);
  out = tu_xmalloc((size_t)*n * sizeof(float));
  memcpy(out, p, (size_t)*n * sizeof(float));
  cx_tensor_free(t);
  return out;
}

static void test_reset(void) {
  static const struct {
    uint8_t code, bits;
  } kinds[] = {{kDLUInt, 8}, {CX_DLPACK_CODE_BOOL, 8}, {kDLInt, 64}, {kDLInt, 16}, {kDLFloat, 32},
               {kDLFloat, 64}, {kDLFloat, 16}, {kDLBfloat, 16}, {kDLUInt, 32}};
  unsigned char mask_bytes[3 * 8];
  int64_t ms[1] = {3}, ms2[1] = {2};
  size_t k, i, len, fresh_len;
  cx_state_t *fresh = NULL;
  unsigned char *fresh_bytes;

  printf("-- cx_state_reset with masks\n");
  REQUIRE_OK(cx_state_create(gm, B, &fresh));
  fresh_bytes = tu_state_bytes(fresh, &fresh_len);
  for (k = 0; k < sizeof kinds / sizeof kinds[0]; ++k) {
    cx_state_t *s = warm_state();
    int64_t n0 = 0, n1 = 0;
    float *before = state_tensor(s, state_path, &n0), *after;
    DLTensor mt;
    size_t w = kinds[k].bits / 8, row = (size_t)(n0 / 3);
    memset(mask_bytes, 0, sizeof mask_bytes);
    /* Row 1 non-zero: the value 1 in each dtype (the high byte for 16-bit floats). */
    if (kinds[k].code == kDLFloat && w == 4) {
      float one = 1.0f;
      memcpy(mask_bytes + w, &one, 4);
    } else if (kinds[k].code == kDLFloat && w == 8) {
      double one = 1.0;
      memcpy(mask_bytes + w, &one, 8);
    } else if (w == 2 && (kinds[k].code == kDLFloat || kinds[k].code == kDLBfloat)) {
      mask_bytes[w + 1] = 0x3C;
    } else {
      mask_bytes[w] = 1;
    }
    mt = tu_dl(mask_bytes, kinds[k].code, kinds[k].bits, 1, ms, NULL);
    if (!EXPECT_OK(cx_state_reset(s, &mt))) printf("   (mask dtype code %d bits %d)\n", kinds[k].code, kinds[k].bits);
    after = state_tensor(s, state_path, &n1);
    for (i = 0; i < (size_t)n1; ++i) {
      float want = (i >= row && i < 2 * row) ? 0.0f : before[i];
      if (after[i] != want) {
        CHECK(0, "mask dtype %d/%d: element %zu is %g, want %g", kinds[k].code, kinds[k].bits, i, (double)after[i],
              (double)want);
        break;
      }
    }
    CHECK(before[row] != 0.0f, "the warm state's row 1 was zero already");
    free(before);
    free(after);
    cx_state_free(s);
  }
  {
    cx_state_t *s = warm_state();
    unsigned char *b = tu_state_bytes(s, &len);
    DLTensor bad = tu_dl(mask_bytes, kDLUInt, 8, 1, ms2, NULL);
    DLTensor cuda = tu_dl(mask_bytes, kDLUInt, 8, 1, ms, NULL);
    DLTensor cplx = tu_dl(mask_bytes, 5, 64, 1, ms, NULL);
    cuda.device.device_type = kDLCUDA;
    EXPECT_STATUS(cx_state_reset(s, &bad), CX_STATUS_SHAPE_MISMATCH);
    EXPECT_MESSAGE_HAS("mask");
    EXPECT_STATUS(cx_state_reset(s, &cuda), CX_STATUS_DEVICE_MISMATCH);
    EXPECT_STATUS(cx_state_reset(s, &cplx), CX_STATUS_DTYPE_MISMATCH);
    CHECK(tu_state_equals(s, b, len), "a rejected reset changed the state");
    /* All-zero mask: nothing changes; NULL: everything is reset. */
    memset(mask_bytes, 0, sizeof mask_bytes);
    cuda.device.device_type = kDLCPU;
    EXPECT_OK(cx_state_reset(s, &cuda));
    CHECK(tu_state_equals(s, b, len), "an all-zero mask changed the state");
    EXPECT_OK(cx_state_reset(s, NULL));
    CHECK(tu_state_equals(s, fresh_bytes, fresh_len), "reset(NULL) is not a fresh state");
    free(b);
    cx_state_free(s);
  }
  free(fresh_bytes);
  cx_state_free(fresh);
}

/* ----------------------------------------------------- dtypes and strides -- */

static void test_dtypes_and_strides(void) {
  size_t n = (size_t)(B * T * D), i;
  int64_t xs[3], st[3], rs[2];
  DLTensor xt;
  unsigned char *ref_state, *got_state;
  size_t ref_len, got_len;
  float *y32, *y;
  double *x64 = tu_xmalloc(n * sizeof(double));
  uint16_t *x16 = tu_xmalloc(n * sizeof(uint16_t));
  float *xr = tu_xmalloc(n * sizeof(float));
  float *xtr = tu_xmalloc(n * sizeof(float));
  float *padded = tu_xmalloc((n + 5) * sizeof(float));
  float resets32[27];
  unsigned char resets_u8[27];
  int64_t resets_i64[27];
  double diff;
  int64_t b, t, d;

  printf("-- float64/float16/bfloat16 inputs, masks of any dtype, strides, byte_offset\n");
  xs[0] = B;
  xs[1] = T;
  xs[2] = D;
  xt = tu_dl_f32(seq_x, 3, xs);
  y32 = run_forward(gm, &xt, NULL, B, &ref_state, &ref_len);

  /* float64 holding exactly the float32 values: bitwise the same results. */
  for (i = 0; i < n; ++i) x64[i] = (double)seq_x[i];
  xt = tu_dl(x64, kDLFloat, 64, 3, xs, NULL);
  y = run_forward(gm, &xt, NULL, B, &got_state, &got_len);
  CHECK(memcmp(y, y32, n * sizeof(float)) == 0, "float64 input: y differs from float32");
  CHECK(got_len == ref_len && memcmp(got_state, ref_state, ref_len) == 0, "float64 input: state differs");
  free(y);
  free(got_state);

  /* float16: equal to float32 of the rounded values, and close to the unrounded. */
  for (i = 0; i < n; ++i) {
    x16[i] = tu_f32_to_f16(seq_x[i]);
    xr[i] = tu_f16_to_f32(x16[i]);
  }
  xt = tu_dl(x16, kDLFloat, 16, 3, xs, NULL);
  y = run_forward(gm, &xt, NULL, B, NULL, NULL);
  xt = tu_dl_f32(xr, 3, xs);
  {
    float *yr = run_forward(gm, &xt, NULL, B, NULL, NULL);
    CHECK(memcmp(y, yr, n * sizeof(float)) == 0, "float16 input differs from float32 of the same values");
    diff = tu_max_abs_diff(y, y32, n);
    CHECK(diff < 2e-2, "float16 input: max |y16 - y32| = %.3e", diff);
    printf("   float16: bitwise equal to float32(rounded x); max |y16 - y32| = %.2e\n", diff);
    free(yr);
  }
  free(y);

  /* bfloat16, the same way. */
  for (i = 0; i < n; ++i) {
    x16[i] = tu_f32_to_bf16(seq_x[i]);
    xr[i] = tu_bf16_to_f32(x16[i]);
  }
  xt = tu_dl(x16, kDLBfloat, 16, 3, xs, NULL);
  y = run_forward(gm, &xt, NULL, B, NULL, NULL);
  xt = tu_dl_f32(xr, 3, xs);
  {
    float *yr = run_forward(gm, &xt, NULL, B, NULL, NULL);
    CHECK(memcmp(y, yr, n * sizeof(float)) == 0, "bfloat16 input differs from float32 of the same values");
    diff = tu_max_abs_diff(y, y32, n);
    CHECK(diff < 1e-1, "bfloat16 input: max |y - y32| = %.3e", diff);
    free(yr);
  }
  free(y);

  /* A transposed view: memory is [T, B, D], the tensor [B, T, D] with strides. */
  for (b = 0; b < B; ++b)
    for (t = 0; t < T; ++t)
      for (d = 0; d < D; ++d) xtr[(t * B + b) * D + d] = seq_x[(b * T + t) * D + d];
  st[0] = D;
  st[1] = B * D;
  st[2] = 1;
  xt = tu_dl(xtr, kDLFloat, 32, 3, xs, st);
  y = run_forward(gm, &xt, NULL, B, &got_state, &got_len);
  CHECK(memcmp(y, y32, n * sizeof(float)) == 0, "strided (transposed) input: y differs");
  CHECK(got_len == ref_len && memcmp(got_state, ref_state, ref_len) == 0, "strided input: state differs");
  free(y);
  free(got_state);

  /* Negative strides: memory holds x with T reversed; the view starts at the last
   * block and walks back. */
  {
    float *rev = tu_xmalloc(n * sizeof(float));
    int64_t nst[3];
    for (b = 0; b < B; ++b)
      for (t = 0; t < T; ++t)
        memcpy(rev + (b * T + (T - 1 - t)) * D, seq_x + (b * T + t) * D, (size_t)D * sizeof(float));
    nst[0] = T * D;
    nst[1] = -D;
    nst[2] = 1;
    xt = tu_dl(rev, kDLFloat, 32, 3, xs, nst);
    xt.byte_offset = (uint64_t)((T - 1) * D) * sizeof(float);
    y = run_forward(gm, &xt, NULL, B, NULL, NULL);
    CHECK(memcmp(y, y32, n * sizeof(float)) == 0, "negative-stride input: y differs");
    free(y);
    free(rev);
  }

  /* byte_offset: the data starts 5 floats into the buffer. */
  for (i = 0; i < 5; ++i) padded[i] = 1e30f;
  memcpy(padded + 5, seq_x, n * sizeof(float));
  xt = tu_dl_f32(padded, 3, xs);
  xt.byte_offset = 5 * sizeof(float);
  y = run_forward(gm, &xt, NULL, B, NULL, NULL);
  CHECK(memcmp(y, y32, n * sizeof(float)) == 0, "byte_offset input: y differs");
  free(y);

  /* Strides + byte_offset + float64 at once: x64 transposed, offset by one element. */
  {
    double *x64t = tu_xmalloc((n + 1) * sizeof(double));
    x64t[0] = 1e300;
    for (i = 0; i < n; ++i) x64t[i + 1] = (double)xtr[i];
    xt = tu_dl(x64t, kDLFloat, 64, 3, xs, st);
    xt.byte_offset = sizeof(double);
    y = run_forward(gm, &xt, NULL, B, NULL, NULL);
    CHECK(memcmp(y, y32, n * sizeof(float)) == 0, "strided float64 input with byte_offset: y differs");
    free(y);
    free(x64t);
  }

  /* Strided output of step_into: y rows 2*D apart, the gaps untouched. */
  {
    cx_state_t *s1 = NULL, *s2 = NULL;
    float *xstep = tu_xmalloc((size_t)(B * D) * sizeof(float));
    float *yc = tu_xmalloc((size_t)(B * D) * sizeof(float));
    float *ys = tu_xmalloc((size_t)(B * 2 * D) * sizeof(float));
    int64_t s2d[2], ystr[2];
    DLTensor xst, yct, yst;
    s2d[0] = B;
    s2d[1] = D;
    ystr[0] = 2 * D;
    ystr[1] = 1;
    for (i = 0; i < (size_t)(B * D); ++i) xstep[i] = seq_x[i];
    for (i = 0; i < (size_t)(B * 2 * D); ++i) ys[i] = YFILL;
    xst = tu_dl_f32(xstep, 2, s2d);
    yct = tu_dl_f32(yc, 2, s2d);
    yst = tu_dl(ys, kDLFloat, 32, 2, s2d, ystr);
    REQUIRE_OK(cx_state_create(gm, B, &s1));
    REQUIRE_OK(cx_state_create(gm, B, &s2));
    EXPECT_OK(cx_model_step_into(gm, s1, &xst, NULL, &yct));
    EXPECT_OK(cx_model_step_into(gm, s2, &xst, NULL, &yst));
    for (b = 0; b < B; ++b) {
      CHECK(memcmp(ys + b * 2 * D, yc + b * D, (size_t)D * sizeof(float)) == 0, "strided y row %lld differs",
            (long long)b);
      for (d = 0; d < D; ++d) CHECK(ys[b * 2 * D + D + d] == YFILL, "strided y wrote into a gap");
    }
    free(xstep);
    free(yc);
    free(ys);
    cx_state_free(s1);
    cx_state_free(s2);
  }

  /* [B, T] masks: float32, uint8, int64 give the same result. */
  for (i = 0; i < 27; ++i) {
    int on = (i == 3 || i == 9 || i == 15 || i == 26);
    resets32[i] = on ? 1.0f : 0.0f;
    resets_u8[i] = (unsigned char)(on ? 7 : 0);
    resets_i64[i] = on ? -1 : 0;
  }
  rs[0] = B;
  rs[1] = T;
  xt = tu_dl_f32(seq_x, 3, xs);
  {
    DLTensor r32 = tu_dl_f32(resets32, 2, rs);
    DLTensor ru8 = tu_dl(resets_u8, kDLUInt, 8, 2, rs, NULL);
    DLTensor ri64 = tu_dl(resets_i64, kDLInt, 64, 2, rs, NULL);
    float *ya = run_forward(gm, &xt, &r32, B, NULL, NULL);
    float *yb = run_forward(gm, &xt, &ru8, B, NULL, NULL);
    float *yc = run_forward(gm, &xt, &ri64, B, NULL, NULL);
    CHECK(memcmp(ya, yb, n * sizeof(float)) == 0, "uint8 resets differ from float32 resets");
    CHECK(memcmp(ya, yc, n * sizeof(float)) == 0, "int64 resets differ from float32 resets");
    CHECK(memcmp(ya, y32, n * sizeof(float)) != 0, "resets had no effect");
    free(ya);
    free(yb);
    free(yc);
  }

  /* T = 0: an empty output and an unchanged state. */
  {
    cx_state_t *s = warm_state();
    unsigned char *b0;
    size_t l0;
    int64_t zs[3];
    cx_tensor_t *yt = NULL;
    const DLTensor *v = NULL;
    zs[0] = B;
    zs[1] = 0;
    zs[2] = D;
    b0 = tu_state_bytes(s, &l0);
    xt = tu_dl_f32(NULL, 3, zs);
    if (EXPECT_OK(cx_model_forward(gm, s, &xt, NULL, &yt))) {
      DLManagedTensorVersioned *ev = NULL;
      REQUIRE_OK(cx_tensor_view(yt, &v));
      CHECK(v->ndim == 3 && v->shape[0] == B && v->shape[1] == 0 && v->shape[2] == D, "T=0: y shape");
      /* A zero-size export works too. */
      if (EXPECT_OK(cx_tensor_to_dlpack(yt, &ev)) && ev) {
        CHECK(ev->dl_tensor.ndim == 3 && ev->dl_tensor.shape[1] == 0, "zero-size export shape");
        ev->deleter(ev);
      }
    }
    CHECK(tu_state_equals(s, b0, l0), "T=0 changed the state");
    cx_tensor_free(yt);
    free(b0);
    cx_state_free(s);
  }

  free(y32);
  free(ref_state);
  free(x64);
  free(x16);
  free(xr);
  free(xtr);
  free(padded);
}

/* ------------------------------------------------------------------ DLPack -- */

static int deleter_calls;

static void counting_deleter(DLManagedTensorVersioned *self) {
  (void)self;
  deleter_calls++;
}

static void counting_legacy_deleter(DLManagedTensor *self) {
  (void)self;
  deleter_calls++;
}

static DLManagedTensorVersioned make_managed(void *data, uint8_t code, uint8_t bits, int32_t ndim, int64_t *shape) {
  DLManagedTensorVersioned m;
  memset(&m, 0, sizeof m);
  m.version.major = 1;
  m.version.minor = 0;
  m.manager_ctx = NULL;
  m.deleter = counting_deleter;
  m.flags = 0;
  m.dl_tensor = tu_dl(data, code, bits, ndim, shape, NULL);
  return m;
}

static void test_dlpack(void) {
  size_t n = (size_t)(B * T * D);
  int64_t xs[3];
  DLTensor xt;
  float *y32;
  cx_model_t *m = NULL;
  cx_state_t *s = NULL;
  cx_tensor_t *t = NULL, *imp = SENTINEL_TENSOR;
  DLManagedTensorVersioned *ev = NULL, *ev2 = NULL;
  DLManagedTensor *el = NULL;
  DLManagedTensorVersioned mv;
  DLManagedTensor ml;
  float *copy;
  const DLTensor *v;

  printf("-- DLPack export and import\n");
  xs[0] = B;
  xs[1] = T;
  xs[2] = D;
  xt = tu_dl_f32(seq_x, 3, xs);
  y32 = run_forward(gm, &xt, NULL, B, NULL, NULL);

  /* Exports outlive the tensor, the state and the model. */
  REQUIRE_OK(cx_model_load(golden_model_dir, NULL, &m));
  REQUIRE_OK(cx_state_create(m, B, &s));
  REQUIRE_OK(cx_model_forward(m, s, &xt, NULL, &t));
  EXPECT_OK(cx_tensor_to_dlpack(t, &ev));
  EXPECT_OK(cx_tensor_to_dlpack(t, &ev2));
  EXPECT_OK(cx_tensor_to_dlpack_legacy(t, &el));
  REQUIRE_OK(cx_tensor_view(t, &v));
  if (ev == NULL || ev2 == NULL || el == NULL) {
    CHECK(0, "DLPack export failed");
    return;
  }
  CHECK(ev->version.major == 1, "export version %u.%u", ev->version.major, ev->version.minor);
  CHECK(ev->flags == 0, "an output export has flags %llu (want writable, 0)", (unsigned long long)ev->flags);
  CHECK(ev->deleter != NULL && el->deleter != NULL, "export without a deleter");
  CHECK(ev != ev2, "two exports share one managed struct");
  CHECK(ev->dl_tensor.data == v->data && el->dl_tensor.data == v->data, "exports do not share the memory");
  CHECK(ev->dl_tensor.ndim == 3 && ev->dl_tensor.shape[0] == B && ev->dl_tensor.shape[1] == T &&
            ev->dl_tensor.shape[2] == D,
        "export shape");
  CHECK(ev->dl_tensor.byte_offset == 0 && ev->dl_tensor.device.device_type == kDLCPU &&
            ev->dl_tensor.dtype.code == kDLFloat && ev->dl_tensor.dtype.bits == 32 && ev->dl_tensor.dtype.lanes == 1,
        "export dtype/device/byte_offset");
  CHECK(ev->dl_tensor.strides == NULL ||
            (ev->dl_tensor.strides[0] == T * D && ev->dl_tensor.strides[1] == D && ev->dl_tensor.strides[2] == 1),
        "export strides");
  CHECK(el->dl_tensor.ndim == 3 && el->dl_tensor.shape[2] == D, "legacy export shape");
  copy = tu_xmalloc(n * sizeof(float));
  memcpy(copy, v->data, n * sizeof(float));
  CHECK(memcmp(copy, y32, n * sizeof(float)) == 0, "exported y differs");
  cx_tensor_free(t);
  cx_state_free(s);
  cx_model_free(m);
  /* Still readable and writable (flags = 0) after every handle is gone. */
  CHECK(memcmp(ev->dl_tensor.data, copy, n * sizeof(float)) == 0, "export changed after the handles were freed");
  ((float *)ev->dl_tensor.data)[0] += 1.0f;
  CHECK(((float *)el->dl_tensor.data)[0] == copy[0] + 1.0f, "the exports do not share memory");
  ev->deleter(ev);
  CHECK(memcmp(el->dl_tensor.data, ev2->dl_tensor.data, n * sizeof(float)) == 0, "legacy/versioned differ");
  el->deleter(el);
  ev2->deleter(ev2);
  free(copy);

  /* Import with version.major = 2: refused, the deleter called exactly once. */
  deleter_calls = 0;
  mv = make_managed(seq_x, kDLFloat, 32, 3, xs);
  mv.version.major = 2;
  EXPECT_STATUS(cx_tensor_from_dlpack(&mv, &imp), CX_STATUS_UNSUPPORTED);
  EXPECT_MESSAGE_HAS("version");
  CHECK(deleter_calls == 1, "version 2 import: deleter called %d times, want 1", deleter_calls);
  CHECK(imp == SENTINEL_TENSOR, "out-param written");

  /* Refused imports still call the deleter once: NULL out, a CUDA tensor, a bad shape. */
  deleter_calls = 0;
  mv = make_managed(seq_x, kDLFloat, 32, 3, xs);
  EXPECT_STATUS(cx_tensor_from_dlpack(&mv, NULL), CX_STATUS_INVALID_ARGUMENT);
  CHECK(deleter_calls == 1, "NULL-out import: deleter called %d times", deleter_calls);
  deleter_calls = 0;
  mv = make_managed(seq_x, kDLFloat, 32, 3, xs);
  mv.dl_tensor.device.device_type = kDLCUDA;
  EXPECT_STATUS(cx_tensor_from_dlpack(&mv, &imp), CX_STATUS_DEVICE_MISMATCH);
  CHECK(deleter_calls == 1, "CUDA import: deleter called %d times", deleter_calls);
  deleter_calls = 0;
  mv = make_managed(seq_x, 5, 64, 3, xs);
  EXPECT_STATUS(cx_tensor_from_dlpack(&mv, &imp), CX_STATUS_DTYPE_MISMATCH);
  CHECK(deleter_calls == 1, "complex import: deleter called %d times", deleter_calls);
  deleter_calls = 0;
  {
    int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 3};
    mv = make_managed(seq_x, kDLFloat, 32, 9, nine);
    EXPECT_STATUS(cx_tensor_from_dlpack(&mv, &imp), CX_STATUS_SHAPE_MISMATCH);
    mv = make_managed(seq_x, kDLFloat, 32, 3, NULL);
    EXPECT_STATUS(cx_tensor_from_dlpack(&mv, &imp), CX_STATUS_INVALID_ARGUMENT);
    CHECK(deleter_calls == 2, "rank-9 / NULL-shape imports: deleter called %d times, want 2", deleter_calls);
  }
  deleter_calls = 0;
  memset(&ml, 0, sizeof ml);
  ml.dl_tensor = tu_dl(seq_x, kDLFloat, 32, 3, xs, NULL);
  ml.dl_tensor.device.device_type = kDLCUDA;
  ml.deleter = counting_legacy_deleter;
  EXPECT_STATUS(cx_tensor_from_dlpack_legacy(&ml, &imp), CX_STATUS_DEVICE_MISMATCH);
  CHECK(deleter_calls == 1, "legacy CUDA import: deleter called %d times", deleter_calls);
  CHECK(imp == SENTINEL_TENSOR, "out-param written");

  /* A good import: zero-copy, usable as x, deleter once at cx_tensor_free. */
  deleter_calls = 0;
  mv = make_managed(seq_x, kDLFloat, 32, 3, xs);
  if (EXPECT_OK(cx_tensor_from_dlpack(&mv, &imp))) {
    float *y;
    CHECK(deleter_calls == 0, "deleter called during a good import");
    REQUIRE_OK(cx_tensor_view(imp, &v));
    CHECK(v->data == seq_x, "the import copied the data");
    y = run_forward(gm, v, NULL, B, NULL, NULL);
    CHECK(memcmp(y, y32, n * sizeof(float)) == 0, "an imported x gives another y");
    free(y);
    cx_tensor_free(imp);
    CHECK(deleter_calls == 1, "good import: deleter called %d times after free, want 1", deleter_calls);
  }

  /* Re-export of a READ_ONLY import keeps the flag and keeps the producer alive. */
  deleter_calls = 0;
  mv = make_managed(seq_x, kDLFloat, 32, 3, xs);
  mv.flags = DLPACK_FLAG_BITMASK_READ_ONLY;
  imp = NULL;
  if (EXPECT_OK(cx_tensor_from_dlpack(&mv, &imp))) {
    ev = NULL;
    EXPECT_OK(cx_tensor_to_dlpack(imp, &ev));
    cx_tensor_free(imp);
    CHECK(deleter_calls == 0, "the producer was released while an export lives");
    if (ev) {
      CHECK(ev->flags & DLPACK_FLAG_BITMASK_READ_ONLY, "re-export lost READ_ONLY");
      CHECK(ev->dl_tensor.data == seq_x, "re-export copied");
      ev->deleter(ev);
    }
    CHECK(deleter_calls == 1, "READ_ONLY import: deleter called %d times, want 1", deleter_calls);
  }

  /* Legacy import, then free. An int32 tensor imports (masks accept integers). */
  deleter_calls = 0;
  memset(&ml, 0, sizeof ml);
  ml.dl_tensor = tu_dl(seq_x, kDLInt, 32, 3, xs, NULL);
  ml.deleter = counting_legacy_deleter;
  imp = NULL;
  if (EXPECT_OK(cx_tensor_from_dlpack_legacy(&ml, &imp))) {
    cx_tensor_t *yt = SENTINEL_TENSOR;
    cx_state_t *s2 = NULL;
    REQUIRE_OK(cx_tensor_view(imp, &v));
    REQUIRE_OK(cx_state_create(gm, B, &s2));
    EXPECT_STATUS(cx_model_forward(gm, s2, v, NULL, &yt), CX_STATUS_DTYPE_MISMATCH);
    cx_state_free(s2);
    cx_tensor_free(imp);
  }
  CHECK(deleter_calls == 1, "legacy import: deleter called %d times, want 1", deleter_calls);

  /* A producer without a deleter (allowed by DLPack) is fine. */
  mv = make_managed(seq_x, kDLFloat, 32, 3, xs);
  mv.deleter = NULL;
  imp = NULL;
  EXPECT_OK(cx_tensor_from_dlpack(&mv, &imp));
  cx_tensor_free(imp);
  free(y32);
}

/* -------------------------------------------------------------- load errors -- */

static char *replace_once(const char *text, const char *from, const char *to) {
  const char *at = strstr(text, from);
  size_t a, b, c;
  char *out;
  if (at == NULL) {
    fprintf(stderr, "FATAL: '%s' not found in the config\n", from);
    exit(1);
  }
  a = (size_t)(at - text);
  b = strlen(to);
  c = strlen(at + strlen(from));
  out = tu_xmalloc(a + b + c + 1);
  memcpy(out, text, a);
  memcpy(out + a, to, b);
  memcpy(out + a + b, at + strlen(from), c + 1);
  return out;
}

/* A model directory under the scratch dir with this config (NULL: none) and the
 * golden weights (or none). Returns its path. */
static char *make_model_dir(const char *name, const char *config, int with_weights) {
  char *dir = tu_path(scratch_dir, name);
  char *cfg = tu_path(dir, "config.json");
  char *w = tu_path(dir, "model.safetensors");
  mkdir_p(dir);
  remove(cfg);
  remove(w);
  if (config && !tu_write_file(cfg, config, strlen(config))) {
    fprintf(stderr, "FATAL: cannot write %s\n", cfg);
    exit(1);
  }
  if (with_weights) {
    char *src = tu_path(golden_model_dir, "model.safetensors");
    size_t len;
    unsigned char *bytes = tu_read_file(src, &len);
    if (!tu_write_file(w, bytes, len)) exit(1);
    free(bytes);
    free(src);
  }
  free(cfg);
  free(w);
  return dir;
}

static void expect_load_error(const char *dir, cx_status expected, const char *needle1, const char *needle2) {
  cx_model_t *m = SENTINEL_MODEL;
  if (!EXPECT_STATUS(cx_model_load(dir, NULL, &m), expected)) printf("   (model dir %s)\n", dir);
  if (needle1) EXPECT_MESSAGE_HAS(needle1);
  if (needle2) EXPECT_MESSAGE_HAS(needle2);
  CHECK(m == SENTINEL_MODEL, "a failed load wrote its out-param");
  printf("   %-24s -> %s: %s\n", strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir, cx_status_name(expected),
         cx_last_error());
}

static void test_load_errors(void) {
  char *cfg_path = tu_path(golden_model_dir, "config.json");
  size_t len;
  char *config = (char *)tu_read_file(cfg_path, &len);
  char *text = tu_xmalloc(len + 1);
  char *arch, *cell, *dir, *missing;
  cx_model_t *m = NULL;

  printf("-- model loading errors\n");
  memcpy(text, config, len);
  text[len] = '\0';

  missing = tu_path(scratch_dir, "no-such-model");
  expect_load_error(missing, CX_STATUS_IO_ERROR, "no-such-model", NULL);
  free(missing);
  expect_load_error(cfg_path, CX_STATUS_IO_ERROR, "config.json", NULL); /* a file, not a directory */

  /* Sanity: a copy of the golden model loads. */
  dir = make_model_dir("good", text, 1);
  EXPECT_OK(cx_model_load(dir, NULL, &m));
  cx_model_free(m);
  free(dir);

  dir = make_model_dir("malformed-config", "{\"format\": \"cortex\", \"format_version\": 1,", 1);
  expect_load_error(dir, CX_STATUS_PARSE_ERROR, "config.json", NULL);
  free(dir);

  arch = replace_once(text, "\"cortex_stack\"", "\"nope\"");
  dir = make_model_dir("unknown-architecture", arch, 1);
  expect_load_error(dir, CX_STATUS_UNSUPPORTED, "nope", "architecture");
  free(dir);
  free(arch);

  cell = replace_once(text, "\"cell_type\": \"lstm\"", "\"cell_type\": \"mystery\"");
  dir = make_model_dir("unknown-cell-type", cell, 1);
  expect_load_error(dir, CX_STATUS_UNSUPPORTED, "mystery", "cell");
  free(dir);
  free(cell);

  dir = make_model_dir("no-weights", text, 0);
  expect_load_error(dir, CX_STATUS_IO_ERROR, "model.safetensors", NULL);
  free(dir);

  dir = make_model_dir("no-config", NULL, 1);
  expect_load_error(dir, CX_STATUS_IO_ERROR, "config.json", NULL);
  free(dir);

  free(cfg_path);
  free(config);
  free(text);
}

int main(int argc, char **argv) {
  const tu_st_entry *e;
  char *cases_path;
  int64_t din, dout;

  if (argc != 4) {
    fprintf(stderr, "usage: %s GOLDEN_DIR EXAMPLE_MODEL_DIR SCRATCH_DIR\n", argv[0]);
    return 2;
  }
  golden_dir = argv[1];
  example_dir = argv[2];
  scratch_dir = argv[3];
  mkdir_p(scratch_dir);
  golden_model_dir = tu_path(golden_dir, "model");
  REQUIRE_OK(cx_model_load(golden_model_dir, NULL, &gm));
  REQUIRE_OK(cx_model_load(example_dir, NULL, &em));
  REQUIRE_OK(cx_model_dims(gm, &din, &dout));
  D = din;
  if (din != 24 || dout != 24) {
    fprintf(stderr, "FATAL: this test assumes the lstm_stack golden (d = 24), got %lld/%lld\n", (long long)din,
            (long long)dout);
    return 1;
  }
  cases_path = tu_path(golden_dir, "cases.safetensors");
  tu_st_load(cases_path, &cases);
  seq_x = tu_st_f32(&cases, "seq/x", &e);
  B = e->shape[0];
  T = e->shape[1];
  if (B != 3 || T != 9) {
    fprintf(stderr, "FATAL: this test assumes seq/x of shape [3, 9, 24]\n");
    return 1;
  }

  test_null_arguments();
  test_stale_and_wrong_kind();
  test_rejected_inputs();
  test_state_bytes();
  test_reset();
  test_dtypes_and_strides();
  test_dlpack();
  test_load_errors();

  cx_model_free(gm);
  cx_model_free(em);
  free(seq_x);
  tu_st_free(&cases);
  free(cases_path);
  free(golden_model_dir);
  return tu_finish("test_errors");
}
