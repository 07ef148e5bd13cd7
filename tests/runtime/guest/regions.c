/* Exact instruction counts per region, on every core:
 *   region 5: 1 (marker) + 1 (li) + 2 * LOOP_ITERS (addi + bnez), cycles 2 + LOOP_ITERS * 4 - 2
 *             (each taken bnez costs 3 cycles, the final not-taken one 1);
 *   region 8 (cores other than 0): the marker, a wfi on which the core really sleeps until core 0
 *             wakes it, and 3 nops = 5 instructions, however long the sleep;
 *   region 9 (cores other than 0): the marker and 2 nops = 3 instructions. QEMU does not end a
 *             translation block at wfi, so this checks that the plugin does not count the
 *             instructions after a wfi twice when the core sleeps on it.
 * Core 0 then runs fixed sequences that pin the plugin's cycle model (regions 10-14, see
 * cycle_model_probes). */
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
static volatile unsigned cleared_wakeups;

static void delay(void)
{
    for (unsigned i = 0; i < 300000; i++)
        delay_sink = i;
}

static void sleep_once(void *arg)
{
    (void)arg;
    int core = rt_core_id();
    if (core == 0) {
        /* Raising msip before a core has cleared its own would lose the wake-up (on a loaded host a
         * core can lag by milliseconds); after the clearing, the delay gives every core time to be
         * asleep in its wfi. */
        while (__atomic_load_n(&cleared_wakeups, __ATOMIC_ACQUIRE) != (unsigned)rt_num_cores() - 1u)
            delay();
        delay();
        for (int other = 1; other < rt_num_cores(); other++)
            CLINT_MSIP[other] = 1;
    } else {
        CLINT_MSIP[core] = 0; /* a wake-up left over from the last barrier would make wfi fall through */
        __atomic_fetch_add(&cleared_wakeups, 1u, __ATOMIC_RELEASE);
        RT_REGION(8);
        __asm__ volatile("wfi\n nop\n nop\n nop\n" : : : "memory");
        RT_REGION(9);
        __asm__ volatile("nop\n nop\n" : : : "memory");
        RT_REGION(0);
    }
    rt_barrier();
}

/* Expected (instructions, cycles), each region starting with its 1-cycle marker:
 *   10 load-use:       lw; addi using it                    3, 1 + 1 + (1 + 1 stall)      = 4
 *   11 fdiv then use:  fdiv.s; fadd.s using its result      3, 1 + 1 + (1 + 18 stall)     = 21
 *   12 division:       div                                  2, 1 + 32                     = 33
 *   13 mulh:           mulh                                 2, 1 + 5                      = 6
 *   14 fmadd chain:    fmadd.s; fmadd.s using its result    3, 1 + 1 + (1 + 1 stall)      = 4 */
static void cycle_model_probes(void)
{
    __asm__ volatile(
        "slti x0, x0, 10\n lw t1, 0(sp)\n addi t2, t1, 1\n"
        "slti x0, x0, 11\n fdiv.s ft0, ft1, ft2\n fadd.s ft3, ft0, ft0\n"
        "slti x0, x0, 12\n div t0, t1, t2\n"
        "slti x0, x0, 13\n mulh t0, t1, t2\n"
        "slti x0, x0, 14\n fmadd.s ft0, ft1, ft2, ft3\n fmadd.s ft4, ft0, ft1, ft2\n"
        "slti x0, x0, 0\n"
        :
        :
        : "t0", "t1", "t2", "ft0", "ft3", "ft4", "memory");
}

int main(void)
{
    rt_team_run(counted_loop, 0);
    rt_team_run(sleep_once, 0);
    cycle_model_probes();
    return 0;
}
