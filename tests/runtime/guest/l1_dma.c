/* An L1 buffer of L1_FLOATS floats filled from L2 by DMA (rows of a matrix, 1D and 2D), then
 * summed in parallel. printf of floats goes through picolibc. */
#include <stdio.h>

#include "tinyodl_rt.h"

#ifndef L1_FLOATS
#define L1_FLOATS 1024
#endif

#define ROWS 16
#define COLS (L1_FLOATS / ROWS)

static float tile[L1_FLOATS] __attribute__((section(".l1"), aligned(16)));
static float matrix[ROWS][2 * COLS];
static float partial[RT_NUM_CORES];

static void sum_tile(void *arg)
{
    (void)arg;
    int start, end;
    rt_chunk(L1_FLOATS, &start, &end);
    float sum = 0.0f;
    for (int i = start; i < end; i++)
        sum += tile[i];
    partial[rt_core_id()] = sum;
}

int main(void)
{
    for (int r = 0; r < ROWS; r++)
        for (int c = 0; c < 2 * COLS; c++)
            matrix[r][c] = c < COLS ? 0.25f : 100.0f;
    rt_dma_copy(tile, matrix[0], COLS * sizeof(float));
    rt_dma_copy_2d(tile + COLS, matrix[1], COLS * sizeof(float), ROWS - 1, COLS * sizeof(float),
                   2 * COLS * sizeof(float));
    rt_team_run(sum_tile, 0);
    float total = 0.0f;
    for (int core = 0; core < rt_num_cores(); core++)
        total += partial[core];
    printf("sum=%.3f pi=%.4f bytes=%llu transfers=%llu cycles=%llu\n", (double)total, (double)3.14159265f,
           rt_dma_bytes_total, rt_dma_transfers_total, rt_dma_cycles_total);
    return total == 0.25f * L1_FLOATS ? 0 : 1;
}
