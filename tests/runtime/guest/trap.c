/* Hart TRAP_HART runs an illegal instruction (TRAP_KIND 0) or loads from an unmapped address
 * (TRAP_KIND 1) inside a team function, or asks the DMA engine to copy from one (TRAP_KIND 2); the
 * run must end with a TRAP line naming it. */
#include "tinyodl_rt.h"

#ifndef TRAP_HART
#define TRAP_HART 0
#endif
#ifndef TRAP_KIND
#define TRAP_KIND 0
#endif

static volatile unsigned sink;
static unsigned buffer[4];

__attribute__((noinline)) void do_illegal_thing(void)
{
    if (TRAP_KIND == 0)
        __asm__ volatile("unimp");
    else if (TRAP_KIND == 1)
        sink = *(volatile unsigned *)0x4;
    else
        rt_dma_copy(buffer, (const void *)0x4, sizeof buffer);
}

static void team_body(void *arg)
{
    (void)arg;
    if (rt_core_id() == TRAP_HART)
        do_illegal_thing();
    rt_barrier();
}

int main(void)
{
    rt_team_run(team_body, 0);
    return 0;
}
