/*
 * test_mythos.c — an open_mythos golden (Tests/goldens/mythos/<name>) through the C ABI:
 * full-sequence logits, prefill + token-by-token decode through a cx_cache_t, greedy
 * generation (cx_model_generate and the cx_generator_t stream), cache bytes round trip, and
 * the error contract (bad ids, positions past max_seq_len, wrong batch, wrong handle
 * kinds, damaged bytes; the cache unchanged after each failure).
 * Tolerance on logits: 1e-4 * max(1, max|ref|).
 *
 *   test_mythos MYTHOS_GOLDEN_DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static cx_model_t *model;
static tu_st_file cases;
static int64_t B, T, V;
static int64_t *ids; /* [B, T] */

static void compare(const char *what, const float *got, const char *key) {
  const tu_st_entry *e;
  float *ref = tu_st_f32(&cases, key, &e);
  tu_check_close_rel(what, got, ref, (size_t)tu_st_numel(e), 1e-4);
  free(ref);
}

/* ids[:, t0:t1] as an int64 DLTensor over `buf`. */
static DLTensor slice(int64_t *buf, int64_t t0, int64_t t1, int64_t *shape) {
  int64_t b, t;
  for (b = 0; b < B; ++b)
    for (t = t0; t < t1; ++t) buf[b * (t1 - t0) + (t - t0)] = ids[b * T + t];
  shape[0] = B;
  shape[1] = t1 - t0;
  return tu_dl(buf, kDLInt, 64, 2, shape, NULL);
}

static cx_tensor_t *forward(const DLTensor *x, int32_t loops, cx_cache_t *cache, int64_t start) {
  cx_tensor_t *y = NULL;
  REQUIRE_OK(cx_model_forward_tokens(model, x, loops, cache, start, &y));
  return y;
}

int main(int argc, char **argv) {
  char *model_dir, *cases_path;
  const tu_st_entry *e;
  float *f;
  int64_t i, t, b, shape[2], *buf;
  int64_t d_in, d_out, batch, pos;
  cx_cache_t *cache = NULL, *restored = NULL;
  cx_tensor_t *y;
  const float *yf;
  float *decoded;
  int64_t n;
  DLTensor x;

  if (argc != 2) {
    fprintf(stderr, "usage: %s MYTHOS_GOLDEN_DIR\n", argv[0]);
    return 2;
  }
  model_dir = tu_path(argv[1], "model");
  cases_path = tu_path(argv[1], "cases.safetensors");
  REQUIRE_OK(cx_model_load(model_dir, NULL, &model));
  tu_st_load(cases_path, &cases);
  f = tu_st_f32(&cases, "full/ids", &e);
  B = e->shape[0];
  T = e->shape[1];
  ids = tu_xmalloc((size_t)(B * T) * sizeof(int64_t));
  for (i = 0; i < B * T; ++i) ids[i] = (int64_t)f[i];
  free(f);
  buf = tu_xmalloc((size_t)(B * T) * sizeof(int64_t));
  REQUIRE_OK(cx_model_dims(model, &d_in, &d_out));
  V = d_out;
  printf("mythos golden %s: vocab %lld, B %lld, T %lld\n", argv[1], (long long)V, (long long)B, (long long)T);

  /* Full forward, no cache. */
  x = slice(buf, 0, T, shape);
  y = forward(&x, 0, NULL, 0);
  compare("full forward", tu_tensor_floats(y, &n), "full/logits");
  CHECK(n == B * T * V, "logits count %lld", (long long)n);
  cx_tensor_free(y);

  /* Prefill 4, then one token per call (start_pos -1: the cache's position). */
  decoded = tu_xmalloc((size_t)(B * T * V) * sizeof(float));
  REQUIRE_OK(cx_cache_create(model, B, &cache));
  for (t = 0; t < T;) {
    int64_t t1 = t == 0 ? 4 : t + 1;
    x = slice(buf, t, t1, shape);
    y = forward(&x, 0, cache, -1);
    yf = tu_tensor_floats(y, &n);
    for (b = 0; b < B; ++b)
      memcpy(decoded + (b * T + t) * V, yf + b * (t1 - t) * V, (size_t)((t1 - t) * V) * sizeof(float));
    cx_tensor_free(y);
    t = t1;
  }
  compare("prefill 4 + decode", decoded, "decode/logits");
  REQUIRE_OK(cx_cache_info(cache, &batch, &pos));
  CHECK(batch == B && pos == T, "cache info %lld %lld", (long long)batch, (long long)pos);
  free(decoded);

  /* A fork shares the cache's pages; both branches then continue exactly like the
   * original would (the fork's writes copy the pages they touch). */
  {
    cx_cache_t *fork = NULL;
    int64_t shared = -1, nxt[64], s1[2], na, nf;
    cx_tensor_t *ya, *yf;
    const float *a, *f;
    DLTensor xn;
    EXPECT_STATUS(cx_cache_fork(NULL, &fork, NULL), CX_STATUS_INVALID_HANDLE);
    EXPECT_STATUS(cx_cache_fork(cache, NULL, NULL), CX_STATUS_INVALID_ARGUMENT);
    REQUIRE_OK(cx_cache_fork(cache, &fork, &shared));
    CHECK(shared > 0, "a fork shares pages (%lld)", (long long)shared);
    for (b = 0; b < B && b < 64; ++b) nxt[b] = ids[b * T + 1];
    s1[0] = B;
    s1[1] = 1;
    xn = tu_dl(nxt, kDLInt, 64, 2, s1, NULL);
    yf = forward(&xn, 0, fork, -1);
    cx_cache_free(fork); /* the original keeps its pages */
    ya = forward(&xn, 0, cache, -1);
    a = tu_tensor_floats(ya, &na);
    f = tu_tensor_floats(yf, &nf);
    CHECK(na == nf && memcmp(a, f, (size_t)na * sizeof(float)) == 0, "a fork continues exactly like its original");
    cx_tensor_free(ya);
    cx_tensor_free(yf);
  }

  /* Bytes round trip: the restored cache continues identically. */
  {
    size_t need = 0, len;
    unsigned char *blob, *blob2;
    const float *a, *c;
    int64_t na, nc;
    cx_tensor_t *ya, *yc;
    int64_t one[64], s1[2];
    EXPECT_STATUS(cx_cache_to_bytes(cache, NULL, 0, &need), CX_STATUS_BUFFER_TOO_SMALL);
    blob = tu_xmalloc(need);
    REQUIRE_OK(cx_cache_to_bytes(cache, blob, need, &len));
    REQUIRE_OK(cx_cache_from_bytes(model, blob, len, &restored));
    memset(one, 0, sizeof one);
    for (b = 0; b < B && b < 64; ++b) one[b] = ids[b * T];
    s1[0] = B;
    s1[1] = 1;
    x = tu_dl(one, kDLInt, 64, 2, s1, NULL);
    ya = forward(&x, 0, cache, -1);
    yc = forward(&x, 0, restored, -1);
    a = tu_tensor_floats(ya, &na);
    c = tu_tensor_floats(yc, &nc);
    {
      /* Equal up to rounding: an MLA cache recomputes its kv_up rows on load, in one
       * product where the original computed them call by call. */
      CHECK(na == nc, "restored cache: %lld logits, the original %lld", (long long)nc, (long long)na);
      if (na == nc) tu_check_close_rel("restored cache vs original", c, a, (size_t)na, 1e-6);
    }
    cx_tensor_free(ya);
    cx_tensor_free(yc);

    /* Errors: each refused with a message, the cache unchanged. */
    free(blob);
    EXPECT_STATUS(cx_cache_to_bytes(cache, NULL, 0, &need), CX_STATUS_BUFFER_TOO_SMALL);
    blob = tu_xmalloc(need);
    REQUIRE_OK(cx_cache_to_bytes(cache, blob, need, &len));
    one[0] = V;  /* out of the vocabulary */
    EXPECT_STATUS(cx_model_forward_tokens(model, &x, 0, cache, -1, &y), CX_STATUS_INVALID_ARGUMENT);
    EXPECT_MESSAGE_HAS("vocabulary");
    one[0] = 0;
    EXPECT_STATUS(cx_model_forward_tokens(model, &x, -2, cache, -1, &y), CX_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(cx_model_forward_tokens(model, &x, 0, cache, 1 << 30, &y), CX_STATUS_INVALID_ARGUMENT);
    EXPECT_MESSAGE_HAS("max_seq_len");
    s1[0] = B + 1;
    EXPECT_STATUS(cx_model_forward_tokens(model, &x, 0, cache, -1, &y), CX_STATUS_STATE_MISMATCH);
    s1[0] = B;
    EXPECT_STATUS(cx_model_forward_tokens(model, &x, 0, (cx_cache_t *)model, -1, &y), CX_STATUS_INVALID_HANDLE);
    EXPECT_STATUS(cx_model_forward_tokens(NULL, &x, 0, cache, -1, &y), CX_STATUS_INVALID_HANDLE);
    EXPECT_STATUS(cx_model_forward_tokens(model, NULL, 0, cache, -1, &y), CX_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(cx_model_forward_tokens(model, &x, 0, cache, -1, NULL), CX_STATUS_INVALID_ARGUMENT);
    {
      float fl[64];
      DLTensor xf = tu_dl_f32(fl, 2, s1);
      memset(fl, 0, sizeof fl);
      EXPECT_STATUS(cx_model_forward_tokens(model, &xf, 0, cache, -1, &y), CX_STATUS_DTYPE_MISMATCH);
    }
    blob2 = tu_xmalloc(need + 64);
    REQUIRE_OK(cx_cache_to_bytes(cache, blob2, need + 64, &need));
    CHECK(need == len && memcmp(blob, blob2, len) == 0, "failed calls leave the cache unchanged");
    blob[len - 1] ^= 1;
    EXPECT_STATUS(cx_cache_from_bytes(model, blob, len, &restored), CX_STATUS_PARSE_ERROR);
    EXPECT_STATUS(cx_cache_from_bytes(model, blob, 10, &restored), CX_STATUS_PARSE_ERROR);
    free(blob);
    free(blob2);
  }
  cx_cache_free(restored);
  cx_cache_free(cache);

  /* A stack model refuses language-model calls; an open_mythos model refuses states. */
  {
    cx_state_t *s = NULL;
    EXPECT_STATUS(cx_state_create(model, 1, &s), CX_STATUS_UNSUPPORTED);
    EXPECT_MESSAGE_HAS("cache");
  }

  /* Greedy generation: cx_model_generate, then the generator one token at a time. */
  {
    const tu_st_entry *pe, *te;
    float *pf = tu_st_f32(&cases, "greedy/prompt", &pe), *tf = tu_st_f32(&cases, "greedy/tokens", &te);
    int64_t P = pe->shape[1], total = te->shape[1], newt = total - P, generated = 0;
    int64_t *prompt = tu_xmalloc((size_t)(B * P) * sizeof(int64_t));
    int64_t *out = tu_xmalloc((size_t)(B * total) * sizeof(int64_t)), tok[64];
    int64_t ps[2];
    int32_t done = 0, mismatches = 0;
    cx_generate_options o = cx_generate_default_options();
    cx_generator_t *gen = NULL;
    DLTensor pt;
    int64_t loops = 0;
    {
      size_t need = 0;
      char *info;
      const char *k;
      (void)cx_model_info_json(model, NULL, 0, &need);
      info = tu_xmalloc(need);
      REQUIRE_OK(cx_model_info_json(model, info, need, &need));
      k = strstr(info, "\"max_loop_iters\":");
      CHECK(k != NULL, "info lists max_loop_iters");
      if (k) loops = strtoll(k + 17, NULL, 10);
      free(info);
    }
    for (i = 0; i < B * P; ++i) prompt[i] = (int64_t)pf[i];
    ps[0] = B;
    ps[1] = P;
    pt = tu_dl(prompt, kDLInt, 64, 2, ps, NULL);
    o.n_loops = (int32_t)loops;
    REQUIRE_OK(cx_model_generate(model, &pt, newt, &o, NULL, NULL, out, B * total, &generated));
    CHECK(generated == newt, "generated %lld steps", (long long)generated);
    for (i = 0; i < B * total; ++i) mismatches += out[i] != (int64_t)tf[i];
    CHECK(mismatches == 0, "greedy tokens: %d differ from the reference", mismatches);
    EXPECT_STATUS(cx_model_generate(model, &pt, newt, &o, NULL, NULL, out, B * total - 1, &generated), CX_STATUS_SHAPE_MISMATCH);
    REQUIRE_OK(cx_generator_create(model, &pt, &o, &gen));
    mismatches = 0;
    for (t = 0; t < newt; ++t) {
      REQUIRE_OK(cx_generator_next(gen, tok, B, &done));
      for (b = 0; b < B; ++b) mismatches += tok[b] != (int64_t)tf[b * total + P + t];
    }
    CHECK(mismatches == 0, "generator tokens: %d differ", mismatches);
    EXPECT_STATUS(cx_generator_next(gen, tok, B + 1, &done), CX_STATUS_SHAPE_MISMATCH);
    cx_generator_free(gen);
    o.struct_size = 3;
    EXPECT_STATUS(cx_generator_create(model, &pt, &o, &gen), CX_STATUS_INVALID_ARGUMENT);
    printf("  greedy generation: %lld tokens per sequence match the reference\n", (long long)newt);
    free(prompt);
    free(out);
    free(pf);
    free(tf);
  }

  free(ids);
  free(buf);
  cx_model_free(model);
  tu_st_free(&cases);
  free(model_dir);
  free(cases_path);
  return tu_finish("test_mythos");
}
