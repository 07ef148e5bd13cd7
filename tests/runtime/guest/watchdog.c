/* Hangs so that the watchdog (built with a short RT_WATCHDOG_MS) must end the run:
 * HANG_KIND 0: hart 0 loops forever in main; HANG_KIND 1: hart 1 loops forever inside a team
 * function while hart 0 sleeps in the barrier; HANG_KIND 2: hart 0 sleeps waiting for a DMA
 * transfer that was never started (in checking mode: one that was started, and a later one). */
#include "tinyodl_rt.h"

#ifndef HANG_KIND
#define HANG_KIND 0
#endif

static volatile unsigned forever = 1;
static float buffer[4];
static const float source[4];

static void team_body(void *arg)
{
    (void)arg;
    if (rt_core_id() == 1)
        while (forever)
            ;
    rt_barrier();
}

int main(void)
{
    if (HANG_KIND == 0)
        while (forever)
            ;
    if (HANG_KIND == 2)
        rt_dma_wait(rt_dma_start_1d(buffer, source, sizeof buffer) + 1u);
    rt_team_run(team_body, 0);
    return 0;
}
