/* Benchmark stand-in for the runtime API: one hart plays every core in turn. The benchmark sets
 * bench_core / bench_cores before each call; kernels measured this way must not use rt_barrier(). */
#ifndef TINYODL_RT_H
#define TINYODL_RT_H

extern int bench_core, bench_cores;

static inline int rt_core_id(void) { return bench_core; }
static inline int rt_num_cores(void) { return bench_cores; }
void rt_barrier(void);

static inline void rt_chunk(int n, int *start, int *end)
{
    int base = n / bench_cores, leftover = n % bench_cores, core = bench_core;
    *start = core * base + (core < leftover ? core : leftover);
    *end = *start + base + (core < leftover ? 1 : 0);
}

#endif
