/* Recursion of RECURSION_DEPTH levels, each with a 256-byte frame, on hart STACK_HART inside a team
 * function. Deep enough, it overflows the stack and the run must end with exit code 6. Prints every
 * hart's peak stack use. */
#include <stdio.h>

#include "tinyodl_rt.h"

#ifndef RECURSION_DEPTH
#define RECURSION_DEPTH 4
#endif
#ifndef STACK_HART
#define STACK_HART 2
#endif

__attribute__((noinline)) static unsigned recurse(unsigned depth)
{
    volatile unsigned char frame[256];
    for (unsigned i = 0; i < sizeof frame; i++)
        frame[i] = (unsigned char)(depth + i);
    unsigned below = depth > 1 ? recurse(depth - 1) : 0u;
    return below + frame[depth % sizeof frame];
}

static volatile unsigned sink;

static void team_body(void *arg)
{
    (void)arg;
    if (rt_core_id() == STACK_HART)
        sink = recurse(RECURSION_DEPTH);
    rt_barrier();
}

int main(void)
{
    rt_team_run(team_body, 0);
    for (int hart = 0; hart < rt_num_cores(); hart++)
        printf("hart %d peak stack %u\n", hart, rt_stack_peak_bytes(hart));
    return 0;
}
