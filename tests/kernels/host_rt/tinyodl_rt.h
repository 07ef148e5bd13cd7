/* Host stand-in for the runtime API (runtime/c/tinyodl_rt.h): the cores of a team are pthreads.
 * The core id is thread-local, the barrier a pthread barrier, and rt_chunk splits work exactly as
 * the target runtime does. */
#ifndef TINYODL_RT_H
#define TINYODL_RT_H

int rt_core_id(void);
int rt_num_cores(void);
void rt_barrier(void);

static inline void rt_chunk(int n, int *start, int *end)
{
    int cores = rt_num_cores(), core = rt_core_id();
    int base = n / cores, leftover = n % cores;
    *start = core * base + (core < leftover ? core : leftover);
    *end = *start + base + (core < leftover ? 1 : 0);
}

#endif
