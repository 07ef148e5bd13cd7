/* What a core sees of a destination before and after waiting for its transfer, in checking mode
 * (RT_DMA_CHECK=1) or not. Prints, as hex words or bytes:
 *   early=  the first float of a destination read before the wait (the poison in checking mode)
 *   late=   the same float after the wait (1.5f = 0x3fc00000)
 *   bytes=  16 bytes of an unaligned odd-sized 2-D destination before the wait (3 rows of 3 bytes at
 *           byte offsets 1, 6, 11 of a zeroed buffer)
 *   source= a transfer's result when its source is written after the start (checking mode copies
 *           only at the wait, so it deterministically sees the new value 2.5f = 0x40200000)
 *   chained= the first transfer's data after waiting only for a later one
 *   many=   errors after MANY_TRANSFERS transfers (more than the queue holds) and one wait for all */
#include <stdio.h>
#include <string.h>

#include "tinyodl_rt.h"

#ifndef MANY_TRANSFERS
#define MANY_TRANSFERS 150
#endif

#define FLOATS 16

static float l1_floats[FLOATS * MANY_TRANSFERS] __attribute__((section(".l1"), aligned(16)));
static unsigned char l1_bytes[16] __attribute__((section(".l1"), aligned(16)));
static float l2_floats[FLOATS] __attribute__((aligned(16)));
static unsigned char l2_bytes[16];

static unsigned bits(volatile const float *value)
{
    unsigned word;
    float copy = *value;
    memcpy(&word, &copy, sizeof word);
    return word;
}

int main(void)
{
    for (int i = 0; i < FLOATS; i++)
        l2_floats[i] = 1.5f;
    for (int i = 0; i < 16; i++)
        l2_bytes[i] = (unsigned char)(0x10 + i);

    rt_dma_id_t id = rt_dma_start_1d(l1_floats, l2_floats, sizeof l2_floats);
    unsigned early = bits(&l1_floats[0]);
    rt_dma_wait(id);
    printf("early=%08x late=%08x\n", early, bits(&l1_floats[0]));

    memset(l1_bytes, 0, sizeof l1_bytes);
    id = rt_dma_start_2d(l1_bytes + 1, l2_bytes, 3, 3, 5, 4);
    printf("bytes=");
    for (int i = 0; i < 16; i++)
        printf("%02x", ((volatile unsigned char *)l1_bytes)[i]);
    rt_dma_wait(id);
    printf(" after=");
    for (int i = 0; i < 16; i++)
        printf("%02x", l1_bytes[i]);
    printf("\n");

    l2_floats[0] = 1.5f;
    id = rt_dma_start_1d(l1_floats, l2_floats, sizeof(float));
    ((volatile float *)l2_floats)[0] = 2.5f;
    rt_dma_wait(id);
    printf("source=%08x\n", bits(&l1_floats[0]));

    l2_floats[0] = 1.5f;
    rt_dma_id_t first = rt_dma_start_1d(l1_floats, l2_floats, sizeof l2_floats);
    rt_dma_id_t second = rt_dma_start_1d(l1_floats + FLOATS, l2_floats, sizeof l2_floats);
    rt_dma_wait(second);
    (void)first;
    printf("chained=%08x\n", bits(&l1_floats[FLOATS - 1]));

    for (int t = 0; t < MANY_TRANSFERS; t++)
        rt_dma_start_1d(l1_floats + t * FLOATS, l2_floats, sizeof l2_floats);
    rt_dma_wait_all();
    unsigned errors = 0;
    for (int i = 0; i < FLOATS * MANY_TRANSFERS; i++)
        errors += l1_floats[i] != 1.5f;
    printf("many=%u\n", errors);
    return 0;
}
