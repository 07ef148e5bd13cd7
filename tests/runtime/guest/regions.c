/* Exact instruction counts per region, on every core:
 *   region 5: 1 (marker) + 1 (li) + 2 * LOOP_ITERS (addi + bnez), cycles 2 + LOOP_ITERS * 4 - 2
 *             (each taken bnez costs 3 cycles, the final not-taken one 1);
 *   region 8 (cores other than 0): the marker, a wfi on which the core really sleeps until core 0
 *             wakes it, and 3 nops = 5 instructions, however long the sleep;
 *   region 9 (cores other than 0): the marker and 2 nops = 3 instructions. QEMU does not end a
 *             translation block at wfi, so this checks that the plugin does not count the
 *             instructions after a wfi twice when the core sleeps on it. */
#include "tinyodl_rt.h"

#ifndef LOOP_ITERS
#define LOOP_ITERS 1000
#endif

#define CLINT_MSIP ((volatile unsigned *)0x02000000u)

static void counted_loop(void *arg)
{
    (void)arg;
    RT_REGION(5);
    __asm__ volatile(
        "li t0, %0\n"
        "1: addi t0, t0, -1\n"
        "bnez t0, 1b\n"
        :
        : "i"(LOOP_ITERS)
        : "t0");
    RT_REGION(6);
    rt_barrier();
    RT_REGION(0);
}

static volatile unsigned delay_sink;

static void sleep_once(void *arg)
{
    (void)arg;
    int core = rt_core_id();
    if (core == 0) {
        /* long enough for every other core to be asleep in its wfi */
        for (unsigned i = 0; i < 300000; i++)
            delay_sink = i;
        for (int other = 1; other < rt_num_cores(); other++)
            CLINT_MSIP[other] = 1;
    } else {
        CLINT_MSIP[core] = 0; /* a wake-up left over from the last barrier would make wfi fall through */
        RT_REGION(8);
        __asm__ volatile("wfi\n nop\n nop\n nop\n" : : : "memory");
        RT_REGION(9);
        __asm__ volatile("nop\n nop\n" : : : "memory");
        RT_REGION(0);
    }
    rt_barrier();
}

int main(void)
{
    rt_team_run(counted_loop, 0);
    rt_team_run(sleep_once, 0);
    return 0;
}
