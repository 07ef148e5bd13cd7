/* Fixed sequences of loads and stores on core 0, one perf region each, to pin the plugin's memory model
 * (see test_timing.py for the counts and cycles each must give):
 *   20: N_L1 loads from an L1 buffer          21: N_L2 loads from an L2 buffer
 *   22: N_L2 stores to the L2 buffer          23: N_L1 stores to the L1 buffer
 *   24: an L2 load whose value the next instruction uses
 *   25: two loads from the core's stack (counted as L1)
 *   26: a loop of LOOP_ITERS L2 loads: the loop body is a block without a marker, so its accesses go to
 *       the region the core was in when the block started
 * Every sequence is inline assembly, so the compiler cannot add, drop or reorder an access. */
#include "tinyodl_rt.h"

#ifndef N_L1
#define N_L1 100
#endif
#ifndef N_L2
#define N_L2 50
#endif
#ifndef LOOP_ITERS
#define LOOP_ITERS 40
#endif

#define STR(x) #x
#define XSTR(x) STR(x)

static unsigned l1_words[4] __attribute__((section(".l1"), aligned(16)));
static unsigned l2_words[4];

int main(void)
{
    unsigned *l1 = l1_words, *l2 = l2_words;
    __asm__ volatile(
        "slti x0, x0, 20\n .rept " XSTR(N_L1) "\n lw t1, 0(%0)\n .endr\n"
        "slti x0, x0, 21\n .rept " XSTR(N_L2) "\n lw t1, 0(%1)\n .endr\n"
        "slti x0, x0, 22\n .rept " XSTR(N_L2) "\n sw x0, 4(%1)\n .endr\n"
        "slti x0, x0, 23\n .rept " XSTR(N_L1) "\n sw x0, 4(%0)\n .endr\n"
        "slti x0, x0, 24\n lw t1, 8(%1)\n addi t2, t1, 1\n"
        "slti x0, x0, 25\n lw t1, 0(sp)\n lw t2, 4(sp)\n"
        "slti x0, x0, 26\n li t0, " XSTR(LOOP_ITERS) "\n"
        "1: lw t1, 12(%1)\n addi t0, t0, -1\n bnez t0, 1b\n"
        "slti x0, x0, 0\n"
        :
        : "r"(l1), "r"(l2)
        : "t0", "t1", "t2", "memory");
    return 0;
}
