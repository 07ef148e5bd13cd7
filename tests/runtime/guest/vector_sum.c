/* Parallel sum of VECTOR_N integers split with rt_chunk. Checks that the chunks cover every index
 * exactly once, that no core gets more than one item above another, and that the sum is right.
 * Also checks that errno (thread-local in picolibc) is private to each core. */
#include <errno.h>
#include <stdio.h>

#include "tinyodl_rt.h"

#ifndef VECTOR_N
#define VECTOR_N 1001
#endif

static int values[VECTOR_N];
static unsigned char visits[VECTOR_N];
static long long partial[RT_NUM_CORES];
static int chunk_size[RT_NUM_CORES];
static volatile unsigned shared_errno_seen;

static void sum_chunk(void *arg)
{
    (void)arg;
    errno = 100 + rt_core_id();
    rt_barrier();
    if (errno != 100 + rt_core_id())
        shared_errno_seen = 1;
    int start, end;
    rt_chunk(VECTOR_N, &start, &end);
    long long sum = 0;
    for (int i = start; i < end; i++) {
        sum += values[i];
        visits[i]++;
    }
    partial[rt_core_id()] = sum;
    chunk_size[rt_core_id()] = end - start;
}

int main(void)
{
    long long expected = 0;
    for (int i = 0; i < VECTOR_N; i++) {
        values[i] = (i * 7919) % 1000 - 500;
        expected += values[i];
    }
    rt_team_run(sum_chunk, 0);
    long long total = 0;
    int smallest = VECTOR_N, largest = 0;
    for (int core = 0; core < rt_num_cores(); core++) {
        total += partial[core];
        smallest = chunk_size[core] < smallest ? chunk_size[core] : smallest;
        largest = chunk_size[core] > largest ? chunk_size[core] : largest;
    }
    for (int i = 0; i < VECTOR_N; i++) {
        if (visits[i] != 1) {
            printf("index %d visited %d times\n", i, visits[i]);
            return 1;
        }
    }
    if (shared_errno_seen) {
        printf("errno is shared between cores\n");
        return 1;
    }
    printf("n=%d cores=%d sum=%lld expected=%lld chunks=%d..%d\n", VECTOR_N, rt_num_cores(), total,
           expected, smallest, largest);
    return total == expected && largest - smallest <= 1 ? 0 : 1;
}
