/*
 * test_spike.c — the Perceiver spike decoder ("architecture": "spike_decoder") through the
 * C ABI (cx_model_decode), against the PyTorch reference goldens Tests/goldens/spike/decoder_small:
 *
 * - the cases "batch" (5 requests, an empty one in the middle), "empty" and "long" (300
 *   events), as int64 tensors, within 1e-5 * max(1, max|ref|);
 * - int32 / uint8 / int16 ids and a strided (every other element) neuron_ids tensor:
 *   bitwise the same velocity;
 * - a request decoded alone equals the same request inside the batch (<= 1e-6);
 * - bad input: NULL model/out/tensors, a stack model, ids outside the tables, negative
 *   values, bad offsets, float ids, 2-D ids, a non-CPU tensor — each refused with its
 *   status and a message naming the field, *velocity untouched; then the decoder still
 *   answers the golden;
 * - a spike stream (cx_spike_stream_*, 120-bin window, 10-bin stride) equals cx_model_decode
 *   on each window's events (<= 1e-5 relative) over 30 strides with a silent stretch;
 *   refused steps leave it unchanged (cx_spike_stream_info); it outlives its model handle.
 *
 *   test_spike SPIKE_GOLDEN_DIR STACK_MODEL_DIR
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static cx_model_t *model;
static const char *model_dir_for_stream;
static tu_st_file cases;
static char sentinel_storage;
#define SENTINEL ((cx_tensor_t *)(void *)&sentinel_storage)

typedef struct {
  int64_t *col[4]; /* neuron_id, time_bin, value, offsets (int64) */
  int64_t len[4];
  DLTensor dl[4];
  float *velocity;
  int64_t batch, outputs;
} case_t;

static const char *const COLS[4] = {"neuron_id", "time_bin", "value", "offsets"};

static void case_load(const char *name, case_t *c) {
  char key[64];
  const tu_st_entry *e;
  int k;
  int64_t i;
  memset(c, 0, sizeof *c);
  for (k = 0; k < 4; ++k) {
    float *f;
    snprintf(key, sizeof key, "%s/%s", name, COLS[k]);
    f = tu_st_f32(&cases, key, &e);
    c->len[k] = e->shape[0];
    c->col[k] = tu_xmalloc((size_t)(c->len[k] > 0 ? c->len[k] : 1) * sizeof(int64_t));
    for (i = 0; i < c->len[k]; ++i) c->col[k][i] = (int64_t)f[i];
    free(f);
    c->dl[k] = tu_dl(c->col[k], kDLInt, 64, 1, &c->len[k], NULL);
  }
  snprintf(key, sizeof key, "%s/velocity", name);
  c->velocity = tu_st_f32(&cases, key, &e);
  c->batch = e->shape[0];
  c->outputs = e->shape[1];
}

static void case_free(case_t *c) {
  int k;
  for (k = 0; k < 4; ++k) free(c->col[k]);
  free(c->velocity);
}

static cx_tensor_t *decode(const DLTensor *n, const DLTensor *t, const DLTensor *v, const DLTensor *o) {
  cx_tensor_t *y = NULL;
  REQUIRE_OK(cx_model_decode(model, n, t, v, o, &y));
  return y;
}

static void check_golden(const char *name) {
  case_t c;
  cx_tensor_t *y;
  const float *yf;
  int64_t n;
  char what[64];
  case_load(name, &c);
  y = decode(&c.dl[0], &c.dl[1], &c.dl[2], &c.dl[3]);
  yf = tu_tensor_floats(y, &n);
  CHECK(n == c.batch * c.outputs, "%s: %lld values, expected %lld", name, (long long)n, (long long)(c.batch * c.outputs));
  snprintf(what, sizeof what, "spike decoder '%s'", name);
  if (n == c.batch * c.outputs) tu_check_close(what, yf, c.velocity, (size_t)n);
  cx_tensor_free(y);
  case_free(&c);
}

/* Same ids in other integer dtypes and a strided view: bitwise the same output. */
static void check_dtypes(void) {
  case_t c;
  cx_tensor_t *ref, *y;
  const float *rf, *yf;
  int64_t n, m, i, E, stride2 = 2;
  int32_t *n32, *o32;
  int16_t *t16;
  uint8_t *v8;
  int64_t *wide;
  DLTensor dn, dt, dv, doff, dw;
  case_load("batch", &c);
  E = c.len[0];
  ref = decode(&c.dl[0], &c.dl[1], &c.dl[2], &c.dl[3]);
  rf = tu_tensor_floats(ref, &n);
  n32 = tu_xmalloc((size_t)E * sizeof *n32);
  t16 = tu_xmalloc((size_t)E * sizeof *t16);
  v8 = tu_xmalloc((size_t)E);
  o32 = tu_xmalloc((size_t)c.len[3] * sizeof *o32);
  wide = tu_xmalloc((size_t)(2 * E) * sizeof *wide);
  for (i = 0; i < E; ++i) {
    n32[i] = (int32_t)c.col[0][i];
    t16[i] = (int16_t)c.col[1][i];
    v8[i] = (uint8_t)c.col[2][i];
    wide[2 * i] = c.col[0][i];
    wide[2 * i + 1] = 9999; /* never read */
  }
  for (i = 0; i < c.len[3]; ++i) o32[i] = (int32_t)c.col[3][i];
  dn = tu_dl(n32, kDLInt, 32, 1, &c.len[0], NULL);
  dt = tu_dl(t16, kDLInt, 16, 1, &c.len[1], NULL);
  dv = tu_dl(v8, kDLUInt, 8, 1, &c.len[2], NULL);
  doff = tu_dl(o32, kDLInt, 32, 1, &c.len[3], NULL);
  y = decode(&dn, &dt, &dv, &doff);
  yf = tu_tensor_floats(y, &m);
  CHECK(m == n && memcmp(yf, rf, (size_t)n * sizeof(float)) == 0, "int32/int16/uint8 ids give another velocity");
  cx_tensor_free(y);
  dw = tu_dl(wide, kDLInt, 64, 1, &c.len[0], &stride2);
  y = decode(&dw, &c.dl[1], &c.dl[2], &c.dl[3]);
  yf = tu_tensor_floats(y, &m);
  CHECK(m == n && memcmp(yf, rf, (size_t)n * sizeof(float)) == 0, "strided neuron_ids give another velocity");
  cx_tensor_free(y);
  /* Each request alone equals its row in the batch. */
  for (i = 0; i < c.batch; ++i) {
    int64_t s = c.col[3][i], cnt = c.col[3][i + 1] - s, off[2] = {0, cnt}, two = 2;
    DLTensor a = tu_dl(c.col[0] + s, kDLInt, 64, 1, &cnt, NULL), b = tu_dl(c.col[1] + s, kDLInt, 64, 1, &cnt, NULL);
    DLTensor v = tu_dl(c.col[2] + s, kDLInt, 64, 1, &cnt, NULL), o = tu_dl(off, kDLInt, 64, 1, &two, NULL);
    y = decode(&a, &b, &v, &o);
    yf = tu_tensor_floats(y, &m);
    CHECK(m == c.outputs && tu_max_abs_diff(yf, rf + i * c.outputs, (size_t)c.outputs) <= 1e-6,
          "request %lld alone differs from its batch row", (long long)i);
    cx_tensor_free(y);
  }
  cx_tensor_free(ref);
  free(n32); free(t16); free(v8); free(o32); free(wide);
  case_free(&c);
}

static void check_bad_input(const char *stack_dir) {
  case_t c;
  cx_tensor_t *y = SENTINEL;
  cx_model_t *stack = NULL;
  int64_t saved, two = 2, shape2[2];
  float *fids;
  int64_t i;
  DLTensor bad;
  case_load("batch", &c);

  EXPECT_STATUS(cx_model_decode(NULL, &c.dl[0], &c.dl[1], &c.dl[2], &c.dl[3], &y), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_model_decode(model, &c.dl[0], &c.dl[1], &c.dl[2], &c.dl[3], NULL), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_model_decode(model, NULL, &c.dl[1], &c.dl[2], &c.dl[3], &y), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_MESSAGE_HAS("neuron_ids");
  REQUIRE_OK(cx_model_load(stack_dir, NULL, &stack));
  EXPECT_STATUS(cx_model_decode(stack, &c.dl[0], &c.dl[1], &c.dl[2], &c.dl[3], &y), CX_STATUS_UNSUPPORTED);
  EXPECT_MESSAGE_HAS("spike_decoder");
  cx_model_free(stack);

  saved = c.col[0][3];
  c.col[0][3] = 40; /* max_neurons is 40 */
  EXPECT_STATUS(cx_model_decode(model, &c.dl[0], &c.dl[1], &c.dl[2], &c.dl[3], &y), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_MESSAGE_HAS("max_neurons");
  c.col[0][3] = saved;
  saved = c.col[1][0];
  c.col[1][0] = 120;
  EXPECT_STATUS(cx_model_decode(model, &c.dl[0], &c.dl[1], &c.dl[2], &c.dl[3], &y), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_MESSAGE_HAS("max_time_bins");
  c.col[1][0] = saved;
  saved = c.col[2][5];
  c.col[2][5] = -1;
  EXPECT_STATUS(cx_model_decode(model, &c.dl[0], &c.dl[1], &c.dl[2], &c.dl[3], &y), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_MESSAGE_HAS("value -1");
  c.col[2][5] = saved;
  saved = c.col[3][2];
  c.col[3][2] = c.col[3][1] - 1; /* decreasing offsets */
  EXPECT_STATUS(cx_model_decode(model, &c.dl[0], &c.dl[1], &c.dl[2], &c.dl[3], &y), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_MESSAGE_HAS("decrease");
  c.col[3][2] = saved;
  c.dl[3].shape = &two; /* offsets [0, 7]: does not end at E */
  EXPECT_STATUS(cx_model_decode(model, &c.dl[0], &c.dl[1], &c.dl[2], &c.dl[3], &y), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_MESSAGE_HAS("event count");
  c.dl[3].shape = &c.len[3];

  fids = tu_xmalloc((size_t)c.len[0] * sizeof(float));
  for (i = 0; i < c.len[0]; ++i) fids[i] = (float)c.col[0][i];
  bad = tu_dl_f32(fids, 1, &c.len[0]);
  EXPECT_STATUS(cx_model_decode(model, &bad, &c.dl[1], &c.dl[2], &c.dl[3], &y), CX_STATUS_DTYPE_MISMATCH);
  EXPECT_MESSAGE_HAS("integer");
  free(fids);
  shape2[0] = 1;
  shape2[1] = c.len[0];
  bad = tu_dl(c.col[0], kDLInt, 64, 2, shape2, NULL);
  EXPECT_STATUS(cx_model_decode(model, &bad, &c.dl[1], &c.dl[2], &c.dl[3], &y), CX_STATUS_SHAPE_MISMATCH);
  EXPECT_MESSAGE_HAS("1-D");
  bad = c.dl[0];
  bad.device.device_type = kDLCUDA;
  EXPECT_STATUS(cx_model_decode(model, &bad, &c.dl[1], &c.dl[2], &c.dl[3], &y), CX_STATUS_DEVICE_MISMATCH);
  CHECK(y == SENTINEL, "a refused cx_model_decode wrote *velocity");
  case_free(&c);
  check_golden("batch"); /* still answers */
}

/* xorshift64: deterministic events for the stream check. */
static uint64_t rng_state = 88172645463325252ull;
static int64_t rnd(int64_t n) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (int64_t)(rng_state % (uint64_t)n);
}

static void stream_info(cx_spike_stream_t *s, int64_t v[4]) {
  REQUIRE_OK(cx_spike_stream_info(s, &v[0], &v[1], &v[2], &v[3]));
}

static void check_stream(const char *stack_dir) {
  enum { STRIDES = 30, MAXE = 120, CAP = STRIDES * MAXE };
  cx_spike_stream_options opts = cx_spike_stream_default_options();
  cx_spike_stream_t *s = NULL, *bad_s = NULL;
  cx_model_t *stack = NULL;
  int64_t *hb = tu_xmalloc(CAP * sizeof *hb), *hn = tu_xmalloc(CAP * sizeof *hn), *hv = tu_xmalloc(CAP * sizeof *hv);
  int64_t *wn = tu_xmalloc(CAP * sizeof *wn), *wt = tu_xmalloc(CAP * sizeof *wt), *wv = tu_xmalloc(CAP * sizeof *wv);
  int64_t sn[MAXE], st[MAXE], sv[MAXE], h = 0, k, i, before[4], after[4], one = 1;
  double worst = 0;
  cx_tensor_t *y = SENTINEL;

  CHECK(opts.window_bins == 120 && opts.stride_bins == 10 && opts.max_window_events == 8192, "default stream options");
  opts.max_window_events = 2000;
  REQUIRE_OK(cx_spike_stream_create(model, &opts, &s));
  for (k = 0; k < STRIDES; ++k) {
    int64_t E = (k >= 12 && k < 25) ? 0 : 10 + rnd(MAXE - 10), W = 0, start = 10 * (k + 1) - 120, off[2], two = 2;
    DLTensor a, b, c, d;
    cx_tensor_t *ys, *yr;
    const float *fs, *fr;
    int64_t ns, nr;
    for (i = 0; i < E; ++i) {
      sn[i] = rnd(40); st[i] = rnd(10); sv[i] = 1 + rnd(7);
      hn[h] = sn[i]; hb[h] = 10 * k + st[i]; hv[h] = sv[i]; ++h;
    }
    a = tu_dl(sn, kDLInt, 64, 1, &E, NULL); b = tu_dl(st, kDLInt, 64, 1, &E, NULL); c = tu_dl(sv, kDLInt, 64, 1, &E, NULL);
    REQUIRE_OK(cx_spike_stream_step(s, &a, &b, &c, &ys));
    for (i = 0; i < h; ++i)
      if (hb[i] >= start) { wn[W] = hn[i]; wt[W] = hb[i] - start; wv[W] = hv[i]; ++W; }
    off[0] = 0; off[1] = W;
    a = tu_dl(wn, kDLInt, 64, 1, &W, NULL); b = tu_dl(wt, kDLInt, 64, 1, &W, NULL);
    c = tu_dl(wv, kDLInt, 64, 1, &W, NULL); d = tu_dl(off, kDLInt, 64, 1, &two, NULL);
    yr = decode(&a, &b, &c, &d);
    fs = tu_tensor_floats(ys, &ns);
    fr = tu_tensor_floats(yr, &nr);
    CHECK(ns == nr && ns == 3, "stream step: %lld values, decode: %lld", (long long)ns, (long long)nr);
    for (i = 0; i < ns && i < nr; ++i) {
      double e = fabs((double)fs[i] - fr[i]) / fmax(1.0, fabs(fr[i]));
      if (e > worst) worst = e;
    }
    stream_info(s, after);
    CHECK(after[0] == 10 * (k + 1) && after[1] == W, "stream info: bins %lld events %lld, expected %lld %lld",
          (long long)after[0], (long long)after[1], (long long)(10 * (k + 1)), (long long)W);
    cx_tensor_free(ys);
    cx_tensor_free(yr);
  }
  printf("[spike stream] C: %d strides vs cx_model_decode per window: max rel error %.3g\n", STRIDES, worst);
  CHECK(worst <= 1e-5, "stream vs decode: %g", worst);

  /* Refused steps change nothing. */
  stream_info(s, before);
  {
    int64_t n1[1] = {40}, t1[1] = {0}, v1[1] = {1}, t2[1] = {10}, n2[1] = {1};
    DLTensor a = tu_dl(n1, kDLInt, 64, 1, &one, NULL), b = tu_dl(t1, kDLInt, 64, 1, &one, NULL);
    DLTensor c = tu_dl(v1, kDLInt, 64, 1, &one, NULL), b2 = tu_dl(t2, kDLInt, 64, 1, &one, NULL);
    DLTensor a2 = tu_dl(n2, kDLInt, 64, 1, &one, NULL);
    EXPECT_STATUS(cx_spike_stream_step(s, &a, &b, &c, &y), CX_STATUS_INVALID_ARGUMENT);
    EXPECT_MESSAGE_HAS("max_neurons");
    EXPECT_STATUS(cx_spike_stream_step(s, &a2, &b2, &c, &y), CX_STATUS_INVALID_ARGUMENT);
    EXPECT_MESSAGE_HAS("stride_bins");
    EXPECT_STATUS(cx_spike_stream_step(s, NULL, &b, &c, &y), CX_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(cx_spike_stream_step(s, &a2, &b, &c, NULL), CX_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(cx_spike_stream_step((cx_spike_stream_t *)(void *)model, &a2, &b, &c, &y), CX_STATUS_INVALID_HANDLE);
    EXPECT_MESSAGE_HAS("spike stream");
    EXPECT_STATUS(cx_spike_stream_step(NULL, &a2, &b, &c, &y), CX_STATUS_INVALID_HANDLE);
    CHECK(y == SENTINEL, "a refused stream step wrote *velocity");
    stream_info(s, after);
    CHECK(memcmp(before, after, sizeof before) == 0, "a refused step changed the stream");
  }
  EXPECT_STATUS(cx_spike_stream_info(NULL, NULL, NULL, NULL, NULL), CX_STATUS_INVALID_HANDLE);
  REQUIRE_OK(cx_spike_stream_reset(s));
  stream_info(s, after);
  CHECK(after[0] == 0 && after[1] == 0 && after[2] == 0, "reset: bins %lld events %lld pages %lld",
        (long long)after[0], (long long)after[1], (long long)after[2]);

  /* Options and models are checked. */
  opts = cx_spike_stream_default_options();
  opts.window_bins = 121; /* max_time_bins is 120 */
  EXPECT_STATUS(cx_spike_stream_create(model, &opts, &bad_s), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_MESSAGE_HAS("window_bins");
  opts = cx_spike_stream_default_options();
  opts.struct_size = 3;
  EXPECT_STATUS(cx_spike_stream_create(model, &opts, &bad_s), CX_STATUS_INVALID_ARGUMENT);
  REQUIRE_OK(cx_model_load(stack_dir, NULL, &stack));
  EXPECT_STATUS(cx_spike_stream_create(stack, NULL, &bad_s), CX_STATUS_UNSUPPORTED);
  cx_model_free(stack);
  CHECK(bad_s == NULL, "a refused open wrote *out");

  /* The stream outlives its model handle. */
  {
    cx_model_t *m2 = NULL;
    cx_spike_stream_t *s2 = NULL;
    int64_t n1[1] = {3}, t1[1] = {9}, v1[1] = {2};
    DLTensor a = tu_dl(n1, kDLInt, 64, 1, &one, NULL), b = tu_dl(t1, kDLInt, 64, 1, &one, NULL);
    DLTensor c = tu_dl(v1, kDLInt, 64, 1, &one, NULL);
    char *dir = tu_path(model_dir_for_stream, "model");
    REQUIRE_OK(cx_model_load(dir, NULL, &m2));
    REQUIRE_OK(cx_spike_stream_create(m2, NULL, &s2));
    cx_model_free(m2);
    REQUIRE_OK(cx_spike_stream_step(s2, &a, &b, &c, &y));
    cx_tensor_free(y);
    cx_spike_stream_free(s2);
    free(dir);
  }
  cx_spike_stream_free(s);
  cx_spike_stream_free(NULL);
  free(hb); free(hn); free(hv); free(wn); free(wt); free(wv);
}

int main(int argc, char **argv) {
  char *model_dir, *cases_path;
  if (argc != 3) {
    fprintf(stderr, "usage: %s SPIKE_GOLDEN_DIR STACK_MODEL_DIR\n", argv[0]);
    return 2;
  }
  model_dir = tu_path(argv[1], "model");
  cases_path = tu_path(argv[1], "cases.safetensors");
  REQUIRE_OK(cx_model_load(model_dir, NULL, &model));
  tu_st_load(cases_path, &cases);
  check_golden("batch");
  check_golden("empty");
  check_golden("long");
  check_dtypes();
  check_bad_input(argv[2]);
  model_dir_for_stream = argv[1];
  check_stream(argv[2]);
  cx_model_free(model);
  tu_st_free(&cases);
  free(model_dir);
  free(cases_path);
  return tu_finish("test_spike");
}
