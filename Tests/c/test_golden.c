/*
 * test_golden.c — every case of Tests/goldens/<model>/cases.safetensors through the
 * C ABI (see scripts/make_goldens.py for the cases), outputs and final states
 * compared with max|err| <= 1e-5 * max(1, max|ref|).
 *
 *   test_golden GOLDEN_DIR        (e.g. Tests/goldens/lstm_stack)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define MAX_PATHS 64

static cx_model_t *model;
static tu_st_file cases;
static int64_t D_in, D_out;
/* State tensor paths, from the "seq/state/<path>" entries. */
static char paths[MAX_PATHS][256];
static int npaths;

static const char *const known_cases[] = {"seq", "step", "resets_seq", "resets_step", "carry", "rows_seq", "b1",
                                          "reroute"};
/* manifest.json, kept for its "route_ids" (models with routed adapters). */
static char *manifest;

/* Bind `ids` (n int64 values) to the state's streams. */
static void bind_ids(cx_state_t *s, int64_t *ids, int64_t n) {
  DLTensor t = tu_dl(ids, kDLInt, 64, 1, &n, NULL);
  REQUIRE_OK(cx_state_set_route_ids(s, &t));
}

/* A fresh state; for a golden with routed adapters, bound to the ids the reference ran
 * with at this batch size (manifest "route_ids": {"<B>": [ids...]}). */
static cx_state_t *new_state(int64_t batch) {
  cx_state_t *s = NULL;
  const char *r = strstr(manifest, "\"route_ids\"");
  REQUIRE_OK(cx_state_create(model, batch, &s));
  if (r != NULL) {
    char key[32];
    int64_t ids[64], n = 0;
    const char *p;
    char *end;
    snprintf(key, sizeof key, "\"%lld\"", (long long)batch);
    p = strstr(r, key);
    CHECK(p != NULL, "manifest route_ids has no entry for batch %lld", (long long)batch);
    if (p == NULL) return s;
    p = strchr(p, '[');
    while (p != NULL && *p != ']' && n < 64) {
      ++p;
      while (*p == ' ' || *p == '\n') ++p;
      if (*p == ']') break;
      ids[n++] = strtoll(p, &end, 10);
      p = end;
      while (*p == ' ' || *p == '\n') ++p;
    }
    CHECK(n == batch, "manifest route_ids for batch %lld has %lld values", (long long)batch, (long long)n);
    bind_ids(s, ids, n);
  }
  return s;
}
#define NCASES ((int)(sizeof known_cases / sizeof known_cases[0]))

static float *get(const char *c, const char *name, const tu_st_entry **e) {
  char key[512];
  snprintf(key, sizeof key, "%.100s/%.300s", c, name);
  return tu_st_f32(&cases, key, e);
}

/* Compare every state tensor of `s` against "<c>/<prefix>/<path>"; returns max error. */
static double compare_state(const char *c, const char *prefix, const cx_state_t *s) {
  double worst = 0;
  int i;
  for (i = 0; i < npaths; ++i) {
    const tu_st_entry *e;
    cx_tensor_t *t = NULL;
    char what[512];
    char name[300];
    float *ref;
    int64_t n = 0;
    const float *got;
    double err;
    snprintf(name, sizeof name, "%.20s/%.255s", prefix, paths[i]);
    ref = get(c, name, &e);
    if (!EXPECT_OK(cx_state_get_tensor(s, paths[i], &t))) {
      free(ref);
      continue;
    }
    got = tu_tensor_floats(t, &n);
    snprintf(what, sizeof what, "%.40s: %.20s %.255s", c, prefix, paths[i]);
    CHECK(n == tu_st_numel(e), "%s: %lld elements, reference has %lld", what, (long long)n,
          (long long)tu_st_numel(e));
    if (n == tu_st_numel(e)) {
      err = tu_check_close(what, got, ref, (size_t)n);
      if (err > worst) worst = err;
    }
    cx_tensor_free(t);
    free(ref);
  }
  return worst;
}

/* Sequence mode: forward x (+ resets) and compare y; returns the max error. */
static double forward_and_compare(const char *c, cx_state_t *s, const char *xname, const char *yname,
                                  const char *resets_name) {
  const tu_st_entry *ex, *ey, *er = NULL;
  float *x = get(c, xname, &ex);
  float *y = get(c, yname, &ey);
  float *r = resets_name ? get(c, resets_name, &er) : NULL;
  int64_t xs[3], rs[2];
  DLTensor xt, rt;
  cx_tensor_t *out = NULL;
  const DLTensor *v = NULL;
  double err = 0;
  char what[128];
  memcpy(xs, ex->shape, sizeof xs);
  xt = tu_dl_f32(x, 3, xs);
  if (r) {
    memcpy(rs, er->shape, sizeof rs);
    rt = tu_dl_f32(r, er->ndim, rs);
  }
  if (EXPECT_OK(cx_model_forward(model, s, &xt, r ? &rt : NULL, &out))) {
    REQUIRE_OK(cx_tensor_view(out, &v));
    CHECK(v->ndim == 3 && v->shape[0] == ey->shape[0] && v->shape[1] == ey->shape[1] && v->shape[2] == D_out,
          "%s: y has the wrong shape", c);
    snprintf(what, sizeof what, "%.40s: %.40s", c, yname);
    err = tu_check_close(what, tu_tensor_floats(out, NULL), y, (size_t)tu_st_numel(ey));
  }
  cx_tensor_free(out);
  free(x);
  free(y);
  free(r);
  return err;
}

/* Step mode: cx_model_step_into for every t, x[:, t] and resets[:, t] gathered into
 * contiguous buffers; returns the max error of y. */
static double steps_and_compare(const char *c, cx_state_t *s, const char *resets_name) {
  const tu_st_entry *ex, *ey, *er = NULL;
  float *x = get(c, "x", &ex);
  float *y = get(c, "y", &ey);
  float *r = resets_name ? get(c, resets_name, &er) : NULL;
  int64_t B = ex->shape[0], T = ex->shape[1], t, b;
  float *xt_buf = tu_xmalloc((size_t)(B * D_in) * sizeof(float));
  float *yt_buf = tu_xmalloc((size_t)(B * D_out) * sizeof(float));
  float *ys = tu_xmalloc((size_t)(B * T * D_out) * sizeof(float));
  float *rt_buf = tu_xmalloc((size_t)B * sizeof(float));
  int64_t xs[2], ys_shape[2], rs[1];
  DLTensor xt, yt, rt;
  double err = 0;
  char what[128];
  xs[0] = B;
  xs[1] = D_in;
  ys_shape[0] = B;
  ys_shape[1] = D_out;
  rs[0] = B;
  xt = tu_dl_f32(xt_buf, 2, xs);
  yt = tu_dl_f32(yt_buf, 2, ys_shape);
  rt = tu_dl_f32(rt_buf, 1, rs);
  for (t = 0; t < T; ++t) {
    for (b = 0; b < B; ++b) {
      memcpy(xt_buf + b * D_in, x + (b * T + t) * D_in, (size_t)D_in * sizeof(float));
      if (r) rt_buf[b] = r[b * T + t];
    }
    if (!EXPECT_OK(cx_model_step_into(model, s, &xt, r ? &rt : NULL, &yt))) break;
    for (b = 0; b < B; ++b) memcpy(ys + (b * T + t) * D_out, yt_buf + b * D_out, (size_t)D_out * sizeof(float));
  }
  snprintf(what, sizeof what, "%.40s: y (step mode)", c);
  if (t == T) err = tu_check_close(what, ys, y, (size_t)tu_st_numel(ey));
  free(x);
  free(y);
  free(r);
  free(xt_buf);
  free(yt_buf);
  free(ys);
  free(rt_buf);
  return err;
}

/* The state after running 'seq' from zero: the initial state of the resets cases. */
static cx_state_t *seq_final_state(void) {
  cx_state_t *s = NULL;
  const tu_st_entry *ex;
  float *x = get("seq", "x", &ex);
  int64_t xs[3];
  DLTensor xt;
  cx_tensor_t *y = NULL;
  memcpy(xs, ex->shape, sizeof xs);
  xt = tu_dl_f32(x, 3, xs);
  s = new_state(xs[0]);
  REQUIRE_OK(cx_model_forward(model, s, &xt, NULL, &y));
  cx_tensor_free(y);
  free(x);
  return s;
}

static int64_t batch_of(const char *c, const char *xname) {
  char key[256];
  const tu_st_entry *e;
  snprintf(key, sizeof key, "%.100s/%.100s", c, xname);
  e = tu_st_find(&cases, key);
  if (e == NULL || e->ndim != 3) {
    fprintf(stderr, "FATAL: %s is missing or not [B, T, D]\n", key);
    exit(1);
  }
  return e->shape[0];
}

static void report(const char *c, double y_err, double state_err, double init_err) {
  if (init_err >= 0) {
    printf("  %-12s max|err| y %.3e  state %.3e  init %.3e\n", c, y_err, state_err, init_err);
  } else {
    printf("  %-12s max|err| y %.3e  state %.3e\n", c, y_err, state_err);
  }
}

int main(int argc, char **argv) {
  char *model_dir, *cases_path, *manifest_path;
  size_t manifest_len, i;
  int k, known;
  cx_state_t *s = NULL;
  double ey, es, ei;

  if (argc != 2) {
    fprintf(stderr, "usage: %s GOLDEN_DIR\n", argv[0]);
    return 2;
  }
  model_dir = tu_path(argv[1], "model");
  cases_path = tu_path(argv[1], "cases.safetensors");
  manifest_path = tu_path(argv[1], "manifest.json");
  manifest = (char *)tu_read_file(manifest_path, &manifest_len);
  CHECK(tu_contains(manifest, "\"golden_format\": 1"), "%s: golden_format is not 1", manifest_path);

  REQUIRE_OK(cx_model_load(model_dir, NULL, &model));
  REQUIRE_OK(cx_model_dims(model, &D_in, &D_out));
  tu_st_load(cases_path, &cases);

  /* Every case in the file is one this test knows; the state paths come from 'seq'. */
  for (i = 0; i < cases.count; ++i) {
    const char *name = cases.entries[i].name;
    const char *slash = strchr(name, '/');
    known = 0;
    for (k = 0; k < NCASES && slash; ++k) {
      if (strlen(known_cases[k]) == (size_t)(slash - name) && strncmp(name, known_cases[k], (size_t)(slash - name)) == 0)
        known = 1;
    }
    CHECK(known, "cases.safetensors has '%s', a case this test does not know", name);
    if (strncmp(name, "seq/state/", 10) == 0 && npaths < MAX_PATHS) {
      snprintf(paths[npaths++], sizeof paths[0], "%.255s", name + 10);
    }
  }
  CHECK(npaths > 0, "no seq/state/* tensors");
  {
    /* The state names the model reports are the golden's. */
    size_t need = 0;
    char *info;
    EXPECT_STATUS(cx_model_info_json(model, NULL, 0, &need), CX_STATUS_BUFFER_TOO_SMALL);
    info = tu_xmalloc(need);
    REQUIRE_OK(cx_model_info_json(model, info, need, &need));
    for (k = 0; k < npaths; ++k) CHECK(tu_contains(info, paths[k]), "info JSON lacks state '%s'", paths[k]);
    free(info);
  }
  printf("golden %s: d_in %lld, d_out %lld, %d state tensors\n", argv[1], (long long)D_in, (long long)D_out, npaths);

  /* seq: sequence mode from zero. */
  s = new_state(batch_of("seq", "x"));
  ey = forward_and_compare("seq", s, "x", "y", NULL);
  es = compare_state("seq", "state", s);
  report("seq", ey, es, -1);
  cx_state_free(s);

  /* step: cx_model_step_into T times from zero. */
  s = new_state(batch_of("step", "x"));
  ey = steps_and_compare("step", s, NULL);
  es = compare_state("step", "state", s);
  report("step", ey, es, -1);
  cx_state_free(s);

  /* resets_seq / resets_step / rows_seq: start from 'seq''s final state, which must
   * equal the case's init/<path>. */
  {
    static const char *const from_seq[] = {"resets_seq", "resets_step", "rows_seq"};
    for (k = 0; k < 3; ++k) {
      const char *c = from_seq[k];
      s = seq_final_state();
      ei = compare_state(c, "init", s);
      if (strcmp(c, "resets_step") == 0) {
        ey = steps_and_compare(c, s, "resets");
      } else {
        ey = forward_and_compare(c, s, "x", "y", "resets");
      }
      es = compare_state(c, "state", s);
      report(c, ey, es, ei);
      cx_state_free(s);
    }
  }

  /* carry: two sequence calls, the state carried over. */
  s = new_state(batch_of("carry", "xa"));
  ey = forward_and_compare("carry", s, "xa", "ya", NULL);
  ei = forward_and_compare("carry", s, "xb", "yb", NULL);
  if (ei > ey) ey = ei;
  es = compare_state("carry", "state", s);
  report("carry", ey, es, -1);
  cx_state_free(s);

  /* b1: batch 1. */
  s = new_state(batch_of("b1", "x"));
  ey = forward_and_compare("b1", s, "x", "y", NULL);
  es = compare_state("b1", "state", s);
  report("b1", ey, es, -1);
  cx_state_free(s);

  /* reroute (routed adapters): the streams change slots between two calls. */
  if (tu_st_find(&cases, "reroute/xa") != NULL) {
    const tu_st_entry *e;
    float *ids_b = get("reroute", "ids_b", &e);
    int64_t ids[64], n = e->shape[0];
    CHECK(n <= 64, "too many streams");
    s = new_state(batch_of("reroute", "xa"));
    ey = forward_and_compare("reroute", s, "xa", "ya", NULL);
    for (k = 0; k < (int)n && k < 64; ++k) ids[k] = (int64_t)ids_b[k];
    bind_ids(s, ids, n);
    ei = forward_and_compare("reroute", s, "xb", "yb", NULL);
    if (ei > ey) ey = ei;
    es = compare_state("reroute", "state", s);
    report("reroute", ey, es, -1);
    cx_state_free(s);
    free(ids_b);
  }

  cx_model_free(model);
  free(manifest);
  tu_st_free(&cases);
  free(model_dir);
  free(cases_path);
  free(manifest_path);
  return tu_finish("test_golden");
}
