/* A persistent worker thread and a spin barrier, for loops that need the two cores
 * once per time step (the sequence-mode recurrence): waking a thread per step, as a
 * BLAS call does, costs more than the step's arithmetic.
 *
 * The worker spins for a short while after each task (so back-to-back tasks start in
 * well under a microsecond), then sleeps on a condition variable. One task runs at a
 * time; a second caller meanwhile runs its task alone on its own thread, and so does
 * a forked child (the worker does not survive fork). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>

#include "cortex_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#define SPIN_BEFORE_SLEEP 200000 /* ~100 us of pause loops */

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int worker_ok = 0;
static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;   /* one task at a time */
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;  /* guards sleeping + cond */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;

static cx_task_fn task_fn;
static void *task_ctx;
static uint64_t posted;    /* generation of the posted task (atomic) */
static uint64_t finished;  /* generation the worker finished (atomic) */
static int sleeping;       /* worker is (about to be) asleep; under sleep_lock */

/* Barrier state: arrivals counter and a sense flag (atomic). */
static int barrier_count;
static int barrier_sense;

static void *worker_main(void *arg) {
  (void)arg;
  uint64_t seen = 0;
  for (;;) {
    int spins = 0;
    while (__atomic_load_n(&posted, __ATOMIC_ACQUIRE) == seen) {
      if (++spins < SPIN_BEFORE_SLEEP) {
        CPU_RELAX();
        continue;
      }
      pthread_mutex_lock(&sleep_lock);
      sleeping = 1;
      while (__atomic_load_n(&posted, __ATOMIC_ACQUIRE) == seen) pthread_cond_wait(&wake, &sleep_lock);
      sleeping = 0;
      pthread_mutex_unlock(&sleep_lock);
    }
    seen = __atomic_load_n(&posted, __ATOMIC_ACQUIRE);
    task_fn(task_ctx, 1, 2);
    __atomic_store_n(&finished, seen, __ATOMIC_RELEASE);
  }
  return NULL;
}

/* A forked child has no worker thread: it runs every task alone from then on. */
static void after_fork_in_child(void) {
  worker_ok = 0;
  pthread_mutex_init(&run_lock, NULL);
  pthread_mutex_init(&sleep_lock, NULL);
  pthread_cond_init(&wake, NULL);
}

static void start_worker(void) {
  pthread_atfork(NULL, NULL, after_fork_in_child);
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  worker_ok = pthread_create(&t, &attr, worker_main, NULL) == 0;
  pthread_attr_destroy(&attr);
}

int cx_parallel_run(cx_task_fn fn, void *ctx, int parts) {
  if (parts >= 2) pthread_once(&once, start_worker);
  if (parts < 2 || !worker_ok || pthread_mutex_trylock(&run_lock) != 0) {
    fn(ctx, 0, 1);
    return 1;
  }
  task_fn = fn;
  task_ctx = ctx;
  __atomic_store_n(&barrier_count, 0, __ATOMIC_RELAXED);
  uint64_t gen = __atomic_load_n(&posted, __ATOMIC_RELAXED) + 1;
  __atomic_store_n(&posted, gen, __ATOMIC_RELEASE);
  pthread_mutex_lock(&sleep_lock);
  if (sleeping) pthread_cond_signal(&wake);
  pthread_mutex_unlock(&sleep_lock);
  fn(ctx, 0, 2);
  while (__atomic_load_n(&finished, __ATOMIC_ACQUIRE) != gen) CPU_RELAX();
  pthread_mutex_unlock(&run_lock);
  return 2;
}

void cx_parallel_barrier(int parts) {
  if (parts < 2) return;
  const int sense = __atomic_load_n(&barrier_sense, __ATOMIC_ACQUIRE);
  if (__atomic_add_fetch(&barrier_count, 1, __ATOMIC_ACQ_REL) == 2) {
    __atomic_store_n(&barrier_count, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&barrier_sense, !sense, __ATOMIC_RELEASE);
  } else {
    while (__atomic_load_n(&barrier_sense, __ATOMIC_ACQUIRE) == sense) CPU_RELAX();
  }
}

/* ---- matrix products split by output columns ------------------------------ */

typedef struct {
  int m, n, k, lda, ldc;
  const float *a, *w;
  float *c;
  float beta;
} linear_job;

static void linear_part(void *ctx, int part, int parts) {
  const linear_job *j = (const linear_job *)ctx;
  /* Column ranges aligned to 16 floats (whole cache lines of W rows' outputs). */
  int half = ((j->n / parts) + 15) & ~15;
  if (half > j->n) half = j->n;
  const int n0 = part == 0 ? 0 : half;
  const int n1 = part == parts - 1 ? j->n : half;
  if (n1 <= n0) return;
  const float *w = j->w + (size_t)n0 * j->k;
  float *c = j->c + n0;
  if (j->m == 1)
    cx_blas_sgemv_n(n1 - n0, j->k, 1.0f, w, j->k, j->a, j->beta, c);
  else
    cx_blas_sgemm_nt(j->m, n1 - n0, j->k, 1.0f, j->a, j->lda, w, j->k, j->beta, c, j->ldc);
}

/* Parts for a product split by output columns: below ~64k multiply-adds a second thread
 * costs more than it saves. */
static int product_parts(int m, int n, int k) { return ((long)m * n * k >= 65536 && n >= 32) ? cx_blas_get_threads() : 1; }

void cx_parallel_linear(int m, int n, int k, const float *a, int lda, const float *w, float *c, int ldc,
                        float beta) {
  linear_job j = {m, n, k, lda, ldc, a, w, c, beta};
  cx_parallel_run(linear_part, &j, product_parts(m, n, k));
}

/* ---- products over packed weights, split by panels ------------------------ */

typedef struct {
  int m, n, k, lda, ldc, acc;
  const float *a, *packed;
  float *c;
} packed_job;

static void packed_part(void *ctx, int part, int parts) {
  const packed_job *j = (const packed_job *)ctx;
  const int panels = (j->n + 15) / 16;
  const int p0 = (int)((long)panels * part / parts), p1 = (int)((long)panels * (part + 1) / parts);
  if (p1 <= p0) return;
  const int n0 = p0 * 16, n1 = p1 * 16 < j->n ? p1 * 16 : j->n;
  cx_packed_gemm(j->m, n1 - n0, j->k, j->a, j->lda, j->packed + (size_t)p0 * j->k * 16, j->c + n0, j->ldc,
                 j->acc);
}

void cx_parallel_packed_gemm(int m, int n, int k, const float *a, int lda, const float *packed, float *c, int ldc,
                             int accumulate) {
  packed_job j = {m, n, k, lda, ldc, accumulate, a, packed, c};
  cx_parallel_run(packed_part, &j, product_parts(m, n, k));
}
