/* Cortex's thread pool: persistent workers that split one call's work into parts.
 *
 * Why a pool of its own: the sequence-mode recurrences meet at a barrier once per time
 * step, and step mode runs several small products per call. Waking threads per call, as
 * a BLAS call does, costs more than that arithmetic.
 *
 * The model (cxk_parallel_run):
 * - A caller asks for `parts`. It claims idle workers (compare-and-swap on each worker's
 *   `busy` flag), posts part i to the i-th one it claimed and runs part 0 itself. It
 *   never waits for a busy worker: with none free it runs every part alone (parts = 1).
 *   Tasks split work and never change it, so results do not depend on how many parts a
 *   call got, or on which thread ran which part.
 * - When its own part is done, the caller takes back every posted part that no worker
 *   has started and runs it itself; it waits only for parts already running. A worker
 *   that is slow to wake (asleep, or its core taken by another process) costs
 *   parallelism, never latency.
 * - So nested calls (a part that calls a parallel product) take only idle workers and
 *   never deadlock or run more threads than the pool has, and several callers at once
 *   share the workers: each takes at most its share, threads / (callers running now).
 * - Tasks with barriers (cxk_parallel_run_together) need every part running at once:
 *   the caller gives the posted workers up to GATHER_NS to start, takes back the
 *   others, and fixes the part count before any part runs.
 *
 * Waiting. A thread waiting for work, for a barrier or for its parts first spins
 * (pause instructions), then yields its core, then sleeps on a futex, each phase
 * bounded in time. Spinning gives the microsecond hand-offs of an idle machine; the
 * yield and the futex keep a waiter from burning the core its partner needs when other
 * processes share the cores (a pure spin there ran 1000x slower).
 *
 * The thread count defaults to the CPUs this process may use (its affinity mask and its
 * cgroup's CPU quota), CORTEX_NUM_THREADS overrides it, cxk_blas_set_threads changes it.
 * A forked child runs every task alone (workers do not survive fork). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cortex_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#define MAX_THREADS CX_MAX_THREADS

/* Waiting budgets, nanoseconds since the wait began: pause loops, then sched_yield,
 * then the futex. An idle worker keeps watching for the next task a little longer than
 * a barrier or a join waits, so back-to-back calls of step mode find it awake. */
#define SPIN_NS 4000
#define YIELD_NS_WORK 40000
#define YIELD_NS_SYNC 100000
/* How long the caller of a task with barriers waits for its workers to start: long
 * enough for a sleeping worker to wake (tens of microseconds on a VM), short against
 * such a task (a whole sequence), and a bound on what a worker that does not come
 * (its core taken by another process) costs. */
#define GATHER_NS 200000

#define LOAD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)

static void futex_wait(uint32_t *addr, uint32_t expected) {
  syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}
static void futex_wake(uint32_t *addr, int n) { syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0); }

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Counters for CORTEX_POOL_STATS=1 (printed to stderr at exit): what the pool did, to
 * see where a parallel section's time goes. Relaxed increments, a few per task. */
enum { ST_APART, ST_TOGETHER, ST_ASKED, ST_GOT, ST_TAKEN_BACK, ST_GATHER_SHORT, ST_SLEEPS, ST_COUNT };
static const char *const stat_names[ST_COUNT] = {"tasks_apart", "tasks_together", "parts_asked", "parts_run",
                                                 "parts_taken_back", "gathers_short", "futex_sleeps"};
static uint64_t stats[ST_COUNT];
#define COUNT(k, n) __atomic_add_fetch(&stats[k], (uint64_t)(n), __ATOMIC_RELAXED)

static void print_stats(void) {
  fprintf(stderr, "{\"cortex_pool\": {\"threads\": %d", cxk_blas_get_threads());
  for (int k = 0; k < ST_COUNT; k++) fprintf(stderr, ", \"%s\": %llu", stat_names[k], (unsigned long long)stats[k]);
  fprintf(stderr, "}}\n");
}

/* Wait until *word != value: spin, yield, then sleep on the futex. `sleepers` counts
 * sleeping waiters so that whoever changes the word knows to wake them. */
static void wait_change(uint32_t *word, uint32_t value, uint32_t *sleepers, uint64_t yield_ns) {
  if (LOAD(word) != value) return;
  const uint64_t start = now_ns();
  for (unsigned i = 1;; i++) {
    if (LOAD(word) != value) return;
    if ((i & 63) == 0) {
      const uint64_t waited = now_ns() - start;
      if (waited > yield_ns) break;
      if (waited > SPIN_NS) sched_yield();
    }
    CPU_RELAX();
  }
  __atomic_add_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
  COUNT(ST_SLEEPS, 1);
  while (LOAD(word) == value) futex_wait(word, value);
  __atomic_sub_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
}

/* Change *word (already stored by the caller) is announced: wake sleepers if any. */
static void wake_all(uint32_t *word, uint32_t *sleepers) {
  if (LOAD(sleepers) != 0) futex_wake(word, INT_MAX);
}

/* One task: what the caller posted, with its barrier. Lives on the caller's stack
 * until every part that a worker started is done. */
typedef struct {
  cxk_task_fn fn;
  void *ctx;
  int parts;      /* fixed before any part runs */
  int together;   /* parts meet at barriers: all of them must run at once */
  uint32_t go;    /* together: 1 once the parts are counted (futex word) */
  uint32_t go_sleepers;
  cxk_barrier barrier;
} task_t;

/* A worker's slot holds (ticket << 2) | state. The caller that claimed the worker (busy
 * 0 -> 1) writes task and part, then the slot POSTED, then bumps `wake`. Whoever moves
 * the slot on from POSTED runs the part: the worker (-> RUNNING, then DONE), or the
 * caller itself (-> FREE: it runs the part on its own thread when the worker has not
 * started it by the time the caller is free). So a worker that is slow to wake (asleep,
 * or its core taken by another process) never holds a caller up: the caller waits only
 * for parts that are running. A worker touches the task only after winning the slot,
 * and the caller returns only after those parts are DONE. */
enum { SLOT_FREE = 0, SLOT_POSTED = 1, SLOT_RUNNING = 2, SLOT_DONE = 3 };

typedef struct {
  uint32_t busy;
  uint32_t wake;      /* bumped on every post (futex word) */
  uint32_t wake_sleepers;
  uint32_t done;      /* bumped when a part finishes (futex word) */
  uint32_t done_sleepers;
  uint64_t slot;
  uint64_t ticket;    /* the claiming caller's counter */
  task_t *task;
  int part;
} __attribute__((aligned(64))) worker_t;

static worker_t *workers[MAX_THREADS]; /* workers[i] runs part >= 1; started on demand */
static int started;                    /* workers running (grows, never shrinks; atomic) */
static pthread_mutex_t grow_lock = PTHREAD_MUTEX_INITIALIZER;
static int configured;     /* threads per call, 1..MAX_THREADS; 0 = not yet decided (atomic) */
static int callers;        /* calls of cxk_parallel_run in progress (atomic) */
static int forked_child;   /* set in a fork()ed child: no workers there */
static __thread task_t *current_task; /* the task whose part this thread is running */

static void run_part(task_t *t, int part) {
  task_t *outer = current_task;
  current_task = t;
  t->fn(t->ctx, part, t->parts);
  current_task = outer;
}

static int take_slot(worker_t *w, uint64_t expected, uint64_t desired) {
  return __atomic_compare_exchange_n(&w->slot, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

static void *worker_main(void *arg) {
  worker_t *w = (worker_t *)arg;
  uint32_t seen = 0;
  for (;;) {
    wait_change(&w->wake, seen, &w->wake_sleepers, YIELD_NS_WORK);
    seen = LOAD(&w->wake);
    const uint64_t s = LOAD(&w->slot);
    if ((s & 3) != SLOT_POSTED || !take_slot(w, s, s - SLOT_POSTED + SLOT_RUNNING)) continue; /* taken back */
    task_t *t = w->task;
    if (t->together) wait_change(&t->go, 0, &t->go_sleepers, YIELD_NS_SYNC);
    run_part(t, w->part); /* together: the part the caller gave once the parts were counted */
    STORE(&w->slot, s - SLOT_POSTED + SLOT_DONE);
    __atomic_add_fetch(&w->done, 1, __ATOMIC_SEQ_CST);
    wake_all(&w->done, &w->done_sleepers);
  }
  return NULL;
}

static void after_fork_in_child(void) {
  forked_child = 1;
  pthread_mutex_init(&grow_lock, NULL);
}

/* Start workers until `n` run (threads - 1 of them serve a call of `threads` parts). */
static void grow_pool(int n) {
  if (n > MAX_THREADS - 1) n = MAX_THREADS - 1;
  if (LOAD(&started) >= n) return;
  pthread_mutex_lock(&grow_lock);
  static int atfork_registered;
  if (!atfork_registered) {
    pthread_atfork(NULL, NULL, after_fork_in_child);
    const char *st = getenv("CORTEX_POOL_STATS");
    if (st != NULL && strcmp(st, "1") == 0) atexit(print_stats);
    atfork_registered = 1;
  }
  for (int i = LOAD(&started); i < n; i++) {
    worker_t *w = NULL;
    if (posix_memalign((void **)&w, 64, sizeof *w) != 0) break;
    memset(w, 0, sizeof *w);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    const int ok = pthread_create(&thread, &attr, worker_main, w) == 0;
    pthread_attr_destroy(&attr);
    if (!ok) {
      free(w);
      break; /* fewer workers: calls split into fewer parts, same results */
    }
    workers[i] = w;
    STORE(&started, i + 1);
  }
  pthread_mutex_unlock(&grow_lock);
}

static void post(worker_t *w, task_t *t, int part) {
  w->task = t;
  w->part = part;
  w->ticket++;
  STORE(&w->slot, (w->ticket << 2) | SLOT_POSTED);
  __atomic_add_fetch(&w->wake, 1, __ATOMIC_SEQ_CST);
  wake_all(&w->wake, &w->wake_sleepers);
}

/* Take a posted part back (the worker has not started it). */
static int take_back(worker_t *w) { return take_slot(w, (w->ticket << 2) | SLOT_POSTED, w->ticket << 2); }

static void wait_done(worker_t *w) {
  const uint64_t done = (w->ticket << 2) | SLOT_DONE;
  for (;;) {
    const uint32_t d = LOAD(&w->done);
    if (LOAD(&w->slot) == done) return;
    wait_change(&w->done, d, &w->done_sleepers, YIELD_NS_SYNC);
  }
}

/* Parts that run apart: post parts 1..k, run part 0, take back (and run here) every
 * part no worker has started, wait for the others. */
static void run_apart(task_t *t, worker_t **claimed, int k) {
  for (int i = 0; i < k; i++) post(claimed[i], t, i + 1);
  run_part(t, 0);
  int started_by_worker[MAX_THREADS];
  for (int i = 0; i < k; i++) {
    started_by_worker[i] = !take_back(claimed[i]);
    if (!started_by_worker[i]) {
      COUNT(ST_TAKEN_BACK, 1);
      run_part(t, i + 1);
    }
  }
  for (int i = 0; i < k; i++) {
    if (started_by_worker[i]) wait_done(claimed[i]);
    STORE(&claimed[i]->busy, 0);
  }
}

/* Parts that run together (barriers): post, give the workers a while to start (GATHER_NS),
 * take back the posts no worker started, count the parts, then go. The parts are fixed
 * before any of them runs, so a barrier always has all its parties. */
static void run_together(task_t *t, worker_t **claimed, int k) {
  t->together = 1;
  for (int i = 0; i < k; i++) post(claimed[i], t, 0);
  const uint64_t start = now_ns();
  for (unsigned spin = 1;; spin++) {
    int waiting = 0;
    for (int i = 0; i < k; i++) waiting += (LOAD(&claimed[i]->slot) & 3) == SLOT_POSTED;
    if (waiting == 0) break;
    if ((spin & 15) == 0) {
      const uint64_t waited = now_ns() - start;
      if (waited > GATHER_NS) break;
      if (waited > SPIN_NS) sched_yield();
    }
    CPU_RELAX();
  }
  int joined = 0;
  for (int i = 0; i < k; i++) {
    if (take_back(claimed[i])) {
      STORE(&claimed[i]->busy, 0);
    } else {
      claimed[i]->part = ++joined; /* read by the worker after `go` */
      claimed[joined - 1] = claimed[i];
    }
  }
  t->parts = joined + 1;
  if (joined < k) COUNT(ST_GATHER_SHORT, 1);
  STORE(&t->go, 1);
  wake_all(&t->go, &t->go_sleepers);
  run_part(t, 0);
  for (int i = 0; i < joined; i++) {
    wait_done(claimed[i]);
    STORE(&claimed[i]->busy, 0);
  }
}

static int run(cxk_task_fn fn, void *ctx, int parts, int together) {
  const int threads = cxk_blas_get_threads();
  if (parts > threads) parts = threads;
  if (parts < 2 || forked_child) {
    fn(ctx, 0, 1);
    return 1;
  }
  grow_pool(threads - 1);
  /* This call's share of the pool while others run too. */
  const int running = __atomic_add_fetch(&callers, 1, __ATOMIC_SEQ_CST);
  const int share = threads / running;
  if (parts > share) parts = share > 0 ? share : 1;

  worker_t *claimed[MAX_THREADS];
  int k = 0;
  const int available = LOAD(&started) < threads - 1 ? LOAD(&started) : threads - 1;
  for (int i = 0; i < available && k < parts - 1; i++) {
    uint32_t idle = 0;
    worker_t *w = workers[i];
    if (LOAD(&w->busy) == 0 &&
        __atomic_compare_exchange_n(&w->busy, &idle, 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
      claimed[k++] = w;
  }
  task_t t = {fn, ctx, k + 1, 0, 0, 0, {0, 0, 0, {0}}};
  COUNT(together ? ST_TOGETHER : ST_APART, 1);
  COUNT(ST_ASKED, parts);
  if (k == 0)
    fn(ctx, 0, 1);
  else if (together)
    run_together(&t, claimed, k);
  else
    run_apart(&t, claimed, k);
  __atomic_sub_fetch(&callers, 1, __ATOMIC_SEQ_CST);
  COUNT(ST_GOT, k == 0 ? 1 : t.parts);
  return k == 0 ? 1 : t.parts;
}

int cxk_parallel_run(cxk_task_fn fn, void *ctx, int parts) { return run(fn, ctx, parts, 0); }

int cxk_parallel_run_together(cxk_task_fn fn, void *ctx, int parts) { return run(fn, ctx, parts, 1); }

void cxk_barrier_wait(cxk_barrier *b, int parties) {
  if (parties < 2) return;
  const uint32_t gen = LOAD(&b->gen);
  if (__atomic_add_fetch(&b->count, 1, __ATOMIC_SEQ_CST) == (uint32_t)parties) {
    STORE(&b->count, 0);
    STORE(&b->gen, gen + 1);
    wake_all(&b->gen, &b->sleepers);
  } else {
    wait_change(&b->gen, gen, &b->sleepers, YIELD_NS_SYNC);
  }
}

void cxk_parallel_barrier(int parts) {
  task_t *t = current_task;
  if (parts < 2 || t == NULL || !t->together) return;
  cxk_barrier_wait(&t->barrier, t->parts);
}

/* ---- the thread count ------------------------------------------------------ */

/* CPUs the affinity mask allows. */
static int affinity_cpus(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
  return CPU_COUNT(&set);
}

/* ceil(quota / period) of the cgroup's CPU limit, 0 when there is none. */
static int cgroup_cpus(void) {
  long long quota = -1, period = 0;
  FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r"); /* cgroup v2 */
  if (f != NULL) {
    char q[32] = {0};
    if (fscanf(f, "%31s %lld", q, &period) == 2 && strcmp(q, "max") != 0) quota = atoll(q);
    fclose(f);
  } else if ((f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "r")) != NULL) { /* v1 */
    if (fscanf(f, "%lld", &quota) != 1) quota = -1;
    fclose(f);
    if ((f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "r")) != NULL) {
      if (fscanf(f, "%lld", &period) != 1) period = 0;
      fclose(f);
    }
  }
  if (quota <= 0 || period <= 0) return 0;
  const long long cpus = (quota + period - 1) / period;
  return cpus > MAX_THREADS ? MAX_THREADS : (int)cpus;
}

int cxk_default_threads(void) {
  const char *env = getenv("CORTEX_NUM_THREADS");
  if (env != NULL && *env != '\0') {
    char *end = NULL;
    errno = 0;
    const long n = strtol(env, &end, 10);
    if (errno == 0 && end != NULL && *end == '\0' && n >= 1) return n > MAX_THREADS ? MAX_THREADS : (int)n;
  }
  int n = affinity_cpus();
  if (n <= 0) {
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    n = online > 0 ? (int)online : 1;
  }
  const int quota = cgroup_cpus();
  if (quota > 0 && quota < n) n = quota;
  return n > MAX_THREADS ? MAX_THREADS : n;
}

void cxk_blas_set_threads(int n) {
  (void)cxk_blas_load();
  if (n <= 0) n = cxk_default_threads();
  STORE(&configured, n > MAX_THREADS ? MAX_THREADS : n);
}

int cxk_blas_get_threads(void) {
  int n = LOAD(&configured);
  if (n == 0) {
    int expected = 0;
    __atomic_compare_exchange_n(&configured, &expected, cxk_default_threads(), 0, __ATOMIC_SEQ_CST,
                                __ATOMIC_SEQ_CST);
    n = LOAD(&configured);
  }
  return n;
}

static int split_everything; /* tests: ignore the grain (atomic) */

void cxk_parallel_force_split(int on) { STORE(&split_everything, on != 0); }

int cxk_parallel_parts(long work, long grain, long items) {
  long parts = LOAD(&split_everything) ? items : grain > 0 ? work / grain : 1;
  if (items < parts) parts = items;
  const int threads = cxk_blas_get_threads();
  if (parts > threads) parts = threads;
  return parts < 1 ? 1 : (int)parts;
}

/* A part of a product should have at least this many multiply-adds: below it waking a
 * worker (a microsecond when it spins, tens when it sleeps) costs more than it saves. */
#define PRODUCT_GRAIN 32768L

/* ---- products over packed weights, split by panels and rows ---------------- */

typedef struct {
  int m, n, k, lda, ldc, acc;
  const float *a, *packed;
  float *c;
} packed_job;

/* Parts form a grid: panel groups (columns of 16 outputs) first, then row groups when
 * there are more parts than panels (many rows, few outputs). A row's result does not
 * depend on the other rows of the call (packed_gemm.c), so any grid gives the same bits. */
static void packed_part(void *ctx, int part, int parts) {
  const packed_job *j = (const packed_job *)ctx;
  const int panels = (j->n + 15) / 16;
  const int pc = parts < panels ? parts : panels, rc = parts / pc;
  const int pi = part % pc, ri = part / pc;
  if (ri >= rc) return;
  const int p0 = (int)((long)panels * pi / pc), p1 = (int)((long)panels * (pi + 1) / pc);
  const int m0 = (int)((long)j->m * ri / rc), m1 = (int)((long)j->m * (ri + 1) / rc);
  if (p1 <= p0 || m1 <= m0) return;
  const int n0 = p0 * 16, n1 = p1 * 16 < j->n ? p1 * 16 : j->n;
  cxk_packed_gemm(m1 - m0, n1 - n0, j->k, j->a + (size_t)m0 * j->lda, j->lda, j->packed + (size_t)p0 * j->k * 16,
                 j->c + (size_t)m0 * j->ldc + n0, j->ldc, j->acc);
}

void cxk_parallel_packed_gemm(int m, int n, int k, const float *a, int lda, const float *packed, float *c, int ldc,
                             int accumulate) {
  packed_job j = {m, n, k, lda, ldc, accumulate, a, packed, c};
  const long panels = (n + 15) / 16;
  /* Rows join the split only in blocks of at least 6 (the kernel's row block). */
  const long cells = panels * (m >= 12 ? m / 6 : 1);
  cxk_parallel_run(packed_part, &j, cxk_parallel_parts((long)m * n * k, PRODUCT_GRAIN, cells));
}
