/* test_util.c — see test_util.h. */
#include "test_util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tu_failures = 0;
int tu_checks = 0;

void tu_fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  tu_failures++;
  fprintf(stderr, "FAIL %s:%d: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

int tu_contains(const char *haystack, const char *needle) {
  return haystack != NULL && needle != NULL && strstr(haystack, needle) != NULL;
}

int tu_expect_status(cx_status got, cx_status expected, const char *text, const char *file, int line) {
  const char *msg = cx_last_error();
  tu_checks++;
  if (got != expected) {
    tu_fail(file, line, "%s\n    returned %s, expected %s; message: '%s'", text, cx_status_name(got),
            cx_status_name(expected), msg);
    return 0;
  }
  if (expected != CX_STATUS_OK) {
    if (msg == NULL || msg[0] == '\0' || strncmp(msg, "[cx_", 4) != 0) {
      tu_fail(file, line, "%s\n    returned %s as expected, but the message is '%s' (want '[cx_...')", text,
              cx_status_name(got), msg ? msg : "(NULL)");
      return 0;
    }
  } else if (msg == NULL || msg[0] != '\0') {
    tu_fail(file, line, "%s\n    succeeded but cx_last_error() is '%s' (want \"\")", text, msg ? msg : "(NULL)");
    return 0;
  }
  return 1;
}

void tu_require_ok(cx_status got, const char *text, const char *file, int line) {
  if (got != CX_STATUS_OK) {
    fprintf(stderr, "FATAL %s:%d: %s returned %s: %s\n", file, line, text, cx_status_name(got), cx_last_error());
    exit(1);
  }
}

int tu_finish(const char *name) {
  if (tu_failures == 0) {
    printf("%s: all %d checks passed\n", name, tu_checks);
    return 0;
  }
  printf("%s: %d of %d checks FAILED\n", name, tu_failures, tu_checks);
  return 1;
}

void tu_todo_skip(const char *name, const char *reason) {
  printf("SKIP(TODO %s): %s\n", name, reason);
}

/* ------------------------------------------------------------------- files -- */

void *tu_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (p == NULL) {
    fprintf(stderr, "FATAL: out of memory (%zu bytes)\n", n);
    exit(1);
  }
  return p;
}

unsigned char *tu_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  unsigned char *buf;
  long n;
  if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
    fprintf(stderr, "FATAL: cannot read %s\n", path);
    exit(1);
  }
  buf = tu_xmalloc((size_t)n + 1);  /* NUL-terminated, so text files can be searched */
  buf[n] = 0;
  if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    fprintf(stderr, "FATAL: short read on %s\n", path);
    exit(1);
  }
  fclose(f);
  *len = (size_t)n;
  return buf;
}

int tu_write_file(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  int ok;
  if (f == NULL) return 0;
  ok = fwrite(data, 1, len, f) == len;
  return fclose(f) == 0 && ok;
}

char *tu_path(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  char *p = tu_xmalloc(a + b + 2);
  memcpy(p, dir, a);
  p[a] = '/';
  memcpy(p + a + 1, name, b + 1);
  return p;
}

/* ------------------------------------------------------------- safetensors -- */

/* A tiny JSON scanner for safetensors headers: objects, arrays, strings, integers. */
typedef struct {
  const char *p, *end;
} cur_t;

static void ws(cur_t *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int eat(cur_t *c, char ch) {
  ws(c);
  if (c->p < c->end && *c->p == ch) {
    c->p++;
    return 1;
  }
  return 0;
}

/* A string into out (escapes decoded; \u as '?'); truncation is an error. */
static int jstring(cur_t *c, char *out, size_t cap) {
  size_t n = 0;
  ws(c);
  if (c->p >= c->end || *c->p != '"') return 0;
  c->p++;
  while (c->p < c->end && *c->p != '"') {
    char ch = *c->p++;
    if (ch == '\\') {
      if (c->p >= c->end) return 0;
      ch = *c->p++;
      switch (ch) {
        case 'n': ch = '\n'; break;
        case 't': ch = '\t'; break;
        case 'r': ch = '\r'; break;
        case 'b': ch = '\b'; break;
        case 'f': ch = '\f'; break;
        case 'u':
          if (c->end - c->p < 4) return 0;
          c->p += 4;
          ch = '?';
          break;
        default: break; /* \" \\ \/ */
      }
    }
    if (n + 1 >= cap) return 0;
    out[n++] = ch;
  }
  if (c->p >= c->end) return 0;
  c->p++;
  out[n] = '\0';
  return 1;
}

static int jint(cur_t *c, int64_t *v) {
  int64_t x = 0;
  int digits = 0;
  ws(c);
  if (c->p < c->end && *c->p == '-') return 0;
  while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
    if (x > (INT64_MAX - 9) / 10) return 0;
    x = x * 10 + (*c->p++ - '0');
    digits++;
  }
  *v = x;
  return digits > 0;
}

static int jskip(cur_t *c, int depth) {
  char tmp[4096];
  if (depth > 64) return 0;
  ws(c);
  if (c->p >= c->end) return 0;
  if (*c->p == '"') return jstring(c, tmp, sizeof tmp);
  if (*c->p == '{' || *c->p == '[') {
    char close = *c->p == '{' ? '}' : ']';
    int object = *c->p == '{';
    c->p++;
    if (eat(c, close)) return 1;
    do {
      if (object) {
        if (!jstring(c, tmp, sizeof tmp) || !eat(c, ':')) return 0;
      }
      if (!jskip(c, depth + 1)) return 0;
    } while (eat(c, ','));
    return eat(c, close);
  }
  while (c->p < c->end && *c->p != ',' && *c->p != '}' && *c->p != ']') c->p++; /* number, literal */
  return 1;
}

static int jint_array(cur_t *c, int64_t *out, int cap, int *count) {
  int n = 0;
  if (!eat(c, '[')) return 0;
  if (eat(c, ']')) {
    *count = 0;
    return 1;
  }
  do {
    if (n >= cap || !jint(c, &out[n])) return 0;
    n++;
  } while (eat(c, ','));
  *count = n;
  return eat(c, ']');
}

int tu_st_parse(const unsigned char *bytes, size_t len, tu_st_file *out, char *err, size_t errcap) {
  uint64_t n = 0;
  cur_t c;
  size_t cap = 16;
  int k;
  memset(out, 0, sizeof *out);
  if (len < 8) {
    snprintf(err, errcap, "shorter than 8 bytes");
    return 0;
  }
  for (k = 0; k < 8; ++k) n |= (uint64_t)bytes[k] << (8 * k);
  if (n > len - 8) {
    snprintf(err, errcap, "header length %llu past the end", (unsigned long long)n);
    return 0;
  }
  out->bytes = bytes;
  out->len = len;
  out->header_len = n;
  out->entries = tu_xmalloc(cap * sizeof *out->entries);
  c.p = (const char *)bytes + 8;
  c.end = c.p + n;
  if (!eat(&c, '{')) goto bad;
  if (eat(&c, '}')) return 1;
  do {
    tu_st_entry e;
    memset(&e, 0, sizeof e);
    if (!jstring(&c, e.name, sizeof e.name) || !eat(&c, ':')) goto bad;
    if (strcmp(e.name, "__metadata__") == 0) {
      if (!jskip(&c, 0)) goto bad;
      continue;
    }
    if (!eat(&c, '{')) goto bad;
    if (!eat(&c, '}')) {
      do {
        char key[64];
        if (!jstring(&c, key, sizeof key) || !eat(&c, ':')) goto bad;
        if (strcmp(key, "dtype") == 0) {
          if (!jstring(&c, e.dtype, sizeof e.dtype)) goto bad;
        } else if (strcmp(key, "shape") == 0) {
          if (!jint_array(&c, e.shape, TU_MAX_RANK, &e.ndim)) goto bad;
        } else if (strcmp(key, "data_offsets") == 0) {
          int64_t offs[2];
          int cnt = 0;
          if (!jint_array(&c, offs, 2, &cnt) || cnt != 2) goto bad;
          e.begin = (uint64_t)offs[0];
          e.end = (uint64_t)offs[1];
        } else if (!jskip(&c, 0)) {
          goto bad;
        }
      } while (eat(&c, ','));
      if (!eat(&c, '}')) goto bad;
    }
    if (e.end < e.begin || e.end > len - 8 - n) {
      snprintf(err, errcap, "tensor '%s': data_offsets out of range", e.name);
      tu_st_free(out);
      return 0;
    }
    if (out->count == cap) {
      tu_st_entry *grown = tu_xmalloc(2 * cap * sizeof *grown);
      memcpy(grown, out->entries, cap * sizeof *grown);
      free(out->entries);
      out->entries = grown;
      cap *= 2;
    }
    out->entries[out->count++] = e;
  } while (eat(&c, ','));
  if (!eat(&c, '}')) goto bad;
  return 1;
bad:
  snprintf(err, errcap, "malformed header JSON near byte %ld", (long)(c.p - (const char *)bytes));
  tu_st_free(out);
  return 0;
}

void tu_st_load(const char *path, tu_st_file *out) {
  size_t len;
  char err[256];
  unsigned char *bytes = tu_read_file(path, &len);
  if (!tu_st_parse(bytes, len, out, err, sizeof err)) {
    fprintf(stderr, "FATAL: %s: %s\n", path, err);
    exit(1);
  }
  out->owned = bytes;
}

void tu_st_free(tu_st_file *f) {
  free(f->entries);
  free(f->owned);
  memset(f, 0, sizeof *f);
}

const tu_st_entry *tu_st_find(const tu_st_file *f, const char *name) {
  size_t i;
  for (i = 0; i < f->count; ++i) {
    if (strcmp(f->entries[i].name, name) == 0) return &f->entries[i];
  }
  return NULL;
}

int64_t tu_st_numel(const tu_st_entry *e) {
  int64_t n = 1;
  int i;
  for (i = 0; i < e->ndim; ++i) n *= e->shape[i];
  return n;
}

float *tu_st_f32(const tu_st_file *f, const char *name, const tu_st_entry **entry) {
  const tu_st_entry *e = tu_st_find(f, name);
  float *out;
  int64_t n;
  if (e == NULL) {
    fprintf(stderr, "FATAL: tensor '%s' is missing\n", name);
    exit(1);
  }
  n = tu_st_numel(e);
  if (strcmp(e->dtype, "F32") != 0 || (uint64_t)n * 4 != e->end - e->begin) {
    fprintf(stderr, "FATAL: tensor '%s' is %s with %lld elements over %llu bytes (want F32)\n", name, e->dtype,
            (long long)n, (unsigned long long)(e->end - e->begin));
    exit(1);
  }
  out = tu_xmalloc((size_t)n * sizeof(float));
  /* Little-endian host assumed (x86-64, aarch64). */
  memcpy(out, f->bytes + 8 + f->header_len + e->begin, (size_t)n * sizeof(float));
  if (entry) *entry = e;
  return out;
}

/* ---------------------------------------------------------------- tensors -- */

DLTensor tu_dl(void *data, uint8_t code, uint8_t bits, int32_t ndim, int64_t *shape, int64_t *strides) {
  DLTensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.device.device_type = kDLCPU;
  t.device.device_id = 0;
  t.ndim = ndim;
  t.dtype.code = code;
  t.dtype.bits = bits;
  t.dtype.lanes = 1;
  t.shape = shape;
  t.strides = strides;
  t.byte_offset = 0;
  return t;
}

DLTensor tu_dl_f32(float *data, int32_t ndim, int64_t *shape) { return tu_dl(data, kDLFloat, 32, ndim, shape, NULL); }

const float *tu_tensor_floats(const cx_tensor_t *t, int64_t *numel) {
  const DLTensor *v = NULL;
  int64_t n = 1;
  int i;
  REQUIRE_OK(cx_tensor_view(t, &v));
  if (v->dtype.code != kDLFloat || v->dtype.bits != 32 || v->device.device_type != kDLCPU) {
    fprintf(stderr, "FATAL: tensor is not a float32 CPU tensor\n");
    exit(1);
  }
  for (i = 0; i < v->ndim; ++i) n *= v->shape[i];
  if (v->strides != NULL) {
    int64_t expect = 1;
    for (i = v->ndim - 1; i >= 0; --i) {
      if (v->shape[i] > 1 && v->strides[i] != expect) {
        fprintf(stderr, "FATAL: output tensor is not compact\n");
        exit(1);
      }
      expect *= v->shape[i];
    }
  }
  if (numel) *numel = n;
  return (const float *)((const char *)v->data + v->byte_offset);
}

double tu_max_abs_diff(const float *a, const float *b, size_t n) {
  double m = 0;
  size_t i;
  for (i = 0; i < n; ++i) {
    double d = fabs((double)a[i] - (double)b[i]);
    if (d > m || d != d) m = d != d ? INFINITY : d;
  }
  return m;
}

double tu_max_abs(const float *a, size_t n) {
  double m = 0;
  size_t i;
  for (i = 0; i < n; ++i) {
    double d = fabs((double)a[i]);
    if (d > m) m = d;
  }
  return m;
}

double tu_check_close_rel(const char *what, const float *got, const float *ref, size_t n, double rel) {
  double err = tu_max_abs_diff(got, ref, n);
  double scale = tu_max_abs(ref, n);
  double tol = rel * (scale > 1 ? scale : 1);
  printf("  %-40s max|err| %.3e (tolerance %.3e)\n", what, err, tol);
  CHECK(err <= tol, "%s: max |err| %.3e > tolerance %.3e", what, err, tol);
  return err;
}

double tu_check_close(const char *what, const float *got, const float *ref, size_t n) {
  return tu_check_close_rel(what, got, ref, n, 1e-5);
}

/* ------------------------------------------------------------------ state -- */

unsigned char *tu_bytes(tu_to_bytes_fn to_bytes, const void *handle, size_t *len) {
  size_t needed = 0;
  unsigned char *buf;
  cx_status st = to_bytes(handle, NULL, 0, &needed);
  if (st != CX_STATUS_BUFFER_TOO_SMALL || needed == 0) {
    fprintf(stderr, "FATAL: to_bytes size query returned %s: %s\n", cx_status_name(st), cx_last_error());
    exit(1);
  }
  buf = tu_xmalloc(needed);
  REQUIRE_OK(to_bytes(handle, buf, needed, len));
  CHECK(*len == needed, "to_bytes wrote %zu bytes, the size query said %zu", *len, needed);
  return buf;
}

int tu_bytes_equal(tu_to_bytes_fn to_bytes, const void *handle, const unsigned char *bytes, size_t len) {
  size_t n = 0;
  unsigned char *now = tu_bytes(to_bytes, handle, &n);
  int same = n == len && memcmp(now, bytes, len) == 0;
  free(now);
  return same;
}

static cx_status state_to_bytes(const void *h, void *buf, size_t cap, size_t *needed) {
  return cx_state_to_bytes((const cx_state_t *)h, buf, cap, needed);
}

static cx_status session_to_bytes(const void *h, void *buf, size_t cap, size_t *needed) {
  return cx_session_to_bytes((const cx_session_t *)h, buf, cap, needed);
}

unsigned char *tu_state_bytes(const cx_state_t *s, size_t *len) { return tu_bytes(state_to_bytes, s, len); }
int tu_state_equals(const cx_state_t *s, const unsigned char *bytes, size_t len) {
  return tu_bytes_equal(state_to_bytes, s, bytes, len);
}
unsigned char *tu_session_bytes(const cx_session_t *s, size_t *len) { return tu_bytes(session_to_bytes, s, len); }
int tu_session_equals(const cx_session_t *s, const unsigned char *bytes, size_t len) {
  return tu_bytes_equal(session_to_bytes, s, bytes, len);
}

/* ------------------------------------------------------------ half floats -- */

static uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

uint16_t tu_f32_to_f16(float f) {
  uint32_t x = f32_bits(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  int32_t e = (int32_t)((x >> 23) & 0xFF);
  uint32_t man = x & 0x7FFFFFu;
  uint32_t half, rem, halfway;
  int32_t exp = e - 127 + 15;
  if (e == 0xFF) return (uint16_t)(sign | 0x7C00u | (man ? 0x200u : 0));
  if (exp >= 31) return (uint16_t)(sign | 0x7C00u);
  if (exp <= 0) {
    uint32_t shift;
    if (exp < -10) return (uint16_t)sign;
    man |= 0x800000u;
    shift = (uint32_t)(14 - exp);
    half = man >> shift;
    rem = man & ((1u << shift) - 1);
    halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half & 1))) half++;
    return (uint16_t)(sign | half);
  }
  half = ((uint32_t)exp << 10) | (man >> 13);
  rem = man & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) half++; /* may carry into inf: correct */
  return (uint16_t)(sign | half);
}

float tu_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1Fu;
  uint32_t man = h & 0x3FFu;
  if (e == 0) {
    float v = (float)man * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (e == 31) return bits_f32(sign | 0x7F800000u | (man << 13));
  return bits_f32(sign | ((e + 112) << 23) | (man << 13));
}

uint16_t tu_f32_to_bf16(float f) {
  uint32_t x = f32_bits(f);
  uint32_t lsb = (x >> 16) & 1u;
  if ((x & 0x7F800000u) == 0x7F800000u && (x & 0x7FFFFFu)) return (uint16_t)((x >> 16) | 0x40u);
  return (uint16_t)((x + 0x7FFFu + lsb) >> 16);
}

float tu_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }
