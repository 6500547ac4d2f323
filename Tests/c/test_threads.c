/*
 * test_threads.c — the thread contract of cortex.h.
 *
 * 1. One model shared by two threads, each with its own state, running the golden
 *    'seq' input 200 times (sequence mode and step mode alternately): every result
 *    is bitwise equal to the single-threaded one.
 * 2. Two threads hammering the SAME state: every call returns CX_STATUS_OK or
 *    CX_STATUS_BUSY (never anything else, never a crash), and the state is usable
 *    afterwards.
 * 3. cx_last_error() is per thread.
 *
 *   test_threads GOLDEN_DIR
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define NTHREADS 2
#define ITERATIONS 200
#define HAMMER_CALLS 20000
#if NTHREADS != 2
#error "the same-state test pairs exactly two threads"
#endif

static cx_model_t *model;
static float *seq_x;
static int64_t B, T, D;
/* Single-threaded references. */
static float *ref_seq_y, *ref_step_y;
static unsigned char *ref_seq_state, *ref_step_state;
static size_t ref_seq_len, ref_step_len;

static pthread_barrier_t start_line;

/* Sequence mode from the current state; y into a fresh buffer. */
static cx_status run_seq(cx_state_t *s, float *y) {
  int64_t xs[3];
  DLTensor xt, yt;
  int64_t ys[3];
  xs[0] = B;
  xs[1] = T;
  xs[2] = D;
  ys[0] = B;
  ys[1] = T;
  ys[2] = D;
  xt = tu_dl_f32(seq_x, 3, xs);
  yt = tu_dl_f32(y, 3, ys);
  return cx_model_forward_into(model, s, &xt, NULL, &yt);
}

/* Step mode over the same input: x[:, t] as a strided view (no copy), y[:, t] likewise. */
static cx_status run_steps(cx_state_t *s, float *y) {
  int64_t shape[2], strides[2], t;
  DLTensor xt, yt;
  cx_status st = CX_STATUS_OK;
  shape[0] = B;
  shape[1] = D;
  strides[0] = T * D;
  strides[1] = 1;
  for (t = 0; t < T && st == CX_STATUS_OK; ++t) {
    xt = tu_dl(seq_x, kDLFloat, 32, 2, shape, strides);
    xt.byte_offset = (uint64_t)(t * D) * sizeof(float);
    yt = tu_dl(y, kDLFloat, 32, 2, shape, strides);
    yt.byte_offset = (uint64_t)(t * D) * sizeof(float);
    st = cx_model_step_into(model, s, &xt, NULL, &yt);
  }
  return st;
}

typedef struct {
  int id;
  int mismatches;
  int errors;
  int runs;
  char first_problem[256];
} worker_result;

static void note(worker_result *r, const char *what) {
  if (r->first_problem[0] == '\0') snprintf(r->first_problem, sizeof r->first_problem, "%s", what);
}

static void *own_state_worker(void *arg) {
  worker_result *r = arg;
  cx_state_t *s = NULL;
  size_t n = (size_t)(B * T * D), len = 0;
  float *y = tu_xmalloc(n * sizeof(float));
  unsigned char *bytes;
  int i;
  int64_t dummy;

  /* An error on this thread does not show on the others. */
  if (cx_state_batch(NULL, &dummy) != CX_STATUS_INVALID_HANDLE || strncmp(cx_last_error(), "[cx_state_batch]", 16) != 0) {
    r->errors++;
    note(r, "thread-local error message");
  }
  if (cx_state_create(model, B, &s) != CX_STATUS_OK) {
    r->errors++;
    note(r, cx_last_error());
    free(y);
    return NULL;
  }
  pthread_barrier_wait(&start_line);
  for (i = 0; i < ITERATIONS; ++i) {
    int step = i % 2;
    cx_status st = cx_state_reset(s, NULL);
    if (st == CX_STATUS_OK) st = step ? run_steps(s, y) : run_seq(s, y);
    if (st != CX_STATUS_OK) {
      r->errors++;
      note(r, cx_last_error());
      continue;
    }
    r->runs++;
    bytes = tu_state_bytes(s, &len);
    if (memcmp(y, step ? ref_step_y : ref_seq_y, n * sizeof(float)) != 0 ||
        len != (step ? ref_step_len : ref_seq_len) ||
        memcmp(bytes, step ? ref_step_state : ref_seq_state, len) != 0) {
      r->mismatches++;
      note(r, step ? "step-mode result differs from the single-threaded one" : "sequence result differs");
    }
    free(bytes);
  }
  cx_state_free(s);
  free(y);
  return NULL;
}

/* ------------------------------------------------------------ same state -- */

static cx_state_t *shared;
static int hammer_done[2];

typedef struct {
  int id;
  long ok, busy, other;
  char other_message[256];
  char busy_message[256];
} hammer_result;

static void record(hammer_result *r, cx_status st) {
  if (st == CX_STATUS_OK) {
    r->ok++;
  } else if (st == CX_STATUS_BUSY) {
    r->busy++;
    if (r->busy_message[0] == '\0') snprintf(r->busy_message, sizeof r->busy_message, "%s", cx_last_error());
  } else {
    r->other++;
    if (r->other_message[0] == '\0') {
      snprintf(r->other_message, sizeof r->other_message, "%s: %s", cx_status_name(st), cx_last_error());
    }
  }
}

static void *hammer_worker(void *arg) {
  hammer_result *r = arg;
  float *x = tu_xmalloc((size_t)D * sizeof(float));
  float *y = tu_xmalloc((size_t)D * sizeof(float));
  unsigned char *buf = tu_xmalloc(1 << 16);
  int64_t shape[2];
  DLTensor xt, yt;
  long i;
  shape[0] = 1;
  shape[1] = D;
  for (i = 0; i < D; ++i) x[i] = 0.01f * (float)(i + r->id);
  xt = tu_dl_f32(x, 2, shape);
  yt = tu_dl_f32(y, 2, shape);
  pthread_barrier_wait(&start_line);
  /* Both threads run the same mix of calls, each at least HAMMER_CALLS times and
   * until the other one is done too, so that they overlap the whole time. */
  for (i = 0; i < HAMMER_CALLS || !__atomic_load_n(&hammer_done[1 - r->id], __ATOMIC_ACQUIRE); ++i) {
    if (i == HAMMER_CALLS) __atomic_store_n(&hammer_done[r->id], 1, __ATOMIC_RELEASE);
    if (i % 4 == 0) {
      record(r, cx_model_step_into(model, shared, &xt, NULL, &yt));
    } else if (i % 4 == 1) {
      cx_tensor_t *t = NULL;
      cx_status st = cx_model_step(model, shared, &xt, NULL, &t);
      record(r, st);
      cx_tensor_free(t);
    } else if (i % 4 == 2) {
      size_t needed = 0;
      record(r, cx_state_to_bytes(shared, buf, 1 << 16, &needed));
    } else if (i % 40 == 3 || i % 40 == 7) {
      record(r, cx_state_reset(shared, NULL));
    } else {
      cx_tensor_t *t = NULL;
      record(r, cx_state_get_tensor(shared, "PassThroughBlock_1.LSTMCell.c", &t));
      cx_tensor_free(t);
    }
  }
  __atomic_store_n(&hammer_done[r->id], 1, __ATOMIC_RELEASE);
  free(x);
  free(y);
  free(buf);
  return NULL;
}

static void *delete_exports(void *arg) {
  DLManagedTensorVersioned *m = arg;
  volatile float sum = 0;
  int64_t i;
  for (i = 0; i < m->dl_tensor.shape[0] * m->dl_tensor.shape[1]; ++i) sum += ((const float *)m->dl_tensor.data)[i];
  (void)sum;
  m->deleter(m);
  return NULL;
}

static void *delete_legacy_export(void *arg) {
  DLManagedTensor *m = arg;
  m->deleter(m);
  return NULL;
}

int main(int argc, char **argv) {
  char *model_dir, *cases_path;
  tu_st_file cases;
  const tu_st_entry *e;
  pthread_t threads[NTHREADS];
  worker_result results[NTHREADS];
  hammer_result hammers[NTHREADS];
  cx_state_t *s = NULL;
  size_t n;
  int i;
  int64_t dummy;

  if (argc != 2) {
    fprintf(stderr, "usage: %s GOLDEN_DIR\n", argv[0]);
    return 2;
  }
  model_dir = tu_path(argv[1], "model");
  cases_path = tu_path(argv[1], "cases.safetensors");
  REQUIRE_OK(cx_model_load(model_dir, NULL, &model));
  tu_st_load(cases_path, &cases);
  seq_x = tu_st_f32(&cases, "seq/x", &e);
  B = e->shape[0];
  T = e->shape[1];
  D = e->shape[2];
  n = (size_t)(B * T * D);

  /* Single-threaded references. */
  ref_seq_y = tu_xmalloc(n * sizeof(float));
  ref_step_y = tu_xmalloc(n * sizeof(float));
  REQUIRE_OK(cx_state_create(model, B, &s));
  REQUIRE_OK(run_seq(s, ref_seq_y));
  ref_seq_state = tu_state_bytes(s, &ref_seq_len);
  REQUIRE_OK(cx_state_reset(s, NULL));
  REQUIRE_OK(run_steps(s, ref_step_y));
  ref_step_state = tu_state_bytes(s, &ref_step_len);
  cx_state_free(s);
  {
    /* The reference itself matches the golden output. */
    float *gy = tu_st_f32(&cases, "seq/y", NULL);
    tu_check_close("single-threaded seq y vs golden", ref_seq_y, gy, n);
    tu_check_close("single-threaded step y vs golden", ref_step_y, gy, n);
    free(gy);
  }

  /* An error message on the main thread survives the workers' own errors. */
  EXPECT_STATUS(cx_model_dims(NULL, &dummy, &dummy), CX_STATUS_INVALID_HANDLE);

  /* 1. Own states, one shared model. */
  printf("-- %d threads, one model, own states, %d runs each\n", NTHREADS, ITERATIONS);
  pthread_barrier_init(&start_line, NULL, NTHREADS);
  for (i = 0; i < NTHREADS; ++i) {
    memset(&results[i], 0, sizeof results[i]);
    results[i].id = i;
    CHECK(pthread_create(&threads[i], NULL, own_state_worker, &results[i]) == 0, "pthread_create");
  }
  for (i = 0; i < NTHREADS; ++i) pthread_join(threads[i], NULL);
  pthread_barrier_destroy(&start_line);
  CHECK(strncmp(cx_last_error(), "[cx_model_dims]", 15) == 0,
        "the main thread's message was overwritten by a worker: '%s'", cx_last_error());
  for (i = 0; i < NTHREADS; ++i) {
    printf("   thread %d: %d runs, %d mismatches, %d errors%s%s\n", i, results[i].runs, results[i].mismatches,
           results[i].errors, results[i].first_problem[0] ? " ; first: " : "", results[i].first_problem);
    CHECK(results[i].runs == ITERATIONS && results[i].mismatches == 0 && results[i].errors == 0,
          "thread %d: results differ from the single-threaded run", i);
  }

  /* 2. One state, two threads. */
  printf("-- %d threads on ONE state, %d calls each\n", NTHREADS, HAMMER_CALLS);
  REQUIRE_OK(cx_state_create(model, 1, &shared));
  pthread_barrier_init(&start_line, NULL, NTHREADS);
  for (i = 0; i < NTHREADS; ++i) {
    memset(&hammers[i], 0, sizeof hammers[i]);
    hammers[i].id = i;
    CHECK(pthread_create(&threads[i], NULL, hammer_worker, &hammers[i]) == 0, "pthread_create");
  }
  for (i = 0; i < NTHREADS; ++i) pthread_join(threads[i], NULL);
  pthread_barrier_destroy(&start_line);
  {
    long busy = 0;
    for (i = 0; i < NTHREADS; ++i) {
      printf("   thread %d: %ld calls: %ld OK, %ld BUSY, %ld other%s%s\n", i, hammers[i].ok + hammers[i].busy + hammers[i].other, hammers[i].ok, hammers[i].busy, hammers[i].other,
             hammers[i].other ? " ; first: " : "", hammers[i].other_message);
      CHECK(hammers[i].other == 0, "thread %d: a status other than OK/BUSY: %s", i, hammers[i].other_message);
      CHECK(hammers[i].ok > 0, "thread %d: no call ever succeeded", i);
      CHECK(hammers[i].busy == 0 || (strncmp(hammers[i].busy_message, "[cx_", 4) == 0 &&
                                     tu_contains(hammers[i].busy_message, "in use")),
            "thread %d: BUSY message '%s'", i, hammers[i].busy_message);
      busy += hammers[i].busy;
      if (hammers[i].busy) printf("   BUSY message: %s\n", hammers[i].busy_message);
    }
    if (busy == 0) printf("   note: the calls never overlapped (no BUSY seen); the contract still held\n");
  }
  {
    /* The state is intact: it serializes, round-trips and steps. */
    size_t len;
    unsigned char *bytes = tu_state_bytes(shared, &len);
    cx_state_t *back = NULL;
    EXPECT_OK(cx_state_from_bytes(model, bytes, len, &back));
    CHECK(back != NULL && tu_state_equals(back, bytes, len), "state damaged by the concurrent calls");
    cx_state_free(back);
    free(bytes);
  }
  cx_state_free(shared);

  /* 3. A DLPack export's deleter may run on another thread, after every handle is gone. */
  {
    cx_model_t *m2 = NULL;
    cx_state_t *s2 = NULL;
    cx_tensor_t *t = NULL;
    DLManagedTensorVersioned *ev = NULL;
    DLManagedTensor *el = NULL;
    pthread_t th;
    int64_t xs[2];
    DLTensor xt;
    xs[0] = B;
    xs[1] = D;
    xt = tu_dl_f32(seq_x, 2, xs);
    REQUIRE_OK(cx_model_load(model_dir, NULL, &m2));
    REQUIRE_OK(cx_state_create(m2, B, &s2));
    REQUIRE_OK(cx_model_step(m2, s2, &xt, NULL, &t));
    REQUIRE_OK(cx_tensor_to_dlpack(t, &ev));
    REQUIRE_OK(cx_tensor_to_dlpack_legacy(t, &el));
    cx_tensor_free(t);
    cx_state_free(s2);
    cx_model_free(m2);
    CHECK(pthread_create(&th, NULL, delete_exports, ev) == 0, "pthread_create");
    pthread_join(th, NULL);
    CHECK(pthread_create(&th, NULL, delete_legacy_export, el) == 0, "pthread_create");
    pthread_join(th, NULL);
    printf("-- DLPack exports deleted on another thread after their handles were freed\n");
  }

  cx_model_free(model);
  free(seq_x);
  free(ref_seq_y);
  free(ref_step_y);
  free(ref_seq_state);
  free(ref_step_state);
  tu_st_free(&cases);
  free(model_dir);
  free(cases_path);
  return tu_finish("test_threads");
}
