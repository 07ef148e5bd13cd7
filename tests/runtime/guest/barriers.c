/* NUM_BARRIERS barriers in one team function. Between two barriers every core adds 1 to a shared
 * counter; after barrier k each core must see exactly (k + 1) * cores, which fails if any core could
 * leave a barrier before all had arrived. */
#include <stdio.h>

#include "tinyodl_rt.h"

#ifndef NUM_BARRIERS
#define NUM_BARRIERS 2000
#endif

static volatile unsigned counter;
static volatile unsigned errors;

static void many_barriers(void *arg)
{
    (void)arg;
    unsigned cores = (unsigned)rt_num_cores();
    for (unsigned k = 0; k < NUM_BARRIERS; k++) {
        __atomic_fetch_add(&counter, 1u, __ATOMIC_RELAXED);
        RT_REGION(7);
        rt_barrier();
        RT_REGION(0);
        if (__atomic_load_n(&counter, __ATOMIC_RELAXED) != (k + 1) * cores)
            __atomic_fetch_add(&errors, 1u, __ATOMIC_RELAXED);
        rt_barrier();
    }
}

int main(void)
{
    rt_team_run(many_barriers, 0);
    printf("barriers=%d counter=%u errors=%u\n", NUM_BARRIERS, counter, errors);
    return errors == 0 && counter == NUM_BARRIERS * (unsigned)rt_num_cores() ? 0 : 1;
}
