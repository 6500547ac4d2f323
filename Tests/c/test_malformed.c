/*
 * test_malformed.c — a generated corpus of malformed model files, fed to
 * cx_model_load_from_memory: malformed safetensors weights with the valid golden
 * config, and malformed configs with the valid golden weights. Every one must be
 * refused with a non-OK status and a message "[cx_model_load_from_memory] ...",
 * and nothing may crash. A seeded random-mutation pass follows.
 *
 *   test_malformed GOLDEN_DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define MAX_ENTRIES 32

typedef struct {
  char name[256];
  char dtype[16];
  int ndim;
  int64_t shape[TU_MAX_RANK];
  uint64_t begin, end;
  const char *raw; /* when set: the tensor's JSON value, verbatim */
} gen_entry;

static char *config_text; /* the valid golden config, NUL-terminated */
static size_t config_len;
static unsigned char *weights; /* the valid golden weights */
static size_t weights_len;
static tu_st_file wfile;
static const unsigned char *data_section;
static size_t data_len;
static int cases_run;

/* ------------------------------------------------------------ generation -- */

typedef struct {
  char *p;
  size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const void *data, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    char *q;
    while (b->len + n + 1 > cap) cap *= 2;
    q = tu_xmalloc(cap);
    if (b->p) memcpy(q, b->p, b->len);
    free(b->p);
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_fmt_i64(sbuf *b, int64_t v) {
  char tmp[32];
  snprintf(tmp, sizeof tmp, "%lld", (long long)v);
  sb_str(b, tmp);
}

static void sb_fmt_u64(sbuf *b, uint64_t v) {
  char tmp[32];
  snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
  sb_str(b, tmp);
}

/* The header JSON for these entries. */
static char *header_json(const gen_entry *es, int n, size_t *len) {
  sbuf b = {NULL, 0, 0};
  int i, k;
  sb_str(&b, "{");
  for (i = 0; i < n; ++i) {
    if (i) sb_str(&b, ",");
    sb_str(&b, "\"");
    sb_str(&b, es[i].name);
    sb_str(&b, "\":");
    if (es[i].raw) {
      sb_str(&b, es[i].raw);
      continue;
    }
    sb_str(&b, "{\"dtype\":\"");
    sb_str(&b, es[i].dtype);
    sb_str(&b, "\",\"shape\":[");
    for (k = 0; k < es[i].ndim; ++k) {
      if (k) sb_str(&b, ",");
      sb_fmt_i64(&b, es[i].shape[k]);
    }
    sb_str(&b, "],\"data_offsets\":[");
    sb_fmt_u64(&b, es[i].begin);
    sb_str(&b, ",");
    sb_fmt_u64(&b, es[i].end);
    sb_str(&b, "]}");
  }
  sb_str(&b, "}");
  *len = b.len;
  return b.p;
}

/* A safetensors file: 8-byte length (header_len_override unless ~0), header, data. */
static unsigned char *build_file(const char *header, size_t hlen, uint64_t header_len_field, const unsigned char *data,
                                 size_t dlen, size_t *out_len) {
  unsigned char *out = tu_xmalloc(8 + hlen + dlen);
  int k;
  for (k = 0; k < 8; ++k) out[k] = (unsigned char)(header_len_field >> (8 * k));
  memcpy(out + 8, header, hlen);
  if (dlen) memcpy(out + 8 + hlen, data, dlen);
  *out_len = 8 + hlen + dlen;
  return out;
}

static unsigned char *build(const gen_entry *es, int n, const unsigned char *data, size_t dlen, size_t *out_len) {
  size_t hlen;
  char *h = header_json(es, n, &hlen);
  unsigned char *f = build_file(h, hlen, hlen, data, dlen, out_len);
  free(h);
  return f;
}

/* The golden weights' entries, in file order. */
static int golden_entries(gen_entry *es) {
  size_t i;
  for (i = 0; i < wfile.count; ++i) {
    memset(&es[i], 0, sizeof es[i]);
    snprintf(es[i].name, sizeof es[i].name, "%s", wfile.entries[i].name);
    snprintf(es[i].dtype, sizeof es[i].dtype, "%s", wfile.entries[i].dtype);
    es[i].ndim = wfile.entries[i].ndim;
    memcpy(es[i].shape, wfile.entries[i].shape, sizeof es[i].shape);
    es[i].begin = wfile.entries[i].begin;
    es[i].end = wfile.entries[i].end;
  }
  return (int)wfile.count;
}

static int find_entry(const gen_entry *es, int n, const char *name) {
  int i;
  for (i = 0; i < n; ++i)
    if (strcmp(es[i].name, name) == 0) return i;
  fprintf(stderr, "FATAL: no entry %s\n", name);
  exit(1);
}

/* --------------------------------------------------------------- checking -- */

/* Load (config, weights); expect refusal (optionally with a given status and with
 * `needle` in the message). Returns the status. */
static cx_status expect_refused(const char *label, const char *cfg, size_t cfg_len, const unsigned char *w,
                                size_t wlen, cx_status want, const char *needle, int verbose) {
  cx_model_t *m = NULL;
  cx_status st = cx_model_load_from_memory(cfg, cfg_len, w, wlen, NULL, &m);
  const char *msg = cx_last_error();
  cases_run++;
  if (st == CX_STATUS_OK) {
    CHECK(0, "%s: accepted (must be refused)", label);
    cx_model_free(m);
    return st;
  }
  CHECK(m == NULL, "%s: out-param written on failure", label);
  CHECK(strncmp(msg, "[cx_model_load_from_memory] ", 28) == 0 && strlen(msg) > 29,
        "%s: message '%s' is empty or lacks the function name", label, msg);
  if (want >= 0) {
    CHECK(st == want, "%s: %s (want %s): %s", label, cx_status_name(st), cx_status_name(want), msg);
  }
  if (needle) CHECK(tu_contains(msg, needle), "%s: message '%s' lacks '%s'", label, msg, needle);
  if (verbose) printf("   %-36s %-26s %s\n", label, cx_status_name(st), msg + 28);
  return st;
}

#define ANY_STATUS ((cx_status)-1)

static void weights_refused(const char *label, const unsigned char *w, size_t wlen, cx_status want,
                            const char *needle) {
  expect_refused(label, config_text, config_len, w, wlen, want, needle, 1);
}

static void config_refused(const char *label, const char *cfg, cx_status want, const char *needle) {
  expect_refused(label, cfg, strlen(cfg), weights, weights_len, want, needle, 1);
}

/* ------------------------------------------------------------ the corpus -- */

static void truncated_files(void) {
  size_t cuts[16], k, n = 0, len;
  int refused = 0;
  char label[64];
  printf("-- truncated weights (every prefix of the first 64 bytes, and larger cuts)\n");
  for (len = 0; len <= 64; ++len) {
    cx_model_t *m = NULL;
    cx_status st = cx_model_load_from_memory(config_text, config_len, weights, len, NULL, &m);
    cases_run++;
    CHECK(st != CX_STATUS_OK, "a %zu-byte prefix was accepted", len);
    CHECK(st == CX_STATUS_OK || strncmp(cx_last_error(), "[cx_model_load_from_memory] ", 28) == 0,
          "prefix %zu: message '%s'", len, cx_last_error());
    if (st == CX_STATUS_OK) cx_model_free(m);
    refused += st != CX_STATUS_OK;
  }
  printf("   65 prefixes of 0..64 bytes: %d refused\n", refused);
  cuts[n++] = 100;
  cuts[n++] = 8 + (size_t)wfile.header_len - 1;
  cuts[n++] = 8 + (size_t)wfile.header_len;
  cuts[n++] = 8 + (size_t)wfile.header_len + 1;
  cuts[n++] = weights_len / 2;
  cuts[n++] = weights_len - 4;
  cuts[n++] = weights_len - 1;
  for (k = 0; k < n; ++k) {
    snprintf(label, sizeof label, "cut at %zu of %zu bytes", cuts[k], weights_len);
    weights_refused(label, weights, cuts[k], CX_STATUS_PARSE_ERROR, NULL);
  }
}

static void header_length_field(void) {
  size_t hlen = (size_t)wfile.header_len, len;
  const char *h = (const char *)weights + 8;
  unsigned char *f;
  static const struct {
    const char *label;
    uint64_t value;
  } bad[] = {{"header length = file size", 0},
             {"header length 2^63", (uint64_t)1 << 63},
             {"header length 2^64-1", UINT64_MAX},
             {"header length 100 MB + 1", 100000001u},
             {"header length 0", 0}};
  size_t k;
  printf("-- header length field\n");
  for (k = 0; k < sizeof bad / sizeof bad[0]; ++k) {
    uint64_t v = bad[k].value;
    if (k == 0) v = weights_len;
    f = build_file(h, hlen, v, data_section, data_len, &len);
    weights_refused(bad[k].label, f, len, CX_STATUS_PARSE_ERROR, NULL);
    free(f);
  }
  /* One less than the real header: the JSON is cut. */
  f = build_file(h, hlen, hlen - 1, data_section, data_len, &len);
  weights_refused("header length one short", f, len, CX_STATUS_PARSE_ERROR, NULL);
  free(f);
}

static void offsets(void) {
  gen_entry es[MAX_ENTRIES];
  int n, i;
  size_t len;
  unsigned char *f, *data2;
  printf("-- data_offsets\n");

  n = golden_entries(es);
  f = build(es, n, data_section, data_len, &len);
  {
    cx_model_t *m = NULL;
    /* Control: the regenerated file is valid. */
    EXPECT_OK(cx_model_load_from_memory(config_text, config_len, f, len, NULL, &m));
    cx_model_free(m);
  }
  free(f);

  /* Overlap: tensor 1 starts 4 bytes early (its size still matches its shape). */
  n = golden_entries(es);
  es[1].begin -= 4;
  es[1].end -= 4;
  f = build(es, n, data_section, data_len, &len);
  weights_refused("overlapping data_offsets", f, len, CX_STATUS_PARSE_ERROR, "overlap");
  free(f);

  /* Two tensors with identical offsets. */
  n = golden_entries(es);
  es[n - 1].begin = es[n - 2].begin;
  es[n - 1].end = es[n - 2].end;
  f = build(es, n, data_section, data_len - (size_t)(es[n - 2].end - es[n - 2].begin), &len);
  weights_refused("two tensors on the same bytes", f, len, CX_STATUS_PARSE_ERROR, NULL);
  free(f);

  /* Gap: 4 unused bytes after tensor 0. */
  n = golden_entries(es);
  data2 = tu_xmalloc(data_len + 4);
  memcpy(data2, data_section, (size_t)es[0].end);
  memset(data2 + es[0].end, 0, 4);
  memcpy(data2 + es[0].end + 4, data_section + es[0].end, data_len - (size_t)es[0].end);
  for (i = 1; i < n; ++i) {
    es[i].begin += 4;
    es[i].end += 4;
  }
  f = build(es, n, data2, data_len + 4, &len);
  weights_refused("gap in data_offsets", f, len, CX_STATUS_PARSE_ERROR, "gap");
  free(f);
  /* Trailing bytes no tensor covers. */
  n = golden_entries(es);
  memcpy(data2, data_section, data_len);
  f = build(es, n, data2, data_len + 4, &len);
  weights_refused("4 trailing bytes", f, len, CX_STATUS_PARSE_ERROR, NULL);
  free(f);
  free(data2);

  /* Past the end: the last tensor moved 4 bytes on. */
  n = golden_entries(es);
  es[n - 1].begin += 4;
  es[n - 1].end += 4;
  f = build(es, n, data_section, data_len, &len);
  weights_refused("data_offsets past the end", f, len, CX_STATUS_PARSE_ERROR, "past");
  free(f);

  /* Past the end by far (and past 2^63). */
  n = golden_entries(es);
  es[n - 1].begin = (uint64_t)1 << 62;
  es[n - 1].end = es[n - 1].begin + 96;
  f = build(es, n, data_section, data_len, &len);
  weights_refused("data_offsets at 2^62", f, len, CX_STATUS_PARSE_ERROR, NULL);
  free(f);
  n = golden_entries(es);
  es[n - 1].begin = UINT64_MAX - 95;
  es[n - 1].end = UINT64_MAX;
  f = build(es, n, data_section, data_len, &len);
  weights_refused("data_offsets near 2^64", f, len, CX_STATUS_PARSE_ERROR, NULL);
  free(f);

  /* Span that disagrees with the shape. */
  n = golden_entries(es);
  es[0].end -= 4;
  f = build(es, n, data_section, data_len, &len);
  weights_refused("span shorter than the shape", f, len, CX_STATUS_PARSE_ERROR, NULL);
  free(f);

  /* Malformed data_offsets values. */
  {
    static const char *const raws[] = {
        "{\"dtype\":\"F32\",\"shape\":[24],\"data_offsets\":[-96,0]}",
        "{\"dtype\":\"F32\",\"shape\":[24],\"data_offsets\":[96,0]}",
        "{\"dtype\":\"F32\",\"shape\":[24],\"data_offsets\":[0,96,192]}",
        "{\"dtype\":\"F32\",\"shape\":[24],\"data_offsets\":[0]}",
        "{\"dtype\":\"F32\",\"shape\":[24],\"data_offsets\":[0.5,96.5]}",
        "{\"dtype\":\"F32\",\"shape\":[24],\"data_offsets\":[\"0\",\"96\"]}",
        "{\"dtype\":\"F32\",\"shape\":[24],\"data_offsets\":null}",
        "{\"dtype\":\"F32\",\"shape\":[24]}",
        "{\"dtype\":\"F32\",\"data_offsets\":[0,96]}",
        "{\"shape\":[24],\"data_offsets\":[0,96]}",
        "{\"dtype\":\"F32\",\"shape\":[24],\"data_offsets\":[0,1e400]}",
        "{\"dtype\":\"F32\",\"shape\":[24],\"data_offsets\":[0,18446744073709551712]}",
        "[\"F32\",[24],[0,96]]",
        "\"F32\"",
        "null"};
    size_t k;
    for (k = 0; k < sizeof raws / sizeof raws[0]; ++k) {
      char label[96];
      const char *shown = strstr(raws[k], "\"shape\":[24],");
      n = golden_entries(es);
      es[n - 1].raw = raws[k];
      f = build(es, n, data_section, data_len, &len);
      snprintf(label, sizeof label, "norm.bias {%.60s", shown ? shown + 14 : raws[k]);
      weights_refused(label, f, len, CX_STATUS_PARSE_ERROR, NULL);
      free(f);
    }
  }
}

static void shapes_and_dtypes(void) {
  gen_entry es[MAX_ENTRIES];
  int n, k;
  size_t len;
  unsigned char *f;
  printf("-- shapes and dtypes\n");

  /* Huge dims whose byte size overflows 64 bits. */
  {
    static const int64_t dims[][3] = {{(int64_t)1 << 40, (int64_t)1 << 40, 0},
                                      {(int64_t)1 << 31, (int64_t)1 << 31, 0},
                                      {(int64_t)1 << 62, 4, 0},
                                      {INT64_MAX, 1, 0},
                                      {(int64_t)1 << 21, (int64_t)1 << 21, (int64_t)1 << 21}};
    for (k = 0; k < 5; ++k) {
      char label[96];
      n = golden_entries(es);
      es[0].ndim = dims[k][2] ? 3 : 2;
      es[0].shape[0] = dims[k][0];
      es[0].shape[1] = dims[k][1];
      es[0].shape[2] = dims[k][2];
      f = build(es, n, data_section, data_len, &len);
      snprintf(label, sizeof label, "shape [%lld, %lld%s]", (long long)dims[k][0], (long long)dims[k][1],
               dims[k][2] ? ", ..." : "");
      weights_refused(label, f, len, CX_STATUS_PARSE_ERROR, NULL);
      free(f);
    }
  }
  /* A big dim that does not overflow but disagrees with the offsets. */
  n = golden_entries(es);
  es[0].ndim = 1;
  es[0].shape[0] = (int64_t)1 << 40;
  f = build(es, n, data_section, data_len, &len);
  weights_refused("shape [2^40]", f, len, CX_STATUS_PARSE_ERROR, NULL);
  free(f);
  /* Negative dim, non-integer dim, 9-D shape of ones. */
  {
    static const char *const raws[] = {
        "{\"dtype\":\"F32\",\"shape\":[-24],\"data_offsets\":[37728,37824]}",
        "{\"dtype\":\"F32\",\"shape\":[-1,-24],\"data_offsets\":[37728,37824]}",
        "{\"dtype\":\"F32\",\"shape\":[24.5],\"data_offsets\":[37728,37824]}",
        "{\"dtype\":\"F32\",\"shape\":\"24\",\"data_offsets\":[37728,37824]}",
        "{\"dtype\":\"F32\",\"shape\":[[24]],\"data_offsets\":[37728,37824]}",
        "{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,24,1],\"data_offsets\":[37728,37824]}"};
    size_t j;
    for (j = 0; j < sizeof raws / sizeof raws[0]; ++j) {
      char label[80];
      n = golden_entries(es);
      if (es[n - 1].begin != 37728) {
        fprintf(stderr, "FATAL: unexpected golden layout\n");
        exit(1);
      }
      es[n - 1].raw = raws[j];
      f = build(es, n, data_section, data_len, &len);
      snprintf(label, sizeof label, "norm.bias {%.50s", raws[j] + 15);
      /* The last (a 22-D [.., 24, 1]) parses; the stack then refuses its shape. */
      weights_refused(label, f, len, j == 5 ? CX_STATUS_MISSING_TENSOR : CX_STATUS_PARSE_ERROR, NULL);
      free(f);
    }
  }

  /* Unknown dtype string. */
  n = golden_entries(es);
  snprintf(es[0].dtype, sizeof es[0].dtype, "F33");
  f = build(es, n, data_section, data_len, &len);
  weights_refused("dtype \"F33\"", f, len, CX_STATUS_PARSE_ERROR, "F33");
  free(f);
  n = golden_entries(es);
  snprintf(es[0].dtype, sizeof es[0].dtype, "f32");
  f = build(es, n, data_section, data_len, &len);
  weights_refused("dtype \"f32\" (lower case)", f, len, CX_STATUS_PARSE_ERROR, "f32");
  free(f);
  n = golden_entries(es);
  es[0].dtype[0] = '\0';
  f = build(es, n, data_section, data_len, &len);
  weights_refused("dtype \"\"", f, len, CX_STATUS_PARSE_ERROR, NULL);
  free(f);

  /* An integer dtype for a weight (same byte size, so the file itself is valid). */
  n = golden_entries(es);
  snprintf(es[0].dtype, sizeof es[0].dtype, "I32");
  f = build(es, n, data_section, data_len, &len);
  weights_refused("weight of dtype I32", f, len, ANY_STATUS, es[0].name);
  free(f);
  n = golden_entries(es);
  snprintf(es[n - 1].dtype, sizeof es[n - 1].dtype, "U32");
  f = build(es, n, data_section, data_len, &len);
  weights_refused("weight of dtype U32", f, len, ANY_STATUS, es[n - 1].name);
  free(f);

  /* A weight of the wrong shape (same element count). */
  n = golden_entries(es);
  es[0].shape[0] = 24;
  es[0].shape[1] = 96;
  f = build(es, n, data_section, data_len, &len);
  weights_refused("weight of shape [24, 96]", f, len, CX_STATUS_MISSING_TENSOR, es[0].name);
  free(f);
  n = golden_entries(es);
  es[n - 1].ndim = 2;
  es[n - 1].shape[0] = 1;
  es[n - 1].shape[1] = 24;
  f = build(es, n, data_section, data_len, &len);
  weights_refused("norm.bias of shape [1, 24]", f, len, CX_STATUS_MISSING_TENSOR, "norm.bias");
  free(f);

  /* Missing tensor (the last one and its bytes dropped). */
  n = golden_entries(es);
  f = build(es, n - 1, data_section, (size_t)es[n - 1].begin, &len);
  weights_refused("missing tensor norm.bias", f, len, CX_STATUS_MISSING_TENSOR, "norm.bias");
  free(f);
  /* Missing tensor in the middle (blocks.1's weight_hh). */
  {
    int drop;
    unsigned char *d2 = tu_xmalloc(data_len);
    uint64_t cut;
    n = golden_entries(es);
    drop = find_entry(es, n, "blocks.1.cell.net.weight_hh_l0");
    cut = es[drop].end - es[drop].begin;
    memcpy(d2, data_section, (size_t)es[drop].begin);
    memcpy(d2 + es[drop].begin, data_section + es[drop].end, data_len - (size_t)es[drop].end);
    for (k = drop + 1; k < n; ++k) {
      es[k].begin -= cut;
      es[k].end -= cut;
    }
    for (k = drop; k < n - 1; ++k) es[k] = es[k + 1];
    f = build(es, n - 1, d2, data_len - (size_t)cut, &len);
    weights_refused("missing blocks.1 weight_hh", f, len, CX_STATUS_MISSING_TENSOR, "weight_hh_l0");
    free(f);
    free(d2);
  }
  /* No tensors at all. */
  f = build(es, 0, NULL, 0, &len);
  weights_refused("no tensors ({})", f, len, CX_STATUS_MISSING_TENSOR, NULL);
  free(f);

  /* An extra tensor the config does not use. */
  {
    unsigned char *d2 = tu_xmalloc(data_len + 16);
    n = golden_entries(es);
    memcpy(d2, data_section, data_len);
    memset(d2 + data_len, 0, 16);
    memset(&es[n], 0, sizeof es[n]);
    snprintf(es[n].name, sizeof es[n].name, "extra.unused_weight");
    snprintf(es[n].dtype, sizeof es[n].dtype, "F32");
    es[n].ndim = 1;
    es[n].shape[0] = 4;
    es[n].begin = data_len;
    es[n].end = data_len + 16;
    f = build(es, n + 1, d2, data_len + 16, &len);
    weights_refused("extra unused tensor", f, len, CX_STATUS_MISSING_TENSOR, "extra.unused_weight");
    free(f);
    free(d2);
  }

  /* Positive control: every weight stored as F64 loads (converted, not reinterpreted). */
  {
    double *d64 = tu_xmalloc(data_len * 2);
    size_t i;
    cx_model_t *m = NULL;
    n = golden_entries(es);
    for (i = 0; i < data_len / 4; ++i) {
      float v;
      memcpy(&v, data_section + 4 * i, 4);
      d64[i] = (double)v;
    }
    for (k = 0; k < n; ++k) {
      snprintf(es[k].dtype, sizeof es[k].dtype, "F64");
      es[k].begin *= 2;
      es[k].end *= 2;
    }
    f = build(es, n, (const unsigned char *)d64, data_len * 2, &len);
    EXPECT_OK(cx_model_load_from_memory(config_text, config_len, f, len, NULL, &m));
    cx_model_free(m);
    free(f);
    free(d64);
  }
}

static void header_json_shapes(void) {
  gen_entry es[MAX_ENTRIES];
  int n;
  size_t len, hlen;
  unsigned char *f;
  char *h;
  printf("-- header JSON\n");

  /* Non-UTF-8 bytes in a tensor name and in the dtype. */
  n = golden_entries(es);
  es[0].name[0] = (char)0xFF;
  es[0].name[1] = (char)0xFE;
  f = build(es, n, data_section, data_len, &len);
  weights_refused("non-UTF-8 bytes in a name", f, len, CX_STATUS_PARSE_ERROR, NULL);
  free(f);
  n = golden_entries(es);
  snprintf(es[0].dtype, sizeof es[0].dtype, "F\xC3\x28");
  f = build(es, n, data_section, data_len, &len);
  weights_refused("invalid UTF-8 sequence in dtype", f, len, CX_STATUS_PARSE_ERROR, NULL);
  free(f);
  n = golden_entries(es);
  snprintf(es[0].name, sizeof es[0].name, "blocks.0\xED\xA0\x80");
  f = build(es, n, data_section, data_len, &len);
  weights_refused("UTF-8 surrogate in a name", f, len, CX_STATUS_PARSE_ERROR, NULL);
  free(f);

  /* Headers that are not objects, or not JSON. */
  {
    static const char *const heads[] = {"[]", "null", "42", "\"header\"", "", " ", "{", "{\"a\":}", "{}}",
                                        "{\"norm.bias\" {}}", "\x00\x00\x00\x00", "{\"__metadata__\": 5}",
                                        "{\"__metadata__\": {\"k\": 5}}"};
    size_t k;
    for (k = 0; k < sizeof heads / sizeof heads[0]; ++k) {
      char label[64];
      size_t hl = strlen(heads[k]);
      if (k == 10) hl = 4;
      f = build_file(heads[k], hl, hl, data_section, data_len, &len);
      snprintf(label, sizeof label, "header '%.20s'", k == 10 ? "\\0\\0\\0\\0" : heads[k]);
      weights_refused(label, f, len, CX_STATUS_PARSE_ERROR, NULL);
      free(f);
    }
  }

  /* Trailing garbage after the header object; a NUL inside it. */
  n = golden_entries(es);
  h = header_json(es, n, &hlen);
  {
    char *h2 = tu_xmalloc(hlen + 8);
    memcpy(h2, h, hlen);
    memcpy(h2 + hlen, " xx", 3);
    f = build_file(h2, hlen + 3, hlen + 3, data_section, data_len, &len);
    weights_refused("garbage after the header", f, len, CX_STATUS_PARSE_ERROR, NULL);
    free(f);
    memcpy(h2, h, hlen);
    h2[5] = '\0';
    f = build_file(h2, hlen, hlen, data_section, data_len, &len);
    weights_refused("NUL inside the header", f, len, CX_STATUS_PARSE_ERROR, NULL);
    free(f);
    /* Space padding after the object is allowed (the writers pad to 8 bytes). */
    memcpy(h2, h, hlen);
    memcpy(h2 + hlen, "       ", 7);
    f = build_file(h2, hlen + 7, hlen + 7, data_section, data_len, &len);
    {
      cx_model_t *m = NULL;
      EXPECT_OK(cx_model_load_from_memory(config_text, config_len, f, len, NULL, &m));
      cx_model_free(m);
    }
    free(f);
    free(h2);
  }
  free(h);

  /* A duplicated tensor name: must not crash; reported either way. */
  {
    cx_model_t *m = NULL;
    cx_status st;
    n = golden_entries(es);
    es[n] = es[n - 1];
    es[n].begin = data_len;
    es[n].end = data_len + (es[n - 1].end - es[n - 1].begin);
    {
      unsigned char *d2 = tu_xmalloc(data_len * 2);
      memcpy(d2, data_section, data_len);
      memcpy(d2 + data_len, data_section + es[n - 1].begin, (size_t)(es[n - 1].end - es[n - 1].begin));
      f = build(es, n + 1, d2, (size_t)es[n].end, &len);
      free(d2);
    }
    st = cx_model_load_from_memory(config_text, config_len, f, len, NULL, &m);
    cases_run++;
    printf("   %-34s %-26s %s\n", "duplicate tensor name", cx_status_name(st),
           st == CX_STATUS_OK ? "(accepted: the last definition wins)" : cx_last_error() + 28);
    CHECK(st == CX_STATUS_OK || cx_last_error()[0] != '\0', "duplicate name: no message");
    cx_model_free(m);
    free(f);
  }
}

/* ---------------------------------------------------------------- configs -- */

static char *cfg_replace(const char *from, const char *to) {
  const char *at = strstr(config_text, from);
  size_t a, b, c;
  char *out;
  if (at == NULL) {
    fprintf(stderr, "FATAL: '%s' not in the golden config\n", from);
    exit(1);
  }
  a = (size_t)(at - config_text);
  b = strlen(to);
  c = strlen(at + strlen(from));
  out = tu_xmalloc(a + b + c + 1);
  memcpy(out, config_text, a);
  memcpy(out + a, to, b);
  memcpy(out + a + b, at + strlen(from), c + 1);
  return out;
}

static void config_variant(const char *label, const char *from, const char *to, cx_status want, const char *needle) {
  char *c = cfg_replace(from, to);
  config_refused(label, c, want, needle);
  free(c);
}

static void configs(void) {
  size_t k, last_brace, refused = 0;
  char *deep;
  const size_t depth = 10000;
  const char *head = "{\"format\": \"cortex\", \"format_version\": 1, \"architecture\": \"cortex_stack\", \"config\": ";
  printf("-- malformed configs (valid weights)\n");

  config_refused("not JSON", "hello, world", CX_STATUS_PARSE_ERROR, NULL);
  config_refused("empty config", "", CX_STATUS_PARSE_ERROR, NULL);
  config_refused("JSON array", "[1, 2, 3]", CX_STATUS_PARSE_ERROR, NULL);
  config_refused("JSON null", "null", CX_STATUS_PARSE_ERROR, NULL);

  /* Every truncation of the config before its closing brace. */
  last_brace = config_len;
  while (last_brace > 0 && config_text[last_brace - 1] != '}') last_brace--;
  for (k = 0; k + 1 < last_brace; ++k) {
    cx_model_t *m = NULL;
    cx_status st = cx_model_load_from_memory(config_text, k, weights, weights_len, NULL, &m);
    cases_run++;
    CHECK(st != CX_STATUS_OK, "config truncated to %zu bytes was accepted", k);
    CHECK(st == CX_STATUS_OK || strncmp(cx_last_error(), "[cx_model_load_from_memory] ", 28) == 0,
          "truncated config: message '%s'", cx_last_error());
    if (st == CX_STATUS_OK) cx_model_free(m);
    refused += st != CX_STATUS_OK;
  }
  printf("   %zu truncations of the %zu-byte config: %zu refused\n", last_brace - 1, config_len, refused);

  /* 10000 nested arrays, objects, and an unclosed 100000-deep array. */
  deep = tu_xmalloc(strlen(head) + 10 * depth + 16);
  strcpy(deep, head);
  {
    size_t at = strlen(deep);
    memset(deep + at, '[', depth);
    memset(deep + at + depth, ']', depth);
    deep[at + 2 * depth] = '}';
    deep[at + 2 * depth + 1] = '\0';
  }
  config_refused("10000 nested arrays", deep, CX_STATUS_PARSE_ERROR, NULL);
  free(deep);
  deep = tu_xmalloc(strlen(head) + 10 * depth + 16);
  strcpy(deep, head);
  {
    size_t at = strlen(deep);
    for (k = 0; k < depth; ++k) memcpy(deep + at + 6 * k, "{\"a\": ", 6);
    at += 6 * depth;
    deep[at++] = '1';
    for (k = 0; k < depth; ++k) deep[at++] = '}';
    deep[at++] = '}';
    deep[at] = '\0';
  }
  config_refused("10000 nested objects", deep, CX_STATUS_PARSE_ERROR, NULL);
  free(deep);
  deep = tu_xmalloc(100001);
  memset(deep, '[', 100000);
  deep[100000] = '\0';
  config_refused("100000 unclosed '['", deep, CX_STATUS_PARSE_ERROR, NULL);
  free(deep);

  /* Header fields. */
  config_variant("format_version 2", "\"format_version\": 1", "\"format_version\": 2", CX_STATUS_UNSUPPORTED,
                 "format_version");
  config_variant("format_version \"1\"", "\"format_version\": 1", "\"format_version\": \"1\"", CX_STATUS_PARSE_ERROR,
                 "format_version");
  config_variant("format_version 1e999", "\"format_version\": 1", "\"format_version\": 1e999", ANY_STATUS, NULL);
  config_variant("format \"pytorch\"", "\"format\": \"cortex\"", "\"format\": \"pytorch\"", CX_STATUS_PARSE_ERROR,
                 "format");
  config_variant("architecture 7", "\"architecture\": \"cortex_stack\"", "\"architecture\": 7", CX_STATUS_PARSE_ERROR,
                 "architecture");
  config_variant("architecture \"nope\"", "\"architecture\": \"cortex_stack\"", "\"architecture\": \"nope\"",
                 CX_STATUS_UNSUPPORTED, "nope");
  config_variant("config is a list", "\"config\": {", "\"config\": [{", ANY_STATUS, NULL);

  /* d_hidden. */
  config_variant("missing d_hidden", "\"d_hidden\": 24,", "", CX_STATUS_PARSE_ERROR, "d_hidden");
  config_variant("negative d_hidden", "\"d_hidden\": 24", "\"d_hidden\": -24", ANY_STATUS, "d_hidden");
  config_variant("d_hidden 0", "\"d_hidden\": 24", "\"d_hidden\": 0", ANY_STATUS, "d_hidden");
  config_variant("d_hidden 1e12", "\"d_hidden\": 24", "\"d_hidden\": 1e12", ANY_STATUS, "d_hidden");
  config_variant("d_hidden 2^63", "\"d_hidden\": 24", "\"d_hidden\": 9223372036854775808", ANY_STATUS, "d_hidden");
  config_variant("d_hidden 1e400", "\"d_hidden\": 24", "\"d_hidden\": 1e400", ANY_STATUS, NULL);
  config_variant("d_hidden 24.5", "\"d_hidden\": 24", "\"d_hidden\": 24.5", ANY_STATUS, "d_hidden");
  config_variant("d_hidden \"24\"", "\"d_hidden\": 24", "\"d_hidden\": \"24\"", CX_STATUS_PARSE_ERROR, "d_hidden");
  config_variant("d_hidden null", "\"d_hidden\": 24", "\"d_hidden\": null", CX_STATUS_PARSE_ERROR, "d_hidden");
  config_variant("d_hidden 12 (weights are 24)", "\"d_hidden\": 24", "\"d_hidden\": 12", CX_STATUS_MISSING_TENSOR,
                 NULL);

  /* Blocks and cells. */
  config_variant("block_type \"nope\"", "\"block_type\": \"passthrough\"", "\"block_type\": \"nope\"",
                 CX_STATUS_UNSUPPORTED, "nope");
  config_variant("missing block_type", "\"block_type\": \"passthrough\"", "\"block_typo\": \"passthrough\"",
                 CX_STATUS_PARSE_ERROR, "block_type");
  config_variant("cell_type \"mystery\"", "\"cell_type\": \"lstm\"", "\"cell_type\": \"mystery\"",
                 CX_STATUS_UNSUPPORTED, "mystery");
  config_variant("num_layers 2", "\"num_layers\": 1", "\"num_layers\": 2", CX_STATUS_UNSUPPORTED, "num_layers");
  config_variant("num_layers -1", "\"num_layers\": 1", "\"num_layers\": -1", CX_STATUS_UNSUPPORTED, "num_layers");
  config_variant("proj_size 4", "\"proj_size\": 0", "\"proj_size\": 4", CX_STATUS_UNSUPPORTED, "proj_size");
  config_variant("bias \"yes\"", "\"bias\": true", "\"bias\": \"yes\"", CX_STATUS_PARSE_ERROR, "bias");
  config_variant("bias false (weights have one)", "\"bias\": true", "\"bias\": false", CX_STATUS_MISSING_TENSOR,
                 "bias");
  config_variant("cell null", "\"cell\": {", "\"cell\": null, \"x\": {", CX_STATUS_PARSE_ERROR, NULL);
  config_variant("blocks is an object", "\"blocks\": [", "\"blocks\": {\"a\": [", ANY_STATUS, NULL);
  config_variant("post_norm false (norm weights unused)", "\"post_norm\": true", "\"post_norm\": false",
                 CX_STATUS_MISSING_TENSOR, "norm");
  config_variant("post_norm 3", "\"post_norm\": true", "\"post_norm\": 3", CX_STATUS_PARSE_ERROR, "post_norm");
  config_variant("routed_adapter without num_slots", "\"routed_adapter\": null",
                 "\"routed_adapter\": {\"enabled\": true}", CX_STATUS_PARSE_ERROR, "num_slots");
  config_variant("routed_adapter rank 0", "\"routed_adapter\": null",
                 "\"routed_adapter\": {\"num_slots\": 2, \"rank\": 0}", CX_STATUS_UNSUPPORTED, "rank");
  config_variant("routed_adapter alpha -1", "\"routed_adapter\": null",
                 "\"routed_adapter\": {\"num_slots\": 2, \"alpha\": -1}", CX_STATUS_UNSUPPORTED, "alpha");

  /* Bytes. */
  config_variant("invalid UTF-8 in a string", "\"lstm\"", "\"ls\xC3\x28m\"", CX_STATUS_PARSE_ERROR, NULL);
  config_variant("lone surrogate escape", "\"lstm\"", "\"\\ud800\"", ANY_STATUS, NULL);
  config_variant("control character in a string", "\"lstm\"", "\"ls\x01tm\"", CX_STATUS_PARSE_ERROR, NULL);
  config_variant("trailing comma", "\"routed_adapter\": null", "\"routed_adapter\": null,", CX_STATUS_PARSE_ERROR,
                 NULL);
  config_variant("single quotes", "\"post_norm\": true", "'post_norm': true", CX_STATUS_PARSE_ERROR, NULL);
  {
    /* A NUL byte in the middle (length passed explicitly). */
    cx_model_t *m = NULL;
    char *c = cfg_replace("\"lstm\"", "\"ls\"");
    size_t at = (size_t)(strstr(c, "\"ls\"") - c) + 2;
    cx_status st;
    c[at] = '\0';
    st = cx_model_load_from_memory(c, strlen(c + at + 1) + at + 1, weights, weights_len, NULL, &m);
    cases_run++;
    CHECK(st != CX_STATUS_OK, "a NUL inside the config was accepted");
    if (st == CX_STATUS_OK) cx_model_free(m);
    free(c);
  }

  /* 5000 blocks: more than the 4096 limit. */
  {
    const char *block = "{\"cell\": {\"cell_type\": \"lstm\"}, \"block_type\": \"passthrough\"},";
    size_t bl = strlen(block), nb = 5000, at;
    char *big = tu_xmalloc(strlen(head) + nb * bl + 64);
    strcpy(big, head);
    strcat(big, "{\"d_hidden\": 24, \"blocks\": [");
    at = strlen(big);
    for (k = 0; k < nb; ++k) memcpy(big + at + k * bl, block, bl);
    at += nb * bl - 1; /* drop the last comma */
    strcpy(big + at, "]}}");
    config_refused("5000 blocks", big, ANY_STATUS, NULL);
    free(big);
  }
}

/* --------------------------------------------------------- random mutation -- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static void random_mutations(void) {
  unsigned char *w = tu_xmalloc(weights_len);
  char *c = tu_xmalloc(config_len + 1);
  size_t hdr = 8 + (size_t)wfile.header_len;
  int i, j, ok = 0, refused = 0;
  const int rounds = 3000;
  printf("-- %d seeded random mutations (header bytes of the weights, or config bytes)\n", rounds);
  for (i = 0; i < rounds; ++i) {
    cx_model_t *m = NULL;
    cx_status st;
    size_t wl = weights_len, cl = config_len;
    int edits = 1 + (int)(rnd() % 4);
    memcpy(w, weights, weights_len);
    memcpy(c, config_text, config_len + 1);
    for (j = 0; j < edits; ++j) {
      uint64_t r = rnd();
      unsigned char byte = (unsigned char)(r >> 32);
      static const char interesting[] = "{}[]\",:0123456789-e.\\ \xff";
      if (r & 1) byte = (unsigned char)interesting[(r >> 40) % (sizeof interesting - 1)];
      if (i % 2 == 0) {
        w[(size_t)((r >> 8) % hdr)] = byte;
      } else {
        c[(size_t)((r >> 8) % config_len)] = (char)byte;
      }
    }
    if (rnd() % 16 == 0) {
      if (i % 2 == 0) {
        wl = (size_t)(rnd() % weights_len);
      } else {
        cl = (size_t)(rnd() % config_len);
      }
    }
    st = cx_model_load_from_memory(c, cl, w, wl, NULL, &m);
    cases_run++;
    if (st == CX_STATUS_OK) {
      ok++;
      cx_model_free(m);
    } else {
      refused++;
      CHECK(strncmp(cx_last_error(), "[cx_model_load_from_memory] ", 28) == 0, "mutation %d: message '%s'", i,
            cx_last_error());
      CHECK(st != CX_STATUS_INTERNAL, "mutation %d: CX_STATUS_INTERNAL: %s", i, cx_last_error());
    }
  }
  printf("   %d refused, %d still valid (e.g. a changed digit in the data or whitespace)\n", refused, ok);
  free(w);
  free(c);
}

int main(int argc, char **argv) {
  char *model_dir, *cfg_path, *w_path;
  char err[256];
  cx_model_t *m = NULL;
  if (argc != 2) {
    fprintf(stderr, "usage: %s GOLDEN_DIR\n", argv[0]);
    return 2;
  }
  model_dir = tu_path(argv[1], "model");
  cfg_path = tu_path(model_dir, "config.json");
  w_path = tu_path(model_dir, "model.safetensors");
  {
    unsigned char *raw = tu_read_file(cfg_path, &config_len);
    config_text = tu_xmalloc(config_len + 1);
    memcpy(config_text, raw, config_len);
    config_text[config_len] = '\0';
    free(raw);
  }
  weights = tu_read_file(w_path, &weights_len);
  if (!tu_st_parse(weights, weights_len, &wfile, err, sizeof err) || wfile.count + 2 > MAX_ENTRIES) {
    fprintf(stderr, "FATAL: %s: %s\n", w_path, err);
    return 1;
  }
  data_section = weights + 8 + wfile.header_len;
  data_len = weights_len - 8 - (size_t)wfile.header_len;
  /* Control: the unmodified files load. */
  REQUIRE_OK(cx_model_load_from_memory(config_text, config_len, weights, weights_len, NULL, &m));
  cx_model_free(m);

  truncated_files();
  header_length_field();
  offsets();
  shapes_and_dtypes();
  header_json_shapes();
  configs();
  random_mutations();

  printf("%d malformed inputs loaded, no crash\n", cases_run);
  tu_st_free(&wfile);
  free(weights);
  free(config_text);
  free(model_dir);
  free(cfg_path);
  free(w_path);
  return tu_finish("test_malformed");
}
