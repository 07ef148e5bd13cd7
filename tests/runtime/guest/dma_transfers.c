/* The DMA engine moves the right bytes: 1-D and 2-D transfers with odd sizes, odd offsets and strides,
 * L2 -> L1 and back L1 -> L2 (every byte around the rows must stay untouched); MANY_TRANSFERS transfers
 * in flight at once (more than the queue holds) waited for in reverse order; transfers started by core
 * 0 and waited for by several cores at once; a wait for id 0 ("no transfer"). Prints the modelled
 * cycles of single transfers and the engine's counters. */
#include <stdio.h>
#include <string.h>

#include "tinyodl_rt.h"

#ifndef MANY_TRANSFERS
#define MANY_TRANSFERS 200
#endif

#define BUFFER_BYTES 4096
#define GUARD 0xeeu
#define MANY_CHUNK_BYTES 16
#define CORE_CHUNK_BYTES 400

static unsigned char l1_buffer[BUFFER_BYTES] __attribute__((section(".l1"), aligned(16)));
static unsigned char l2_source[BUFFER_BYTES] __attribute__((aligned(16)));
static unsigned char l2_result[BUFFER_BYTES] __attribute__((aligned(16)));
static volatile unsigned errors;

struct geometry {
    unsigned dst_offset, src_offset, row_bytes, rows, dst_stride, src_stride;
};

/* 1-D ones have rows = 1; strides equal to row_bytes are contiguous 2-D ones. */
static const struct geometry cases[] = {
    {1, 3, 1, 1, 1, 1},          {5, 0, 1001, 1, 1001, 1001}, {0, 0, 4096, 1, 4096, 4096},
    {3, 7, 13, 7, 17, 29},       {0, 1, 64, 5, 100, 64},      {2, 2, 5, 9, 5, 5},
    {11, 0, 3, 31, 131, 7},      {0, 0, 1, 0, 1, 1},
};

static unsigned char source_byte(unsigned index)
{
    return (unsigned char)(index * 131u + 7u);
}

static void fail(const char *what, unsigned index)
{
    printf("MISMATCH %s at %u\n", what, index);
    __atomic_fetch_add(&errors, 1u, __ATOMIC_RELAXED);
}

/* Byte `index` of a destination that got rows of `source` through geometry g (dst side), else GUARD. */
static unsigned char expected_at(const struct geometry *g, const unsigned char *source, unsigned src_offset,
                                 unsigned src_stride, unsigned index)
{
    for (unsigned row = 0; row < g->rows; row++) {
        unsigned start = g->dst_offset + row * g->dst_stride;
        if (index >= start && index < start + g->row_bytes)
            return source[src_offset + row * src_stride + (index - start)];
    }
    return GUARD;
}

static void check_case(const struct geometry *g, unsigned number)
{
    memset(l1_buffer, GUARD, BUFFER_BYTES);
    memset(l2_result, GUARD, BUFFER_BYTES);
    rt_dma_wait(rt_dma_start_2d(l1_buffer + g->dst_offset, l2_source + g->src_offset, g->row_bytes, g->rows,
                                g->dst_stride, g->src_stride));
    for (unsigned i = 0; i < BUFFER_BYTES; i++) {
        if (l1_buffer[i] != expected_at(g, l2_source, g->src_offset, g->src_stride, i)) {
            fail("L2->L1", number * 10000u + i);
            break;
        }
    }
    /* back to L2 with the roles of the strides swapped: the result must equal the first source */
    const struct geometry back = {g->src_offset, g->dst_offset, g->row_bytes, g->rows, g->src_stride, g->dst_stride};
    rt_dma_wait(rt_dma_start_2d(l2_result + back.dst_offset, l1_buffer + back.src_offset, back.row_bytes,
                                back.rows, back.dst_stride, back.src_stride));
    for (unsigned i = 0; i < BUFFER_BYTES; i++) {
        if (l2_result[i] != expected_at(&back, l1_buffer, back.src_offset, back.src_stride, i)) {
            fail("L1->L2", number * 10000u + i);
            break;
        }
    }
}

static void many_in_flight(void)
{
    static rt_dma_id_t ids[MANY_TRANSFERS];
    memset(l1_buffer, GUARD, BUFFER_BYTES);
    for (unsigned t = 0; t < MANY_TRANSFERS; t++) {
        unsigned offset = (t * MANY_CHUNK_BYTES) % BUFFER_BYTES;
        ids[t] = rt_dma_start_1d(l1_buffer + offset, l2_source + (BUFFER_BYTES - offset - MANY_CHUNK_BYTES),
                                 MANY_CHUNK_BYTES);
        if (t > 0 && ids[t] != ids[t - 1] + 1u)
            fail("ids increase by one", t);
    }
    for (unsigned t = MANY_TRANSFERS; t-- > 0;)
        rt_dma_wait(ids[t]);
    for (unsigned t = 0; t < MANY_TRANSFERS; t++) {
        unsigned offset = (t * MANY_CHUNK_BYTES) % BUFFER_BYTES;
        if (memcmp(l1_buffer + offset, l2_source + (BUFFER_BYTES - offset - MANY_CHUNK_BYTES), MANY_CHUNK_BYTES))
            fail("many in flight", t);
    }
}

static rt_dma_id_t core_ids[RT_NUM_CORES];

/* Core 0 starts one transfer per core; then each core waits for its own and its neighbour's, so
 * every transfer has two waiters on different cores, and every core waits for all of them. */
static void waits_from_every_core(void *arg)
{
    (void)arg;
    int core = rt_core_id();
    int cores = rt_num_cores();
    if (core == 0) {
        memset(l1_buffer, GUARD, BUFFER_BYTES);
        for (int c = 0; c < cores; c++)
            core_ids[c] = rt_dma_start_1d(l1_buffer + c * CORE_CHUNK_BYTES, l2_source + 1 + c * CORE_CHUNK_BYTES,
                                          CORE_CHUNK_BYTES);
    }
    rt_barrier();
    int neighbour = (core + 1) % cores;
    rt_dma_wait(core_ids[core]);
    rt_dma_wait(core_ids[neighbour]);
    if (memcmp(l1_buffer + core * CORE_CHUNK_BYTES, l2_source + 1 + core * CORE_CHUNK_BYTES, CORE_CHUNK_BYTES) ||
        memcmp(l1_buffer + neighbour * CORE_CHUNK_BYTES, l2_source + 1 + neighbour * CORE_CHUNK_BYTES,
               CORE_CHUNK_BYTES))
        fail("wait from core", (unsigned)core);
    rt_dma_wait_all();
    rt_barrier();
}

static unsigned long long cycles_of(void *dst, const void *src, unsigned bytes)
{
    unsigned long long before = rt_dma_cycles_total;
    rt_dma_copy(dst, src, bytes);
    return rt_dma_cycles_total - before;
}

int main(void)
{
    rt_dma_wait(0); /* "no transfer": returns at once */
    for (unsigned i = 0; i < BUFFER_BYTES; i++)
        l2_source[i] = source_byte(i);
    for (unsigned c = 0; c < sizeof cases / sizeof cases[0]; c++)
        check_case(&cases[c], c);
    many_in_flight();
    rt_team_run(waits_from_every_core, 0);
    printf("cycles l2->l1 1001 B: %llu, l1->l2 1000 B: %llu, l2->l2 8 B: %llu\n",
           cycles_of(l1_buffer, l2_source, 1001), cycles_of(l2_result, l1_buffer, 1000),
           cycles_of(l2_result, l2_source, 8));
    printf("errors=%u transfers=%llu bytes=%llu\n", errors, rt_dma_transfers_total, rt_dma_bytes_total);
    return errors == 0 ? 0 : 1;
}
