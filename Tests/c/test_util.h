/*
 * test_util.h — shared helpers of the C tests: checks, files, a minimal (test-only)
 * safetensors reader, DLTensor builders and state snapshots.
 */
#ifndef CORTEX_TEST_UTIL_H
#define CORTEX_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "cortex.h"

/* ------------------------------------------------------------------ checks -- */

extern int tu_failures;
extern int tu_checks;

void tu_fail(const char *file, int line, const char *fmt, ...);

/* CHECK(cond, printf-format, ...): record a failure (and go on) when cond is false. */
#define CHECK(cond, ...)                                 \
  do {                                                   \
    tu_checks++;                                         \
    if (!(cond)) tu_fail(__FILE__, __LINE__, __VA_ARGS__); \
  } while (0)

/* The status of a Cortex call must be `expected`; a failure must also leave a
 * message starting with "[cx_". Returns 1 when it matched. */
int tu_expect_status(cx_status got, cx_status expected, const char *text, const char *file, int line);
#define EXPECT_STATUS(call, expected) tu_expect_status((call), (expected), #call, __FILE__, __LINE__)
#define EXPECT_OK(call) tu_expect_status((call), CX_STATUS_OK, #call, __FILE__, __LINE__)

/* A call the rest of the test depends on: exit(1) on failure. */
void tu_require_ok(cx_status got, const char *text, const char *file, int line);
#define REQUIRE_OK(call) tu_require_ok((call), #call, __FILE__, __LINE__)

/* The last error message must contain `needle`. */
#define EXPECT_MESSAGE_HAS(needle) \
  CHECK(tu_contains(cx_last_error(), (needle)), "message '%s' lacks '%s'", cx_last_error(), (needle))
int tu_contains(const char *haystack, const char *needle);

/* Print the summary line and return the process exit status. */
int tu_finish(const char *name);

/* Print "SKIP(TODO name): reason" — for a check disabled because of a known library bug. */
void tu_todo_skip(const char *name, const char *reason);

/* ------------------------------------------------------------------- files -- */

/* Whole file, malloc'd, exits on failure. */
unsigned char *tu_read_file(const char *path, size_t *len);
int tu_write_file(const char *path, const void *data, size_t len);
/* "a/b", malloc'd. */
char *tu_path(const char *dir, const char *name);
void *tu_xmalloc(size_t n);

/* ------------------------------------------------------------- safetensors -- */

#define TU_MAX_RANK 8

typedef struct {
  char name[256];
  char dtype[16];
  int ndim;
  int64_t shape[TU_MAX_RANK];
  uint64_t begin, end; /* data_offsets, relative to the data section */
} tu_st_entry;

typedef struct {
  const unsigned char *bytes; /* borrowed (tu_st_parse) or owned (tu_st_load) */
  unsigned char *owned;
  size_t len;
  uint64_t header_len;
  size_t count;
  tu_st_entry *entries; /* in header order */
} tu_st_file;

/* Parse a safetensors buffer (borrowed). Returns 0 and a reason in err on failure. */
int tu_st_parse(const unsigned char *bytes, size_t len, tu_st_file *out, char *err, size_t errcap);
/* Read and parse a file; exits on failure. */
void tu_st_load(const char *path, tu_st_file *out);
void tu_st_free(tu_st_file *f);
const tu_st_entry *tu_st_find(const tu_st_file *f, const char *name);
int64_t tu_st_numel(const tu_st_entry *e);
/* A malloc'd float32 copy of tensor `name` (must exist and be F32); exits otherwise. */
float *tu_st_f32(const tu_st_file *f, const char *name, const tu_st_entry **entry);

/* ---------------------------------------------------------------- tensors -- */

DLTensor tu_dl(void *data, uint8_t code, uint8_t bits, int32_t ndim, int64_t *shape, int64_t *strides);
DLTensor tu_dl_f32(float *data, int32_t ndim, int64_t *shape);

/* Borrowed float32 data of a compact float32 tensor handle; *numel receives its size. */
const float *tu_tensor_floats(const cx_tensor_t *t, int64_t *numel);

/* max |a - b| and max |a| over n floats. */
double tu_max_abs_diff(const float *a, const float *b, size_t n);
double tu_max_abs(const float *a, size_t n);

/* Compare against a reference: max|got - ref| <= rel * max(1, max|ref|). Prints the
 * error and the tolerance, records a failure; returns the error. tu_check_close is the
 * golden tolerance, rel = 1e-5. */
double tu_check_close_rel(const char *what, const float *got, const float *ref, size_t n, double rel);
double tu_check_close(const char *what, const float *got, const float *ref, size_t n);

/* ------------------------------------------------------------------ state -- */

/* A handle's serialization through its size-query to_bytes call (cx_state_to_bytes,
 * cx_session_to_bytes, ...) into a malloc'd buffer; exits on failure. */
typedef cx_status (*tu_to_bytes_fn)(const void *handle, void *buf, size_t cap, size_t *needed);
unsigned char *tu_bytes(tu_to_bytes_fn to_bytes, const void *handle, size_t *len);
/* Is the handle's serialization exactly `bytes`? */
int tu_bytes_equal(tu_to_bytes_fn to_bytes, const void *handle, const unsigned char *bytes, size_t len);

/* The two blobs the tests compare most. */
unsigned char *tu_state_bytes(const cx_state_t *s, size_t *len);
int tu_state_equals(const cx_state_t *s, const unsigned char *bytes, size_t len);
unsigned char *tu_session_bytes(const cx_session_t *s, size_t *len);
int tu_session_equals(const cx_session_t *s, const unsigned char *bytes, size_t len);

/* float <-> IEEE half / bfloat16 bits, round to nearest even. */
uint16_t tu_f32_to_f16(float f);
float tu_f16_to_f32(uint16_t h);
uint16_t tu_f32_to_bf16(float f);
float tu_bf16_to_f32(uint16_t h);

#endif
