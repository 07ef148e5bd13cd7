/* Barriers and DMA interleaved: in each of ITERATIONS rounds core 0 starts a transfer into one of
 * four L1 slots, every core passes two barriers, and one core (a different one each round) waits for
 * the previous round's transfer and checks its slot, so transfers are in flight and completing while
 * cores sleep in barriers, and the engine's wake-ups reach cores sleeping for another reason.
 * Then core 0 copies BIG_BYTES in region 4 (start + wait): the copy's instructions must show up on
 * the engine's hart only. */
#include <stdio.h>
#include <string.h>

#include "tinyodl_rt.h"

#ifndef ITERATIONS
#define ITERATIONS 2000
#endif
#ifndef BIG_BYTES
#define BIG_BYTES 32768
#endif

#define SLOT_BYTES 256
#define SLOTS 4
#define CHUNKS 16

static unsigned char l1_slots[SLOTS][SLOT_BYTES] __attribute__((section(".l1"), aligned(16)));
static unsigned char l1_big[BIG_BYTES] __attribute__((section(".l1"), aligned(16)));
static unsigned char l2_chunks[CHUNKS][SLOT_BYTES];
static unsigned char l2_big[BIG_BYTES];
static rt_dma_id_t slot_ids[SLOTS];
static volatile unsigned errors;
static volatile unsigned checks;

static void interleave(void *arg)
{
    (void)arg;
    int core = rt_core_id();
    for (unsigned k = 0; k < ITERATIONS; k++) {
        if (core == 0)
            slot_ids[k % SLOTS] = rt_dma_start_1d(l1_slots[k % SLOTS], l2_chunks[k % CHUNKS], SLOT_BYTES);
        rt_barrier();
        if (k > 0 && (unsigned)core == k % (unsigned)rt_num_cores()) {
            unsigned previous = k - 1u;
            rt_dma_wait(slot_ids[previous % SLOTS]);
            if (memcmp(l1_slots[previous % SLOTS], l2_chunks[previous % CHUNKS], SLOT_BYTES))
                __atomic_fetch_add(&errors, 1u, __ATOMIC_RELAXED);
            __atomic_fetch_add(&checks, 1u, __ATOMIC_RELAXED);
        }
        rt_barrier();
    }
}

int main(void)
{
    for (int c = 0; c < CHUNKS; c++)
        memset(l2_chunks[c], 0x40 + c, SLOT_BYTES);
    for (int i = 0; i < BIG_BYTES; i++)
        l2_big[i] = (unsigned char)(i * 7);
    rt_team_run(interleave, 0);
    rt_dma_wait_all();

    RT_REGION(4);
    rt_dma_copy(l1_big, l2_big, BIG_BYTES);
    RT_REGION(0);
    if (memcmp(l1_big, l2_big, BIG_BYTES))
        errors++;
    printf("iterations=%d checks=%u errors=%u\n", ITERATIONS, checks, errors);
    return errors == 0 && checks == ITERATIONS - 1 ? 0 : 1;
}
