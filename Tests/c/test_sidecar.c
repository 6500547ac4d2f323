/*
 * test_sidecar.c — memory sidecars ("architecture": "cortex_sidecar") through the C ABI,
 * against the PyTorch reference goldens Tests/goldens/sidecars/model_{gdn,fast_weight}:
 *
 * - the golden's calls (seq1, step1, step2, step3, seq2 over layers 1 and 3, batch 2):
 *   every output, the fast-weight signals after cx_session_observe(losses), and the final
 *   state tensors (cx_session_get_state), within 1e-5 * max(1, max|ref|);
 * - cx_session_observe from logits + tokens (loss, entropy, EMA, phase, rewards) and the
 *   segmenter (cx_session_segment_count / cx_session_segment), also across a save/restore
 *   taken while a segment is open;
 * - cx_model_forward_sidecar_into with strided inputs and strided, offset outputs (bitwise equal
 *   to cx_model_forward_sidecar, padding untouched);
 * - cx_session_to_bytes / from_bytes mid-conversation: the continuation is bitwise equal
 *   to an uninterrupted run; fork; reset with int32, bool and NULL masks;
 * - the SQLite store (cx_store_*) in a fresh temporary directory: save, load, list, delete,
 *   replace, NOT_FOUND, STATE_MISMATCH for the other sidecar, TTL, LRU eviction, max_bytes;
 * - bad input (NULL and wrong-kind handles, unhooked layer, wrong shapes and dtypes, the
 *   other model's session, damaged bytes): refused with a message, the session's bytes,
 *   out-params and caller buffers unchanged.
 *
 *   test_sidecar GDN_GOLDEN_DIR FAST_WEIGHT_GOLDEN_DIR SCRATCH_DIR
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

#define NCALLS 5
#define NLAYERS 2
static const char *const CALLS[NCALLS] = {"seq1", "step1", "step2", "step3", "seq2"};
static const int32_t LAYERS[NLAYERS] = {1, 3};
static const char *const GDN_STATES[] = {"conv_q", "conv_k", "conv_v", "S", "win_k", "win_v", "win_n"};
static const char *const FW_STATES[] = {"U", "V"};

typedef struct {
  const char *kind;
  int fw; /* fast weights: signals, observe, segments */
  cx_model_t *model;
  tu_st_file cases;
  double worst_y, worst_signals, worst_state; /* max |err| over the golden */
} golden_t;

static golden_t G[2]; /* [0] gdn, [1] fast_weight */
static int64_t B = 2, D = 24;

/* Distinct non-NULL values for out-params that must stay untouched. */
static char sentinel_storage[2];
#define SENTINEL_TENSOR ((cx_tensor_t *)(void *)&sentinel_storage[0])
#define SENTINEL_SESSION ((cx_session_t *)(void *)&sentinel_storage[1])

/* ------------------------------------------------------------------ helpers -- */

/* A reference tensor of the cases file with a DLTensor over it. Not copyable (dl.shape
 * points into the struct). */
typedef struct {
  float *data;
  int64_t shape[TU_MAX_RANK];
  int64_t numel;
  DLTensor dl;
} ref_t;

static int ref_load(const golden_t *g, const char *key, ref_t *r) {
  const tu_st_entry *e = tu_st_find(&g->cases, key);
  memset(r, 0, sizeof *r);
  if (e == NULL) return 0;
  r->data = tu_st_f32(&g->cases, key, &e);
  memcpy(r->shape, e->shape, sizeof r->shape);
  r->numel = tu_st_numel(e);
  r->dl = tu_dl_f32(r->data, e->ndim, r->shape);
  return 1;
}

static void ref_need(const golden_t *g, const char *key, ref_t *r) {
  if (!ref_load(g, key, r)) {
    fprintf(stderr, "FATAL: %s golden lacks '%s'\n", g->kind, key);
    exit(1);
  }
}

static void ref_free(ref_t *r) {
  free(r->data);
  r->data = NULL;
}

/* The golden tolerance; prints the error. Returns the error. */
static cx_session_t *new_session(const golden_t *g, const char *id, int64_t batch) {
  cx_session_t *s = NULL;
  REQUIRE_OK(cx_session_create(g->model, id, batch, &s));
  return s;
}

static int session_id_is(cx_session_t *s, const char *want) {
  char buf[300];
  size_t needed = 0;
  if (cx_session_id(s, buf, sizeof buf, &needed) != CX_STATUS_OK) return 0;
  return needed == strlen(want) + 1 && strcmp(buf, want) == 0;
}

/* The golden's calls [from, to) on s. check: compare with the reference (outputs,
 * signals after observe). outs (may be NULL): every output appended at *nout. */
static void run_calls(golden_t *g, cx_session_t *s, int from, int to, int check, float *outs, size_t *nout) {
  char key[96], what[96];
  int c, l;
  for (c = from; c < to; ++c) {
    ref_t losses;
    for (l = 0; l < NLAYERS; ++l) {
      ref_t h, sig, yref;
      int has_sig;
      cx_tensor_t *y = NULL;
      const float *yf;
      int64_t n;
      snprintf(key, sizeof key, "%s/%d/h", CALLS[c], (int)LAYERS[l]);
      ref_need(g, key, &h);
      snprintf(key, sizeof key, "%s/%d/signals", CALLS[c], (int)LAYERS[l]);
      has_sig = ref_load(g, key, &sig);
      REQUIRE_OK(cx_model_forward_sidecar(g->model, LAYERS[l], &h.dl, s, has_sig ? &sig.dl : NULL, &y));
      yf = tu_tensor_floats(y, &n);
      CHECK(n == h.numel, "%s %s layer %d: %lld outputs for %lld inputs", g->kind, CALLS[c], (int)LAYERS[l],
            (long long)n, (long long)h.numel);
      if (check) {
        const DLTensor *v = NULL;
        double err;
        REQUIRE_OK(cx_tensor_view(y, &v));
        CHECK(v->ndim == h.dl.ndim && memcmp(v->shape, h.shape, (size_t)v->ndim * sizeof(int64_t)) == 0,
              "%s %s: y has h's shape", g->kind, CALLS[c]);
        snprintf(key, sizeof key, "%s/%d/y", CALLS[c], (int)LAYERS[l]);
        ref_need(g, key, &yref);
        snprintf(what, sizeof what, "%s %s layer %d y", g->kind, CALLS[c], (int)LAYERS[l]);
        err = tu_check_close(what, yf, yref.data, (size_t)yref.numel);
        if (err > g->worst_y) g->worst_y = err;
        ref_free(&yref);
      }
      if (outs) {
        memcpy(outs + *nout, yf, (size_t)n * sizeof(float));
        *nout += (size_t)n;
      }
      cx_tensor_free(y);
      ref_free(&h);
      ref_free(&sig);
    }
    snprintf(key, sizeof key, "%s/losses", CALLS[c]);
    if (ref_load(g, key, &losses)) {
      REQUIRE_OK(cx_session_observe(s, NULL, NULL, &losses.dl, NULL));
      if (check) {
        ref_t after;
        cx_tensor_t *sig = NULL;
        const float *sf;
        int64_t n;
        double err;
        snprintf(key, sizeof key, "%s/signals_after", CALLS[c]);
        ref_need(g, key, &after);
        REQUIRE_OK(cx_session_signals(s, &sig));
        sf = tu_tensor_floats(sig, &n);
        CHECK(n == after.numel, "signals: %lld values", (long long)n);
        snprintf(what, sizeof what, "%s %s signals after observe", g->kind, CALLS[c]);
        err = tu_check_close(what, sf, after.data, (size_t)after.numel);
        if (err > g->worst_signals) g->worst_signals = err;
        cx_tensor_free(sig);
        ref_free(&after);
      }
      ref_free(&losses);
    }
  }
}

/* Floats all the golden's calls output (both layers). */
static size_t total_outputs(const golden_t *g) {
  char key[64];
  size_t n = 0;
  int c, l;
  for (c = 0; c < NCALLS; ++c) {
    for (l = 0; l < NLAYERS; ++l) {
      snprintf(key, sizeof key, "%s/%d/h", CALLS[c], (int)LAYERS[l]);
      n += (size_t)tu_st_numel(tu_st_find(&g->cases, key));
    }
  }
  return n;
}

static void sleep_seconds(double s) {
  struct timespec ts;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* -------------------------------------------------------------- the golden -- */

static void test_golden(golden_t *g) {
  cx_session_t *s = new_session(g, "golden", B);
  const char *const *names = g->fw ? FW_STATES : GDN_STATES;
  int count = g->fw ? 2 : 7, l, i;
  int64_t batch = 0, tokens = -1, bytes0 = 0, bytes1 = 0;
  char key[96], what[96];

  printf("%s golden: calls and final state\n", g->kind);
  REQUIRE_OK(cx_session_info(s, &batch, &tokens, &bytes0));
  CHECK(batch == B && tokens == 0 && bytes0 > 0, "fresh session info %lld %lld %lld", (long long)batch,
        (long long)tokens, (long long)bytes0);
  CHECK(session_id_is(s, "golden"), "session id");
  run_calls(g, s, 0, NCALLS, 1, NULL, NULL);
  REQUIRE_OK(cx_session_info(s, &batch, &tokens, &bytes1));
  CHECK(tokens == 9 + 3 + 5, "tokens seen: %lld", (long long)tokens);
  CHECK(bytes1 == bytes0, "memory is constant in the tokens seen (%lld -> %lld)", (long long)bytes0, (long long)bytes1);
  for (l = 0; l < NLAYERS; ++l) {
    for (i = 0; i < count; ++i) {
      ref_t want;
      cx_tensor_t *t = NULL;
      const DLTensor *v = NULL;
      const float *tf;
      int64_t n;
      double err;
      snprintf(key, sizeof key, "final/%d/%s", (int)LAYERS[l], names[i]);
      ref_need(g, key, &want);
      REQUIRE_OK(cx_session_get_state(s, LAYERS[l], names[i], &t));
      REQUIRE_OK(cx_tensor_view(t, &v));
      CHECK(v->ndim == 2 && v->shape[0] == B && v->shape[0] * v->shape[1] == want.numel,
            "state %s of layer %d: [B, n] with n = %lld", names[i], (int)LAYERS[l], (long long)(want.numel / B));
      tf = tu_tensor_floats(t, &n);
      snprintf(what, sizeof what, "%s final layer %d %s", g->kind, (int)LAYERS[l], names[i]);
      err = n == want.numel ? tu_check_close(what, tf, want.data, (size_t)n) : 1e9;
      if (err > g->worst_state) g->worst_state = err;
      cx_tensor_free(t);
      ref_free(&want);
    }
  }
  if (g->fw) {
    /* The fast weights moved (the golden is not trivially the initial state). */
    cx_session_t *fresh = new_session(g, "fresh", B);
    cx_tensor_t *a = NULL, *b = NULL;
    int64_t na, nb;
    const float *fa, *fb;
    REQUIRE_OK(cx_session_get_state(s, 1, "U", &a));
    REQUIRE_OK(cx_session_get_state(fresh, 1, "U", &b));
    fa = tu_tensor_floats(a, &na);
    fb = tu_tensor_floats(b, &nb);
    CHECK(na == nb && tu_max_abs_diff(fa, fb, (size_t)na) > 1e-2, "the fast weights U moved");
    cx_tensor_free(a);
    cx_tensor_free(b);
    cx_session_free(fresh);
  }
  cx_session_free(s);
}

/* ------------------------------------------------ observe, signals, segments -- */

static double entropy_and_loss(const float *logits, int64_t V, int64_t token, double *loss) {
  double m = -INFINITY, z = 0, h = 0, logz;
  int64_t i;
  for (i = 0; i < V; ++i)
    if (logits[i] > m) m = logits[i];
  for (i = 0; i < V; ++i) z += exp((double)logits[i] - m);
  logz = m + log(z);
  for (i = 0; i < V; ++i) {
    double lp = (double)logits[i] - logz;
    h -= exp(lp) * lp;
  }
  *loss = logz - (double)logits[token];
  return h;
}

static void expect_signals(cx_session_t *s, const double *want, const char *what) {
  cx_tensor_t *t = NULL;
  const float *f;
  int64_t n, i;
  double err = 0;
  REQUIRE_OK(cx_session_signals(s, &t));
  f = tu_tensor_floats(t, &n);
  CHECK(n == B * 4, "%s: %lld signal values", what, (long long)n);
  for (i = 0; i < n && i < B * 4; ++i) {
    double d = fabs((double)f[i] - want[i]);
    if (d > err) err = d;
  }
  printf("  %-40s max|err| %.3e (tolerance 1e-5)\n", what, err);
  CHECK(err <= 1e-5, "%s: max |err| %g", what, err);
  cx_tensor_free(t);
}

static void test_observe_logits(golden_t *g) {
  /* B = 2 streams, V = 4 classes. Decay 0.99 (default), period 16 (the golden's config). */
  float logits1[8] = {2.0f, 0.5f, -1.0f, 0.0f, -0.3f, 0.1f, 1.7f, 0.9f};
  float logits2[8] = {0.2f, 3.0f, -2.0f, 0.4f, 1.0f, 1.0f, 1.0f, 1.0f};
  int64_t tokens1[2] = {1, 2}, tokens2[2] = {3, 0}, shape_l[2] = {2, 4}, shape_b[1] = {2};
  int32_t tokens_bad[2] = {1, 4};
  float rewards[2] = {0.5f, -1.0f}, losses[2] = {0.75f, 2.5f};
  double want[8], ema[2], l1, l2, e;
  const double pi = 3.14159265358979323846, decay = 0.99;
  int b;
  cx_session_t *s = new_session(g, "obs", B);
  DLTensor L1 = tu_dl_f32(logits1, 2, shape_l), L2 = tu_dl_f32(logits2, 2, shape_l);
  DLTensor T1 = tu_dl(tokens1, kDLInt, 64, 1, shape_b, NULL), T2 = tu_dl(tokens2, kDLInt, 64, 1, shape_b, NULL);
  DLTensor TB = tu_dl(tokens_bad, kDLInt, 32, 1, shape_b, NULL);
  DLTensor R = tu_dl_f32(rewards, 1, shape_b), LS = tu_dl_f32(losses, 1, shape_b);

  printf("%s: observe from logits and tokens\n", g->kind);
  /* Before any observe: zeros. */
  memset(want, 0, sizeof want);
  expect_signals(s, want, "signals before observe");

  /* 1: the EMA starts at the first loss (surprise 0); uncertainty = entropy; phase sin(0). */
  REQUIRE_OK(cx_session_observe(s, &L1, &T1, NULL, NULL));
  for (b = 0; b < 2; ++b) {
    want[b * 4 + 1] = entropy_and_loss(logits1 + b * 4, 4, tokens1[b], &l1);
    ema[b] = l1;
    want[b * 4 + 0] = 0;
    want[b * 4 + 2] = 0;
    want[b * 4 + 3] = 0;
  }
  expect_signals(s, want, "observe 1 (logits, tokens)");

  /* 2: with rewards. */
  REQUIRE_OK(cx_session_observe(s, &L2, &T2, NULL, &R));
  for (b = 0; b < 2; ++b) {
    e = entropy_and_loss(logits2 + b * 4, 4, tokens2[b], &l2);
    ema[b] = decay * ema[b] + (1 - decay) * l2;
    want[b * 4 + 0] = l2 - ema[b];
    want[b * 4 + 1] = e;
    want[b * 4 + 2] = rewards[b];
    want[b * 4 + 3] = sin(2 * pi * 1 / 16);
  }
  expect_signals(s, want, "observe 2 (logits, tokens, rewards)");

  /* 3: explicit losses win over the logits' loss; the logits still give the entropy. */
  REQUIRE_OK(cx_session_observe(s, &L1, &T1, &LS, NULL));
  for (b = 0; b < 2; ++b) {
    e = entropy_and_loss(logits1 + b * 4, 4, tokens1[b], &l1);
    ema[b] = decay * ema[b] + (1 - decay) * losses[b];
    want[b * 4 + 0] = losses[b] - ema[b];
    want[b * 4 + 1] = e;
    want[b * 4 + 2] = 0;
    want[b * 4 + 3] = sin(2 * pi * 2 / 16);
  }
  expect_signals(s, want, "observe 3 (losses and logits)");

  /* 4: losses only: uncertainty 0. */
  REQUIRE_OK(cx_session_observe(s, NULL, NULL, &LS, &R));
  for (b = 0; b < 2; ++b) {
    ema[b] = decay * ema[b] + (1 - decay) * losses[b];
    want[b * 4 + 0] = losses[b] - ema[b];
    want[b * 4 + 1] = 0;
    want[b * 4 + 2] = rewards[b];
    want[b * 4 + 3] = sin(2 * pi * 3 / 16);
  }
  expect_signals(s, want, "observe 4 (losses, rewards)");

  /* Refusals leave the signals as they were. */
  EXPECT_STATUS(cx_session_observe(s, &L1, &TB, NULL, NULL), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_MESSAGE_HAS("tokens");
  EXPECT_STATUS(cx_session_observe(s, NULL, &T1, NULL, NULL), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_session_observe(s, &L1, NULL, NULL, NULL), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_MESSAGE_HAS("needs losses");
  expect_signals(s, want, "signals after refused observes");
  cx_session_free(s);
}

/* The segmenter: a loss spike opens a segment, a return below the EMA closes it. */
static void test_segments(golden_t *g) {
  static const float loss_seq[11] = {1, 1, 1, 1, 1, 5, 5, 4, 0.5f, 0.5f, 0.5f};
  float h[2][24], seen[11][48], loss, reward = 0.5f;
  int64_t one[1] = {1}, hs[2] = {1, 24}, count = -1, start = -1, end = -1, n;
  int t, l, i, j;
  unsigned state = 12345u;
  cx_session_t *s = new_session(g, "seg", 1), *r = NULL, *mid = NULL;
  cx_tensor_t *hm = NULL, *hv = NULL, *du = NULL, *dv = NULL, *sig = NULL;
  DLTensor L = tu_dl_f32(&loss, 1, one), R = tu_dl_f32(&reward, 1, one);
  double err_mean = 0, err_var = 0;
  const float *f;
  unsigned char *blob;
  size_t len;

  printf("%s: segments\n", g->kind);
  for (t = 0; t < 11; ++t) {
    for (l = 0; l < NLAYERS; ++l) {
      cx_tensor_t *y = NULL;
      DLTensor x;
      for (i = 0; i < 24; ++i) {
        state = state * 1664525u + 1013904223u;
        h[l][i] = (float)((double)(state >> 8) / 16777216.0 * 2 - 1);
        seen[t][l * 24 + i] = h[l][i];
      }
      x = tu_dl_f32(h[l], 2, hs);
      REQUIRE_OK(cx_model_forward_sidecar(g->model, LAYERS[l], &x, s, NULL, &y));
      cx_tensor_free(y);
      if (mid != NULL) {
        REQUIRE_OK(cx_model_forward_sidecar(g->model, LAYERS[l], &x, mid, NULL, &y));
        cx_tensor_free(y);
      }
    }
    loss = loss_seq[t];
    REQUIRE_OK(cx_session_observe(s, NULL, NULL, &L, &R));
    if (mid != NULL) REQUIRE_OK(cx_session_observe(mid, NULL, NULL, &L, &R));
    if (t == 6) {
      /* Save and restore while the segment is open: the copy must close it identically. */
      REQUIRE_OK(cx_session_segment_count(s, 0, &count));
      CHECK(count == 0, "the segment is still open at t = 6");
      blob = tu_session_bytes(s, &len);
      REQUIRE_OK(cx_session_from_bytes(g->model, blob, len, NULL, &mid));
      free(blob);
    }
  }
  blob = tu_session_bytes(s, &len);
  CHECK(tu_session_equals(mid, blob, len), "a session restored mid-segment ends in exactly the same bytes");
  free(blob);
  cx_session_free(mid);
  REQUIRE_OK(cx_session_signals(s, &sig));
  f = tu_tensor_floats(sig, &n);
  CHECK(n == 4 && f[2] == 0.5f, "reward in the signals");
  cx_tensor_free(sig);
  REQUIRE_OK(cx_session_segment_count(s, 0, &count));
  CHECK(count == 1, "one segment, got %lld", (long long)count);
  REQUIRE_OK(cx_session_segment(s, 0, 0, &start, &end, &hm, &hv, &du, &dv));
  CHECK(start == 5 && end == 8, "segment [%lld, %lld], want [5, 8]", (long long)start, (long long)end);
  f = tu_tensor_floats(hm, &n);
  CHECK(n == 48, "h_mean has L*D values");
  for (j = 0; j < 48 && n == 48; ++j) {
    double m = 0, v = 0;
    for (t = 5; t <= 8; ++t) m += seen[t][j];
    m /= 4;
    for (t = 5; t <= 8; ++t) v += (seen[t][j] - m) * (seen[t][j] - m);
    v /= 4;
    if (fabs(f[j] - m) > err_mean) err_mean = fabs(f[j] - m);
    if (fabs(tu_tensor_floats(hv, NULL)[j] - v) > err_var) err_var = fabs(tu_tensor_floats(hv, NULL)[j] - v);
  }
  printf("  %-40s max|err| %.3e / %.3e\n", "segment h_mean / h_var", err_mean, err_var);
  CHECK(err_mean <= 1e-6 && err_var <= 1e-5, "segment statistics: %g %g", err_mean, err_var);
  f = tu_tensor_floats(du, &n);
  CHECK(n == 2 * 2 * 8 * 3 && tu_max_abs(f, (size_t)n) > 0, "delta_u: %lld values, non-zero", (long long)n);
  f = tu_tensor_floats(dv, &n);
  CHECK(n == 2 * 2 * 3 * 8, "delta_v: %lld values", (long long)n);
  cx_tensor_free(hm);
  cx_tensor_free(hv);
  cx_tensor_free(du);
  cx_tensor_free(dv);
  hm = SENTINEL_TENSOR;
  EXPECT_STATUS(cx_session_segment(s, 0, 1, &start, &end, &hm, &hv, &du, &dv), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_session_segment(s, 0, -1, &start, &end, &hm, &hv, &du, &dv), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_session_segment(s, 0, 0, &start, &end, NULL, &hv, &du, &dv), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_session_segment_count(s, 1, &count), CX_STATUS_INVALID_ARGUMENT);
  CHECK(hm == SENTINEL_TENSOR && count == 1, "failed segment calls leave out-params alone");

  /* Segments survive a save/restore. */
  blob = tu_session_bytes(s, &len);
  REQUIRE_OK(cx_session_from_bytes(g->model, blob, len, NULL, &r));
  REQUIRE_OK(cx_session_segment_count(r, 0, &count));
  CHECK(count == 1, "restored segments");
  REQUIRE_OK(cx_session_segment(r, 0, 0, &start, &end, &hm, &hv, &du, &dv));
  CHECK(start == 5 && end == 8, "restored segment bounds");
  cx_tensor_free(hm);
  cx_tensor_free(hv);
  cx_tensor_free(du);
  cx_tensor_free(dv);
  CHECK(tu_session_equals(r, blob, len), "restored session re-encodes to the same bytes");
  free(blob);
  cx_session_free(r);
  cx_session_free(s);
}

/* ------------------------------------------------------- forward_into, strides -- */

static void test_forward_into(golden_t *g) {
  ref_t h, sig, hs;
  int has_sig;
  int64_t T, b, t, d, n, i;
  int64_t strides_h[3], strides_y[3], shape_y[3], strides_s[2], shape_bad[3];
  cx_session_t *a = new_session(g, "into", B), *c = new_session(g, "into", B);
  cx_tensor_t *ya = NULL;
  const float *ref;
  float *hT, *ybuf, *ystep, *ysave;
  const float PAD = 777.0f;
  const int64_t OFF = 2, P = D + 3; /* output: byte_offset 2 floats, rows padded to D + 3 */
  size_t ylen, alen, clen;
  unsigned char *ab, *cb;
  DLTensor hx, yx, ys;
  int mism = 0, pad_ok = 1;

  printf("%s: cx_model_forward_sidecar_into with strides\n", g->kind);
  ref_need(g, "seq1/1/h", &h);
  has_sig = ref_load(g, "seq1/1/signals", &sig);
  T = h.shape[1];
  /* The reference output: the allocating call, compact h. */
  REQUIRE_OK(cx_model_forward_sidecar(g->model, 1, &h.dl, a, has_sig ? &sig.dl : NULL, &ya));
  ref = tu_tensor_floats(ya, &n);

  /* h stored time-major [T][B][D] (strides D, B*D, 1). */
  hT = tu_xmalloc((size_t)(B * T * D) * sizeof(float));
  for (b = 0; b < B; ++b)
    for (t = 0; t < T; ++t)
      for (d = 0; d < D; ++d) hT[(t * B + b) * D + d] = h.data[(b * T + t) * D + d];
  strides_h[0] = D;
  strides_h[1] = B * D;
  strides_h[2] = 1;
  hx = tu_dl(hT, kDLFloat, 32, 3, h.shape, strides_h);
  /* y time-major with padded rows, at a byte_offset. */
  ylen = (size_t)(OFF + T * B * P);
  ybuf = tu_xmalloc(ylen * sizeof(float));
  ysave = tu_xmalloc(ylen * sizeof(float));
  for (i = 0; i < (int64_t)ylen; ++i) ybuf[i] = PAD;
  shape_y[0] = B;
  shape_y[1] = T;
  shape_y[2] = D;
  strides_y[0] = P;
  strides_y[1] = B * P;
  strides_y[2] = 1;
  yx = tu_dl(ybuf, kDLFloat, 32, 3, shape_y, strides_y);
  yx.byte_offset = (uint64_t)OFF * sizeof(float);

  /* Refusals first: the buffer and the session stay as they were. */
  ab = tu_session_bytes(c, &alen);
  memcpy(ysave, ybuf, ylen * sizeof(float));
  shape_bad[0] = B;
  shape_bad[1] = T;
  shape_bad[2] = D - 1;
  {
    DLTensor bad = yx;
    bad.shape = shape_bad;
    EXPECT_STATUS(cx_model_forward_sidecar_into(g->model, 1, &hx, c, has_sig ? &sig.dl : NULL, &bad), CX_STATUS_SHAPE_MISMATCH);
    bad = yx;
    bad.dtype.bits = 64;
    EXPECT_STATUS(cx_model_forward_sidecar_into(g->model, 1, &hx, c, has_sig ? &sig.dl : NULL, &bad), CX_STATUS_DTYPE_MISMATCH);
    bad = yx;
    bad.device.device_type = kDLCUDA;
    EXPECT_STATUS(cx_model_forward_sidecar_into(g->model, 1, &hx, c, has_sig ? &sig.dl : NULL, &bad), CX_STATUS_DEVICE_MISMATCH);
    EXPECT_STATUS(cx_model_forward_sidecar_into(g->model, 1, &hx, c, has_sig ? &sig.dl : NULL, NULL), CX_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(cx_model_forward_sidecar_into(g->model, 2, &hx, c, has_sig ? &sig.dl : NULL, &yx), CX_STATUS_INVALID_ARGUMENT);
  }
  CHECK(memcmp(ysave, ybuf, ylen * sizeof(float)) == 0, "refused forward_into leaves y's buffer alone");
  CHECK(tu_session_equals(c, ab, alen), "refused forward_into leaves the session alone");
  free(ab);

  REQUIRE_OK(cx_model_forward_sidecar_into(g->model, 1, &hx, c, has_sig ? &sig.dl : NULL, &yx));
  for (i = 0; i < OFF; ++i) pad_ok &= ybuf[i] == PAD;
  for (b = 0; b < B; ++b)
    for (t = 0; t < T; ++t) {
      const float *row = ybuf + OFF + t * B * P + b * P;
      mism += memcmp(row, ref + (b * T + t) * D, (size_t)D * sizeof(float)) != 0;
      for (d = D; d < P; ++d) pad_ok &= row[d] == PAD;
    }
  CHECK(mism == 0, "strided forward_into equals forward bitwise (%d rows differ)", mism);
  CHECK(pad_ok, "forward_into writes only y's elements (padding and offset untouched)");
  cx_tensor_free(ya);

  /* A decode step into a column-major [B, D] (strides 1, B). */
  ref_need(g, "step1/1/h", &hs);
  REQUIRE_OK(cx_model_forward_sidecar(g->model, 1, &hs.dl, a, NULL, &ya));
  ref = tu_tensor_floats(ya, &n);
  ystep = tu_xmalloc((size_t)(B * D) * sizeof(float));
  strides_s[0] = 1;
  strides_s[1] = B;
  ys = tu_dl(ystep, kDLFloat, 32, 2, hs.shape, strides_s);
  REQUIRE_OK(cx_model_forward_sidecar_into(g->model, 1, &hs.dl, c, NULL, &ys));
  mism = 0;
  for (b = 0; b < B; ++b)
    for (d = 0; d < D; ++d) mism += memcmp(&ystep[d * B + b], &ref[b * D + d], sizeof(float)) != 0;
  CHECK(mism == 0, "column-major step output equals forward bitwise (%d differ)", mism);
  cx_tensor_free(ya);

  /* Both sessions saw the same: the same bytes (same id). */
  ab = tu_session_bytes(a, &alen);
  cb = tu_session_bytes(c, &clen);
  CHECK(alen == clen && memcmp(ab, cb, alen) == 0, "forward_into advances the session like forward");
  free(ab);
  free(cb);

  free(hT);
  free(ybuf);
  free(ysave);
  free(ystep);
  ref_free(&h);
  ref_free(&sig);
  ref_free(&hs);
  cx_session_free(a);
  cx_session_free(c);
}

/* ------------------------------------------------ bytes, fork, reset -- */

static void test_resume(golden_t *g) {
  size_t total = total_outputs(g), nw = 0, nr = 0, len, wlen;
  float *whole = tu_xmalloc(total * sizeof(float)), *parts = tu_xmalloc(total * sizeof(float));
  cx_session_t *w = new_session(g, "r", B), *r = new_session(g, "r", B), *back = NULL, *other = NULL;
  unsigned char *blob, *wb;
  int64_t batch = 0, tokens = 0, bytes = 0;

  printf("%s: save mid-conversation, restore, continue\n", g->kind);
  run_calls(g, w, 0, NCALLS, 0, whole, &nw);
  run_calls(g, r, 0, 2, 0, parts, &nr);
  blob = tu_session_bytes(r, &len);
  cx_session_free(r);
  REQUIRE_OK(cx_session_from_bytes(g->model, blob, len, NULL, &back));
  CHECK(session_id_is(back, "r"), "restored id is the saved one");
  REQUIRE_OK(cx_session_info(back, &batch, &tokens, &bytes));
  CHECK(batch == B && tokens == 9 + 1, "restored info: batch %lld, tokens %lld", (long long)batch, (long long)tokens);
  CHECK(tu_session_equals(back, blob, len), "restored session re-encodes to the same bytes");
  run_calls(g, back, 2, NCALLS, 0, parts, &nr);
  CHECK(nr == nw && nw == total, "output counts %zu %zu %zu", nr, nw, total);
  CHECK(memcmp(whole, parts, total * sizeof(float)) == 0, "the restored continuation is bitwise equal to an uninterrupted run");
  wb = tu_session_bytes(w, &wlen);
  CHECK(tu_session_equals(back, wb, wlen), "and ends in exactly the same session bytes");
  printf("  %zu outputs after the restore bitwise equal; final session bytes (%zu) equal\n", total, wlen);
  REQUIRE_OK(cx_session_from_bytes(g->model, blob, len, "other", &other));
  CHECK(session_id_is(other, "other"), "from_bytes with an id renames");
  free(blob);
  free(wb);
  free(whole);
  free(parts);
  cx_session_free(w);
  cx_session_free(back);
  cx_session_free(other);
}

static void test_fork_reset(golden_t *g) {
  cx_session_t *s = new_session(g, "s", B), *f = NULL, *fresh = NULL, *ref = NULL;
  ref_t h2, h1;
  cx_tensor_t *ya = NULL, *yb = NULL;
  const float *fa, *fb;
  int64_t na, nb, T, shape_m[1] = {2}, shape_m3[1] = {3};
  int32_t mask_i32[2] = {0, 1}, mask3[3] = {1, 1, 1};
  uint8_t mask_bool[2] = {1, 1};
  unsigned char *before, *fb_bytes, *rb;
  size_t blen, flen, rlen;
  DLTensor M = tu_dl(mask_i32, kDLInt, 32, 1, shape_m, NULL), M3 = tu_dl(mask3, kDLInt, 32, 1, shape_m3, NULL);
  DLTensor MB = tu_dl(mask_bool, kDLBool, 8, 1, shape_m, NULL), MU8 = tu_dl(mask_bool, kDLUInt, 8, 1, shape_m, NULL);

  printf("%s: fork and reset\n", g->kind);
  run_calls(g, s, 0, 2, 0, NULL, NULL);
  before = tu_session_bytes(s, &blen);
  REQUIRE_OK(cx_session_fork(s, "f", &f));
  CHECK(tu_session_equals(s, before, blen), "fork leaves the original unchanged");
  CHECK(session_id_is(f, "f"), "fork id");
  fb_bytes = tu_session_bytes(f, &flen);
  CHECK(flen != blen || memcmp(fb_bytes, before, blen) != 0, "the fork's bytes differ (its id)");
  free(fb_bytes);
  ref_need(g, "seq2/1/h", &h2);
  REQUIRE_OK(cx_model_forward_sidecar(g->model, 1, &h2.dl, s, NULL, &ya));
  REQUIRE_OK(cx_model_forward_sidecar(g->model, 1, &h2.dl, f, NULL, &yb));
  fa = tu_tensor_floats(ya, &na);
  fb = tu_tensor_floats(yb, &nb);
  CHECK(na == nb && memcmp(fa, fb, (size_t)na * sizeof(float)) == 0, "the fork continues exactly like the original");
  cx_tensor_free(ya);
  cx_tensor_free(yb);

  /* Reset stream 1 (int32 mask): it continues exactly like a fresh stream. */
  free(before);
  before = tu_session_bytes(s, &blen);
  EXPECT_STATUS(cx_session_reset(s, &M3), CX_STATUS_SHAPE_MISMATCH);
  CHECK(tu_session_equals(s, before, blen), "a refused reset changes nothing");
  REQUIRE_OK(cx_session_reset(s, &M));
  fresh = new_session(g, "x", B);
  ref_need(g, "seq1/1/h", &h1);
  T = h1.shape[1];
  REQUIRE_OK(cx_model_forward_sidecar(g->model, 1, &h1.dl, s, NULL, &ya));
  REQUIRE_OK(cx_model_forward_sidecar(g->model, 1, &h1.dl, fresh, NULL, &yb));
  fa = tu_tensor_floats(ya, &na);
  fb = tu_tensor_floats(yb, &nb);
  CHECK(memcmp(fa + T * D, fb + T * D, (size_t)(T * D) * sizeof(float)) == 0, "a reset stream equals a fresh one");
  CHECK(memcmp(fa, fb, (size_t)(T * D) * sizeof(float)) != 0, "the stream not reset keeps its memory");
  cx_tensor_free(ya);
  cx_tensor_free(yb);

  /* Reset every stream (bool mask, uint8 mask, NULL mask): exactly a fresh session. */
  fb_bytes = tu_session_bytes(f, &flen);
  ref = new_session(g, "f", B);
  rb = tu_session_bytes(ref, &rlen);
  REQUIRE_OK(cx_session_reset(f, &MB));
  CHECK(tu_session_equals(f, rb, rlen), "a bool mask of all ones gives a fresh session");
  CHECK(!tu_session_equals(f, fb_bytes, flen), "the bool mask reset something");
  REQUIRE_OK(cx_session_reset(f, &MU8));
  CHECK(tu_session_equals(f, rb, rlen), "a uint8 mask of all ones gives a fresh session");
  free(rb);
  free(fb_bytes);
  cx_session_free(ref);
  REQUIRE_OK(cx_session_reset(s, NULL));
  ref = new_session(g, "s", B);
  rb = tu_session_bytes(ref, &rlen);
  CHECK(tu_session_equals(s, rb, rlen), "a NULL mask gives a fresh session");
  free(rb);
  cx_session_free(ref);

  free(before);
  ref_free(&h1);
  ref_free(&h2);
  cx_session_free(fresh);
  cx_session_free(f);
  cx_session_free(s);
}

/* ---------------------------------------------------------------- bad input -- */

static void test_bad_input(golden_t *g, golden_t *other) {
  cx_session_t *s = new_session(g, "bad", B), *small = new_session(g, "o", 1), *out = SENTINEL_SESSION;
  cx_session_t *foreign = new_session(other, "x", B);
  ref_t h;
  cx_tensor_t *y = SENTINEL_TENSOR;
  unsigned char *blob, *damaged;
  size_t len, needed = 0;
  int64_t T, shape5[3], shape1[3], shape_rank1[1], shape0[3], sig_shape[3], batch = -7, tokens = -7, bytes = -7;
  int32_t *hi;
  float *sigbuf;
  int64_t i;
  DLTensor x5, x1, xr, xi, x0, sg;
  char idbuf[3];

  printf("%s: bad input\n", g->kind);
  run_calls(g, s, 0, 1, 0, NULL, NULL);
  blob = tu_session_bytes(s, &len);
  ref_need(g, "seq2/1/h", &h);
  T = h.shape[1];

  /* Handles. */
  EXPECT_STATUS(cx_model_forward_sidecar(NULL, 1, &h.dl, s, NULL, &y), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_model_forward_sidecar(g->model, 1, &h.dl, NULL, NULL, &y), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_model_forward_sidecar((cx_model_t *)(void *)s, 1, &h.dl, s, NULL, &y), CX_STATUS_INVALID_HANDLE);
  EXPECT_MESSAGE_HAS("session handle");
  EXPECT_STATUS(cx_model_forward_sidecar(g->model, 1, &h.dl, (cx_session_t *)(void *)g->model, NULL, &y),
                CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_session_info(NULL, &batch, &tokens, &bytes), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_session_info((cx_session_t *)(void *)g->model, &batch, &tokens, &bytes), CX_STATUS_INVALID_HANDLE);
  CHECK(batch == -7 && tokens == -7 && bytes == -7, "refused info leaves its out-params alone");
  EXPECT_STATUS(cx_session_to_bytes(NULL, NULL, 0, &needed), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_session_observe(NULL, NULL, NULL, NULL, NULL), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_session_signals(NULL, &y), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_session_reset(NULL, NULL), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_session_fork(NULL, "f", &out), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_session_fork((cx_session_t *)(void *)g->model, "f", &out), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_session_get_state(NULL, 1, "S", &y), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_session_id(NULL, idbuf, sizeof idbuf, &needed), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_session_segment_count(NULL, 0, &batch), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_session_create(NULL, "a", 1, &out), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_session_create((cx_model_t *)(void *)s, "a", 1, &out), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_session_from_bytes(NULL, blob, len, NULL, &out), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_session_from_bytes((cx_model_t *)(void *)s, blob, len, NULL, &out), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_store_save(NULL, s), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_store_save((cx_store_t *)(void *)s, s), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_store_list_json((cx_store_t *)(void *)g->model, NULL, 0, &needed), CX_STATUS_INVALID_HANDLE);
  /* A session is not a state, nor a tensor; the free functions ignore wrong kinds. */
  EXPECT_STATUS(cx_state_to_bytes((cx_state_t *)(void *)s, NULL, 0, &needed), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_tensor_view((cx_tensor_t *)(void *)s, NULL), CX_STATUS_INVALID_HANDLE);
  cx_state_free((cx_state_t *)(void *)s);
  cx_tensor_free((cx_tensor_t *)(void *)s);
  cx_store_free((cx_store_t *)(void *)s);
  cx_session_free((cx_session_t *)(void *)g->model);
  cx_session_free(NULL);

  /* NULL pointers that are not handles. */
  EXPECT_STATUS(cx_model_forward_sidecar(g->model, 1, NULL, s, NULL, &y), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_model_forward_sidecar(g->model, 1, &h.dl, s, NULL, NULL), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_session_to_bytes(s, NULL, 0, NULL), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_session_from_bytes(g->model, NULL, len, NULL, &out), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_session_from_bytes(g->model, blob, len, NULL, NULL), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_session_get_state(s, 1, NULL, &y), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_session_fork(s, NULL, &out), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_session_fork(s, "", &out), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_session_info(s, NULL, &tokens, &bytes), CX_STATUS_OK); /* NULL: that property is skipped */

  /* Session ids and batch. */
  EXPECT_STATUS(cx_session_create(g->model, "", 1, &out), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_MESSAGE_HAS("session id");
  EXPECT_STATUS(cx_session_create(g->model, "a\nb", 1, &out), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_session_create(g->model, NULL, 1, &out), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_session_create(g->model, "a", 0, &out), CX_STATUS_INVALID_ARGUMENT);
  {
    char longid[258];
    memset(longid, 'a', 257);
    longid[257] = '\0';
    EXPECT_STATUS(cx_session_create(g->model, longid, 1, &out), CX_STATUS_INVALID_ARGUMENT);
    longid[256] = '\0';
    REQUIRE_OK(cx_session_create(g->model, longid, 1, &out));
    cx_session_free(out);
    out = SENTINEL_SESSION;
  }
  EXPECT_STATUS(cx_session_id(s, idbuf, sizeof idbuf, &needed), CX_STATUS_BUFFER_TOO_SMALL);
  CHECK(needed == 4, "id size query: %zu", needed);
  EXPECT_STATUS(cx_session_to_bytes(s, blob, len - 1, &needed), CX_STATUS_BUFFER_TOO_SMALL);
  CHECK(needed == len, "to_bytes size query: %zu, want %zu", needed, len);

  /* Layers and state names. */
  EXPECT_STATUS(cx_model_forward_sidecar(g->model, 2, &h.dl, s, NULL, &y), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_MESSAGE_HAS("layer 2 has no sidecar");
  EXPECT_STATUS(cx_model_forward_sidecar(g->model, -1, &h.dl, s, NULL, &y), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_session_get_state(s, 1, "nope", &y), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_MESSAGE_HAS("no state tensor");
  EXPECT_STATUS(cx_session_get_state(s, 0, g->fw ? "U" : "S", &y), CX_STATUS_INVALID_ARGUMENT);

  /* Shapes and dtypes of h. */
  shape5[0] = B;
  shape5[1] = T;
  shape5[2] = 5;
  x5 = h.dl;
  x5.shape = shape5;
  x5.strides = NULL;
  EXPECT_STATUS(cx_model_forward_sidecar(g->model, 1, &x5, s, NULL, &y), CX_STATUS_SHAPE_MISMATCH);
  EXPECT_MESSAGE_HAS("expected");
  shape1[0] = 1;
  shape1[1] = T;
  shape1[2] = D;
  x1 = h.dl;
  x1.shape = shape1;
  EXPECT_STATUS(cx_model_forward_sidecar(g->model, 1, &x1, s, NULL, &y), CX_STATUS_SHAPE_MISMATCH);
  shape_rank1[0] = D;
  xr = tu_dl_f32(h.data, 1, shape_rank1);
  EXPECT_STATUS(cx_model_forward_sidecar(g->model, 1, &xr, s, NULL, &y), CX_STATUS_SHAPE_MISMATCH);
  shape0[0] = B;
  shape0[1] = 0;
  shape0[2] = D;
  x0 = tu_dl_f32(h.data, 3, shape0);
  EXPECT_STATUS(cx_model_forward_sidecar(g->model, 1, &x0, s, NULL, &y), CX_STATUS_SHAPE_MISMATCH);
  hi = tu_xmalloc((size_t)h.numel * sizeof(int32_t));
  for (i = 0; i < h.numel; ++i) hi[i] = (int32_t)(h.data[i] * 10);
  xi = tu_dl(hi, kDLInt, 32, 3, h.shape, NULL);
  EXPECT_STATUS(cx_model_forward_sidecar(g->model, 1, &xi, s, NULL, &y), CX_STATUS_DTYPE_MISMATCH);
  free(hi);
  {
    DLTensor xd = h.dl;
    xd.device.device_type = kDLCUDA;
    EXPECT_STATUS(cx_model_forward_sidecar(g->model, 1, &xd, s, NULL, &y), CX_STATUS_DEVICE_MISMATCH);
  }
  /* A session of the same model but another batch, and the other model's session. */
  EXPECT_STATUS(cx_model_forward_sidecar(g->model, 1, &h.dl, small, NULL, &y), CX_STATUS_SHAPE_MISMATCH);
  {
    size_t flen;
    unsigned char *fbytes = tu_session_bytes(foreign, &flen);
    EXPECT_STATUS(cx_model_forward_sidecar(g->model, 1, &h.dl, foreign, NULL, &y), CX_STATUS_STATE_MISMATCH);
    EXPECT_MESSAGE_HAS("another model");
    CHECK(tu_session_equals(foreign, fbytes, flen), "the other model's session is unchanged");
    EXPECT_STATUS(cx_session_from_bytes(g->model, fbytes, flen, NULL, &out), CX_STATUS_STATE_MISMATCH);
    EXPECT_MESSAGE_HAS("not this one");
    free(fbytes);
  }

  /* Signals, observe, segments. */
  sigbuf = tu_xmalloc((size_t)(B * T * 4) * sizeof(float));
  for (i = 0; i < B * T * 4; ++i) sigbuf[i] = 0;
  sig_shape[0] = B;
  sig_shape[1] = T;
  sig_shape[2] = 4;
  sg = tu_dl_f32(sigbuf, 3, sig_shape);
  if (!g->fw) {
    float losses[2] = {1, 1};
    int64_t ls[1] = {2};
    DLTensor L = tu_dl_f32(losses, 1, ls);
    EXPECT_STATUS(cx_model_forward_sidecar(g->model, 1, &h.dl, s, &sg, &y), CX_STATUS_UNSUPPORTED);
    EXPECT_MESSAGE_HAS("controller");
    EXPECT_STATUS(cx_session_observe(s, NULL, NULL, &L, NULL), CX_STATUS_UNSUPPORTED);
    EXPECT_STATUS(cx_session_segment_count(s, 0, &batch), CX_STATUS_UNSUPPORTED);
  } else {
    float logits[14], losses3[3] = {1, 1, 1}, nanl[2];
    int64_t ls[2] = {2, 7}, l3[1] = {3}, l2[1] = {2}, toks[2] = {1, 7};
    DLTensor Lg, T2 = tu_dl(toks, kDLInt, 64, 1, l2, NULL), L3 = tu_dl_f32(losses3, 1, l3), LN;
    for (i = 0; i < 14; ++i) logits[i] = 0;
    Lg = tu_dl_f32(logits, 2, ls);
    sig_shape[1] = T - 1;
    EXPECT_STATUS(cx_model_forward_sidecar(g->model, 1, &h.dl, s, &sg, &y), CX_STATUS_SHAPE_MISMATCH);
    EXPECT_MESSAGE_HAS("signals");
    sig_shape[1] = T;
    sigbuf[5] = NAN;
    EXPECT_STATUS(cx_model_forward_sidecar(g->model, 1, &h.dl, s, &sg, &y), CX_STATUS_NAN_INPUT);
    EXPECT_STATUS(cx_session_observe(s, &Lg, &T2, NULL, NULL), CX_STATUS_INVALID_ARGUMENT);
    EXPECT_MESSAGE_HAS("tokens");
    toks[1] = 2;
    logits[3] = NAN;
    EXPECT_STATUS(cx_session_observe(s, &Lg, &T2, NULL, NULL), CX_STATUS_NAN_INPUT);
    EXPECT_STATUS(cx_session_observe(s, NULL, NULL, NULL, NULL), CX_STATUS_INVALID_ARGUMENT);
    EXPECT_MESSAGE_HAS("needs losses");
    EXPECT_STATUS(cx_session_observe(s, NULL, NULL, &L3, NULL), CX_STATUS_SHAPE_MISMATCH);
    nanl[0] = 1;
    nanl[1] = INFINITY;
    LN = tu_dl_f32(nanl, 1, l2);
    EXPECT_STATUS(cx_session_observe(s, NULL, NULL, &LN, NULL), CX_STATUS_NAN_INPUT);
  }
  free(sigbuf);
  CHECK(y == SENTINEL_TENSOR && out == SENTINEL_SESSION, "failed calls leave the out-params alone");

  /* Damaged bytes. */
  damaged = tu_xmalloc(len);
  memcpy(damaged, blob, len);
  EXPECT_STATUS(cx_session_from_bytes(g->model, damaged, len - 3, NULL, &out), CX_STATUS_PARSE_ERROR);
  EXPECT_STATUS(cx_session_from_bytes(g->model, damaged, 10, NULL, &out), CX_STATUS_PARSE_ERROR);
  EXPECT_STATUS(cx_session_from_bytes(g->model, damaged, 0, NULL, &out), CX_STATUS_PARSE_ERROR);
  damaged[len / 2] ^= 1;
  EXPECT_STATUS(cx_session_from_bytes(g->model, damaged, len, NULL, &out), CX_STATUS_PARSE_ERROR);
  EXPECT_MESSAGE_HAS("checksum");
  damaged[len / 2] ^= 1;
  damaged[0] = 'X';
  EXPECT_STATUS(cx_session_from_bytes(g->model, damaged, len, NULL, &out), CX_STATUS_PARSE_ERROR);
  damaged[0] = blob[0];
  damaged[len - 1] ^= 0x80; /* the checksum itself */
  EXPECT_STATUS(cx_session_from_bytes(g->model, damaged, len, NULL, &out), CX_STATUS_PARSE_ERROR);
  EXPECT_STATUS(cx_session_from_bytes(g->model, blob, len, "", &out), CX_STATUS_INVALID_ARGUMENT);
  CHECK(out == SENTINEL_SESSION, "refused from_bytes leaves out alone");
  free(damaged);

  CHECK(tu_session_equals(s, blob, len), "every refused call left the session's bytes unchanged");
  /* And the session still works after all that. */
  REQUIRE_OK(cx_model_forward_sidecar(g->model, 1, &h.dl, s, NULL, &y));
  cx_tensor_free(y);

  free(blob);
  ref_free(&h);
  cx_session_free(foreign);
  cx_session_free(small);
  cx_session_free(s);
}

/* -------------------------------------------------------------------- store -- */

static char *list_json(cx_store_t *st) {
  size_t needed = 0;
  char *buf;
  cx_status rc = cx_store_list_json(st, NULL, 0, &needed);
  if (rc != CX_STATUS_BUFFER_TOO_SMALL) {
    fprintf(stderr, "FATAL: cx_store_list_json size query returned %s: %s\n", cx_status_name(rc), cx_last_error());
    exit(1);
  }
  buf = tu_xmalloc(needed);
  REQUIRE_OK(cx_store_list_json(st, buf, needed, &needed));
  CHECK(strlen(buf) + 1 == needed, "list_json is NUL-terminated at needed - 1");
  return buf;
}

static int count_ids(const char *json) {
  int n = 0;
  const char *p = json;
  while ((p = strstr(p, "\"id\"")) != NULL) {
    n++;
    p += 4;
  }
  return n;
}

/* Does the list hold {"id": "<id>" ...}? */
static int lists(const char *json, const char *id) {
  char needle[300];
  snprintf(needle, sizeof needle, "\"%s\"", id);
  return strstr(json, needle) != NULL;
}

static void remove_db(const char *path) {
  char extra[1200];
  remove(path);
  snprintf(extra, sizeof extra, "%s-wal", path);
  remove(extra);
  snprintf(extra, sizeof extra, "%s-shm", path);
  remove(extra);
}

static void test_store(golden_t *g, golden_t *fw, const char *scratch) {
  char tmpl[1024], db[1100], ttl_db[1100], lru_db[1100], tiny_db[1100], bad_db[1200];
  cx_store_t *st = NULL, *tmp = NULL;
  cx_store_options o;
  cx_session_t *s = new_session(g, "chat_001", B), *r = NULL, *out = SENTINEL_SESSION, *a;
  unsigned char *sb;
  size_t slen, size;
  char *list;
  int32_t existed = -1;
  int64_t removed = -1;

  printf("%s: session store\n", g->kind);
  snprintf(tmpl, sizeof tmpl, "%s/sidecar-store-XXXXXX", scratch);
  if (mkdtemp(tmpl) == NULL) {
    fprintf(stderr, "FATAL: mkdtemp %s failed\n", tmpl);
    exit(1);
  }
  snprintf(db, sizeof db, "%s/s.db", tmpl);
  snprintf(ttl_db, sizeof ttl_db, "%s/ttl.db", tmpl);
  snprintf(lru_db, sizeof lru_db, "%s/lru.db", tmpl);
  snprintf(tiny_db, sizeof tiny_db, "%s/tiny.db", tmpl);
  snprintf(bad_db, sizeof bad_db, "%s/no_such_dir/s.db", tmpl);

  /* Options. */
  o = cx_store_default_options();
  CHECK(o.struct_size == sizeof(cx_store_options) && o.ttl_seconds == 0 && o.max_bytes == 0, "default store options");
  o.ttl_seconds = -1;
  EXPECT_STATUS(cx_store_create(db, &o, &tmp), CX_STATUS_INVALID_ARGUMENT);
  o = cx_store_default_options();
  o.max_bytes = -1;
  EXPECT_STATUS(cx_store_create(db, &o, &tmp), CX_STATUS_INVALID_ARGUMENT);
  o = cx_store_default_options();
  o.struct_size = 3;
  EXPECT_STATUS(cx_store_create(db, &o, &tmp), CX_STATUS_INVALID_ARGUMENT);
  o = cx_store_default_options();
  o.reserved2[3] = 1;
  EXPECT_STATUS(cx_store_create(db, &o, &tmp), CX_STATUS_INVALID_ARGUMENT);
  o = cx_store_default_options();
  o.struct_size = 8; /* smaller than ABI v1's struct */
  EXPECT_STATUS(cx_store_create(db, &o, &tmp), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_store_create(bad_db, NULL, &tmp), CX_STATUS_IO_ERROR);
  EXPECT_STATUS(cx_store_create(NULL, NULL, &tmp), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_store_create(db, NULL, NULL), CX_STATUS_INVALID_ARGUMENT);
  CHECK(tmp == NULL, "refused opens leave out alone");

  /* Save, list, load, replace, delete. */
  REQUIRE_OK(cx_store_create(db, NULL, &st));
  run_calls(g, s, 0, 2, 0, NULL, NULL);
  REQUIRE_OK(cx_store_save(st, s));
  list = list_json(st);
  CHECK(count_ids(list) == 1 && lists(list, "chat_001") && strstr(list, "\"fingerprint\"") && strstr(list, "\"accessed\""),
        "list: %s", list);
  free(list);
  REQUIRE_OK(cx_store_load(st, g->model, "chat_001", &r));
  sb = tu_session_bytes(s, &slen);
  CHECK(tu_session_equals(r, sb, slen), "a loaded session has exactly the saved bytes");
  free(sb);
  cx_session_free(r);
  r = NULL;
  EXPECT_STATUS(cx_store_load(st, g->model, "nope", &out), CX_STATUS_NOT_FOUND);
  EXPECT_MESSAGE_HAS("no session 'nope'");
  EXPECT_STATUS(cx_store_load(st, fw->model, "chat_001", &out), CX_STATUS_STATE_MISMATCH);
  EXPECT_STATUS(cx_store_load(st, g->model, NULL, &out), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_STATUS(cx_store_load(st, NULL, "chat_001", &out), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_store_load(st, (cx_model_t *)(void *)st, "chat_001", &out), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_store_load((cx_store_t *)(void *)s, g->model, "chat_001", &out), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_store_save(st, NULL), CX_STATUS_INVALID_HANDLE);
  EXPECT_STATUS(cx_store_save(st, (cx_session_t *)(void *)st), CX_STATUS_INVALID_HANDLE);
  CHECK(out == SENTINEL_SESSION, "refused loads leave out alone");
  /* Replace. */
  run_calls(g, s, 2, 3, 0, NULL, NULL);
  REQUIRE_OK(cx_store_save(st, s));
  REQUIRE_OK(cx_store_load(st, g->model, "chat_001", &r));
  sb = tu_session_bytes(s, &slen);
  CHECK(tu_session_equals(r, sb, slen), "a replaced session loads as the latest save");
  free(sb);
  /* The loaded session continues: save it under its id from another handle, list once. */
  list = list_json(st);
  CHECK(count_ids(list) == 1, "a replace keeps one entry: %s", list);
  free(list);
  cx_session_free(r);
  /* Without a TTL nothing expires. */
  REQUIRE_OK(cx_store_purge_expired(st, &removed));
  CHECK(removed == 0, "purge_expired without a TTL removes nothing: removed = %lld", (long long)removed);
  REQUIRE_OK(cx_store_purge_expired(st, NULL));
  REQUIRE_OK(cx_store_delete(st, "chat_001", &existed));
  CHECK(existed == 1, "delete of a saved id: existed %d", existed);
  REQUIRE_OK(cx_store_delete(st, "chat_001", &existed));
  CHECK(existed == 0, "second delete: existed %d", existed);
  REQUIRE_OK(cx_store_delete(st, "chat_001", NULL));
  EXPECT_STATUS(cx_store_delete(st, NULL, &existed), CX_STATUS_INVALID_ARGUMENT);
  list = list_json(st);
  CHECK(strcmp(list, "[]") == 0, "empty list: %s", list);
  free(list);
  EXPECT_STATUS(cx_store_load(st, g->model, "chat_001", &out), CX_STATUS_NOT_FOUND);
  /* Persisted across open/close, also the fast-weight session next to the GDN one. */
  REQUIRE_OK(cx_store_save(st, s));
  a = new_session(fw, "fw_chat", B);
  run_calls(fw, a, 0, 2, 0, NULL, NULL);
  REQUIRE_OK(cx_store_save(st, a));
  cx_store_free(st);
  st = NULL;
  REQUIRE_OK(cx_store_create(db, NULL, &st));
  REQUIRE_OK(cx_store_load(st, fw->model, "fw_chat", &r));
  sb = tu_session_bytes(a, &slen);
  CHECK(tu_session_equals(r, sb, slen), "a reopened store returns the fast-weight session exactly");
  free(sb);
  cx_session_free(r);
  REQUIRE_OK(cx_store_load(st, g->model, "chat_001", &r));
  sb = tu_session_bytes(s, &slen);
  CHECK(tu_session_equals(r, sb, slen), "and the GDN one");
  free(sb);
  cx_session_free(r);
  cx_session_free(a);
  cx_store_free(st);
  st = NULL;
  cx_store_free(NULL);

  /* TTL 1 s: an access renews; expired sessions are not returned and get purged. */
  o = cx_store_default_options();
  o.ttl_seconds = 1.0;
  REQUIRE_OK(cx_store_create(ttl_db, &o, &st));
  a = new_session(g, "old", 1);
  REQUIRE_OK(cx_store_save(st, a));
  cx_session_free(a);
  sleep_seconds(0.6);
  a = new_session(g, "new", 1);
  REQUIRE_OK(cx_store_save(st, a));
  cx_session_free(a);
  REQUIRE_OK(cx_store_load(st, g->model, "old", &r)); /* renews "old" */
  cx_session_free(r);
  sleep_seconds(0.6);
  list = list_json(st);
  CHECK(count_ids(list) == 2 && lists(list, "old") && lists(list, "new"), "both alive after 1.2 s: %s", list);
  free(list);
  REQUIRE_OK(cx_store_purge_expired(st, &removed));
  CHECK(removed == 0, "nothing expired yet: removed %lld", (long long)removed);
  sleep_seconds(1.1);
  EXPECT_STATUS(cx_store_load(st, g->model, "new", &out), CX_STATUS_NOT_FOUND);
  EXPECT_MESSAGE_HAS("expired");
  REQUIRE_OK(cx_store_purge_expired(st, &removed));
  CHECK(removed == 1, "purge removed the other expired session: %lld", (long long)removed);
  list = list_json(st);
  CHECK(strcmp(list, "[]") == 0, "all expired: %s", list);
  free(list);
  cx_store_free(st);
  st = NULL;

  /* LRU: room for two and a half blobs; the least recently used goes. */
  a = new_session(g, "a", 1);
  sb = tu_session_bytes(a, &size);
  free(sb);
  o = cx_store_default_options();
  o.max_bytes = (int64_t)(size * 5 / 2);
  REQUIRE_OK(cx_store_create(lru_db, &o, &st));
  REQUIRE_OK(cx_store_save(st, a));
  cx_session_free(a);
  sleep_seconds(0.02);
  a = new_session(g, "b", 1);
  REQUIRE_OK(cx_store_save(st, a));
  cx_session_free(a);
  sleep_seconds(0.02);
  REQUIRE_OK(cx_store_load(st, g->model, "a", &r)); /* b is now the least recently used */
  cx_session_free(r);
  sleep_seconds(0.02);
  a = new_session(g, "c", 1);
  REQUIRE_OK(cx_store_save(st, a));
  cx_session_free(a);
  list = list_json(st);
  CHECK(count_ids(list) == 2 && lists(list, "a") && lists(list, "c") && !lists(list, "b"), "LRU evicted b: %s", list);
  /* Most recently used first. */
  CHECK(strstr(list, "\"c\"") != NULL && strstr(list, "\"a\"") != NULL && strstr(list, "\"c\"") < strstr(list, "\"a\""),
        "list order is most recently used first: %s", list);
  free(list);
  EXPECT_STATUS(cx_store_load(st, g->model, "b", &out), CX_STATUS_NOT_FOUND);
  cx_store_free(st);
  st = NULL;

  /* A blob larger than max_bytes is refused (and nothing is stored). */
  o = cx_store_default_options();
  o.max_bytes = (int64_t)(size / 2);
  REQUIRE_OK(cx_store_create(tiny_db, &o, &st));
  a = new_session(g, "big", 1);
  EXPECT_STATUS(cx_store_save(st, a), CX_STATUS_INVALID_ARGUMENT);
  EXPECT_MESSAGE_HAS("max_bytes");
  cx_session_free(a);
  list = list_json(st);
  CHECK(strcmp(list, "[]") == 0, "nothing stored: %s", list);
  free(list);
  cx_store_free(st);
  CHECK(out == SENTINEL_SESSION, "refused loads leave out alone");

  cx_session_free(s);
  remove_db(db);
  remove_db(ttl_db);
  remove_db(lru_db);
  remove_db(tiny_db);
  CHECK(rmdir(tmpl) == 0, "the store directory is empty after the stores closed (%s)", tmpl);
}

/* --------------------------------------------------------------------- main -- */

int main(int argc, char **argv) {
  int k;
  int64_t d_in = 0, d_out = 0;
  cx_state_t *state = NULL;
  if (argc != 4) {
    fprintf(stderr, "usage: %s GDN_GOLDEN_DIR FAST_WEIGHT_GOLDEN_DIR SCRATCH_DIR\n", argv[0]);
    return 2;
  }
  G[0].kind = "gdn";
  G[1].kind = "fast_weight";
  G[1].fw = 1;
  for (k = 0; k < 2; ++k) {
    char *model_dir = tu_path(argv[1 + k], "model"), *cases_path = tu_path(argv[1 + k], "cases.safetensors");
    REQUIRE_OK(cx_model_load(model_dir, NULL, &G[k].model));
    tu_st_load(cases_path, &G[k].cases);
    REQUIRE_OK(cx_model_dims(G[k].model, &d_in, &d_out));
    CHECK(d_in == D && d_out == D, "%s dims (%lld, %lld)", G[k].kind, (long long)d_in, (long long)d_out);
    EXPECT_STATUS(cx_state_create(G[k].model, 1, &state), CX_STATUS_UNSUPPORTED);
    free(model_dir);
    free(cases_path);
  }

  for (k = 0; k < 2; ++k) test_golden(&G[k]);
  test_observe_logits(&G[1]);
  test_segments(&G[1]);
  for (k = 0; k < 2; ++k) {
    test_forward_into(&G[k]);
    test_resume(&G[k]);
    test_fork_reset(&G[k]);
    test_bad_input(&G[k], &G[1 - k]);
  }
  test_store(&G[0], &G[1], argv[3]);

  for (k = 0; k < 2; ++k) {
    printf("%s golden: max|err| outputs %.3e, signals %.3e, final state %.3e\n", G[k].kind, G[k].worst_y,
           G[k].worst_signals, G[k].worst_state);
    cx_model_free(G[k].model);
    tu_st_free(&G[k].cases);
  }
  return tu_finish("test_sidecar");
}
