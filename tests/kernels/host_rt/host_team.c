/* Runs a kernel of the library on a team of pthreads, for the host tests (ctypes).
 *
 * team_run(name, cores, args) calls kernel `name` on `cores` threads at once, each with the same
 * arguments, like generated code does on the target. Arguments come as an array of tagged words
 * (pointer, int or float) and each kernel has one line below that unpacks them. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <string.h>

#include "tinyodl_kernels.h"
#include "tinyodl_rt.h"

typedef union {
    void *p;
    long long i;
    double f;
} arg_t;

static _Thread_local int this_core;
static int team_size = 1;
static pthread_barrier_t team_barrier;

int rt_core_id(void) { return this_core; }
int rt_num_cores(void) { return team_size; }
void rt_barrier(void) { pthread_barrier_wait(&team_barrier); }

#define P(k) (a[k].p)
#define I(k) ((int)a[k].i)
#define F(k) ((float)a[k].f)

typedef struct {
    const char *name;
    void (*call)(arg_t *a);
} kernel_entry_t;

#define KERNEL(name, ...)                                                                               \
    static void call_##name(arg_t *a) { name(__VA_ARGS__); }
#include "host_kernels.def"
#undef KERNEL

#define KERNEL(name, ...) {#name, call_##name},
static const kernel_entry_t kernels[] = {
#include "host_kernels.def"
};
#undef KERNEL

typedef struct {
    int core;
    void (*call)(arg_t *a);
    arg_t *args;
} worker_t;

static void *worker(void *arg)
{
    worker_t *w = arg;
    this_core = w->core;
    w->call(w->args);
    return NULL;
}

/* Returns 0, or -1 for an unknown kernel name or a bad core count. */
int team_run(const char *name, int cores, arg_t *args)
{
    void (*call)(arg_t *) = NULL;
    for (unsigned k = 0; k < sizeof kernels / sizeof kernels[0]; k++)
        if (strcmp(kernels[k].name, name) == 0) call = kernels[k].call;
    if (!call || cores < 1 || cores > 64) return -1;
    pthread_t threads[64];
    worker_t workers[64];
    team_size = cores;
    pthread_barrier_init(&team_barrier, NULL, (unsigned)cores);
    for (int c = 0; c < cores; c++) {
        workers[c] = (worker_t){c, call, args};
        pthread_create(&threads[c], NULL, worker, &workers[c]);
    }
    for (int c = 0; c < cores; c++) pthread_join(threads[c], NULL);
    pthread_barrier_destroy(&team_barrier);
    return 0;
}
