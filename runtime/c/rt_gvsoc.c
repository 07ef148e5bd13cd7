/*
 * tinyodl runtime on GVSoC pulp-open: start-up of the cluster cores (the FC's part is in crt0.S),
 * team fork/join and barrier on the event unit's hardware barrier, the cluster DMA (mchan), the
 * per-region performance counters, output and exit. Compiled empty for the other platforms.
 *
 * No A extension here (an AMO traps): nothing below needs one. The barrier is the event unit's
 * barrier 0, which core 0 sets up for the team before it releases the others; a core waiting in it is
 * clock-gated, so waiting costs no instructions. Only core 0 issues and waits for DMA transfers (the
 * tile loops' use): mchan's transfer ids and its status register are shared by the cluster, and a
 * second core freeing ids would race with the first.
 */
#include "rt_platform.h"

#if RT_PLATFORM_GVSOC

#include <stdlib.h>
#include <string.h>

void rt_hart_start(int core) __attribute__((noreturn));

/* In .data: loaded with the program, not cleared by core 0's .bss zeroing that the others wait for. */
static volatile unsigned boot_released __attribute__((section(".data"))) = 0;

static void (*volatile team_fn)(void *arg);
static void *volatile team_arg;

int rt_core_id(void)
{
    return (int)(CSR_READ(mhartid) & 0x1fu);
}

int rt_num_cores(void)
{
    return RT_NUM_CORES;
}

/* ---- performance counters ----------------------------------------------------------------------- */

/* The events counted per region, in the order of RT_PERF_* (tinyodl_rt.h); the number is the event's
 * bit in the core's PCER CSR (0xCC0) and its counter is CSR 0x780 + number. */
#define PERF_EVENT_BITS ((1u << 0) | (1u << 1) | (1u << 2) | (1u << 3) | (1u << 4) | (1u << 9))
#define PERF_READ(event) CSR_READ(0x780 + event)

typedef struct {
    uint32_t last[RT_PERF_COUNTERS];
    int region;
} perf_cursor_t;

uint64_t rt_perf_counts[RT_NUM_CORES][RT_PERF_REGIONS][RT_PERF_FIELDS];
static perf_cursor_t perf_cursor[RT_NUM_CORES];

static void perf_read(uint32_t *now)
{
    now[RT_PERF_CYCLES] = PERF_READ(0);
    now[RT_PERF_INSTRUCTIONS] = PERF_READ(1);
    now[RT_PERF_LOAD_USE] = PERF_READ(2);
    now[RT_PERF_JUMP_REGISTER] = PERF_READ(3);
    now[RT_PERF_ICACHE_MISS] = PERF_READ(4);
    now[RT_PERF_BRANCH_TAKEN] = PERF_READ(9);
}

void rt_perf_region(int id)
{
    int core = rt_core_id();
    perf_cursor_t *cursor = &perf_cursor[core];
    uint32_t now[RT_PERF_COUNTERS];
    perf_read(now);
    uint64_t *counts = rt_perf_counts[core][cursor->region];
    for (int i = 0; i < RT_PERF_COUNTERS; i++) {
        counts[i] += now[i] - cursor->last[i];
        cursor->last[i] = now[i];
    }
    cursor->region = id >= 0 && id < RT_PERF_REGIONS ? id : 0;
}

static void perf_start(int core)
{
    __asm__ volatile("csrw 0xCC0, %0" : : "r"(PERF_EVENT_BITS));
    __asm__ volatile("csrw 0xCC1, %0" : : "r"(1));
    perf_read(perf_cursor[core].last);
    perf_cursor[core].region = 0;
}

static void put_u64(uint64_t value)
{
    char text[21];
    int length = 0;
    do {
        text[length++] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value);
    while (length)
        rt_putc(text[--length]);
}

/* "PERF <core> <region> <field>..." for every region a core has counts in (RT_PERF_* order). */
static void print_perf(void)
{
    rt_perf_region(0);
    for (int core = 0; core < RT_NUM_CORES; core++) {
        for (int region = 0; region < RT_PERF_REGIONS; region++) {
            const uint64_t *counts = rt_perf_counts[core][region];
            if (counts[RT_PERF_INSTRUCTIONS] == 0)
                continue;
            rt_puts("PERF ");
            rt_print_int(core);
            rt_putc(' ');
            rt_print_int(region);
            for (int i = 0; i < RT_PERF_FIELDS; i++) {
                rt_putc(' ');
                put_u64(counts[i]);
            }
            rt_putc('\n');
        }
    }
}

/* ---- team and barrier --------------------------------------------------------------------------- */

void rt_barrier(void)
{
    if (RT_NUM_CORES == 1)
        return;
    FENCE_ALL();
    (void)*GVSOC_EU_BARRIER0_TRIGGER_WAIT_CLEAR;
    FENCE_ALL();
}

/* The workers sleep in the barrier until core 0 has published the function; a second barrier joins. */
void rt_team_run(void (*fn)(void *arg), void *arg)
{
    team_fn = fn;
    team_arg = arg;
    rt_barrier();
    fn(arg);
    rt_barrier();
}

static void __attribute__((noreturn)) worker_loop(void)
{
    for (;;) {
        rt_barrier();
        team_fn(team_arg);
        rt_barrier();
    }
}

/* ---- cluster DMA (mchan) ------------------------------------------------------------------------ */

#define MCHAN_TO_L1 (1u << 17)
#define MCHAN_INCREMENT (1u << 18)
#define MCHAN_2D_EXT (1u << 19)
/* the command's length field has 17 bits */
#define MCHAN_MAX_BYTES 0x10000u
/* mchan has 16 transfer counters; reading the command register for a 17th stalls the core until one
 * is freed, which only this core would do */
#define MCHAN_COUNTERS 16u

struct dma_transfer {
    unsigned char *dst;
    const unsigned char *src;
    unsigned row_bytes, rows, dst_stride, src_stride;
    unsigned tid;
};

/* Transfer `id` (ids start at 1) sits in slot id % RT_DMA_QUEUE_SLOTS. issued: started by
 * rt_dma_start_*; pushed: handed to mchan (checking mode defers that to the wait); completed: done and
 * its mchan counter freed. completed <= pushed <= issued. */
static struct dma_transfer dma_queue[RT_DMA_QUEUE_SLOTS];
static unsigned dma_issued, dma_pushed, dma_completed;

static void mchan_1d(uint32_t to_l1, uintptr_t l1, uintptr_t l2, unsigned bytes)
{
    for (unsigned done = 0; done < bytes; done += MCHAN_MAX_BYTES) {
        unsigned chunk = bytes - done < MCHAN_MAX_BYTES ? bytes - done : MCHAN_MAX_BYTES;
        *GVSOC_MCHAN_CMD = chunk | to_l1 | MCHAN_INCREMENT;
        *GVSOC_MCHAN_CMD = (uint32_t)(l1 + done);
        *GVSOC_MCHAN_CMD = (uint32_t)(l2 + done);
    }
}

/* mchan's 2-D mode strides the L2 side only: rows that are contiguous in L1 go as 2-D commands (as
 * many rows each as the length field allows), other shapes as one command per row. All commands of a
 * transfer count on the one counter read for it. */
static void mchan_push(const struct dma_transfer *t)
{
    uint32_t to_l1 = rt_in_l1(t->dst) ? MCHAN_TO_L1 : 0u;
    uintptr_t l1 = (uintptr_t)(to_l1 ? t->dst : t->src), l2 = (uintptr_t)(to_l1 ? t->src : t->dst);
    unsigned l1_stride = to_l1 ? t->dst_stride : t->src_stride, l2_stride = to_l1 ? t->src_stride : t->dst_stride;
    unsigned bytes = t->row_bytes * t->rows;
    if (t->rows == 1u || (l1_stride == t->row_bytes && l2_stride == t->row_bytes)) {
        mchan_1d(to_l1, l1, l2, bytes);
    } else if (l1_stride == t->row_bytes && t->row_bytes <= MCHAN_MAX_BYTES) {
        unsigned rows_per_command = MCHAN_MAX_BYTES / t->row_bytes;
        for (unsigned row = 0; row < t->rows; row += rows_per_command) {
            unsigned rows = t->rows - row < rows_per_command ? t->rows - row : rows_per_command;
            *GVSOC_MCHAN_CMD = rows * t->row_bytes | to_l1 | MCHAN_INCREMENT | MCHAN_2D_EXT;
            *GVSOC_MCHAN_CMD = (uint32_t)(l1 + row * t->row_bytes);
            *GVSOC_MCHAN_CMD = (uint32_t)(l2 + row * l2_stride);
            *GVSOC_MCHAN_CMD = t->row_bytes;
            *GVSOC_MCHAN_CMD = l2_stride;
        }
    } else {
        for (unsigned row = 0; row < t->rows; row++)
            mchan_1d(to_l1, l1 + row * l1_stride, l2 + row * l2_stride, t->row_bytes);
    }
}

static int is_l1_to_l2_or_back(const struct dma_transfer *t)
{
    return rt_in_l1(t->dst) != rt_in_l1(t->src);
}

static void complete_one(void)
{
    struct dma_transfer *t = &dma_queue[(dma_completed + 1u) % RT_DMA_QUEUE_SLOTS];
    if (t->tid < MCHAN_COUNTERS) {
        while ((*GVSOC_MCHAN_STATUS >> t->tid) & 1u)
            ;
        *GVSOC_MCHAN_STATUS = 1u << t->tid;
    }
    dma_completed++;
}

/* Hands transfer dma_pushed + 1 to mchan. A transfer that mchan cannot do (neither side in L1, or both)
 * is copied by the core at once. */
static void push_one(void)
{
    if (dma_pushed - dma_completed >= MCHAN_COUNTERS)
        complete_one();
    struct dma_transfer *t = &dma_queue[(dma_pushed + 1u) % RT_DMA_QUEUE_SLOTS];
    if (is_l1_to_l2_or_back(t)) {
        t->tid = *GVSOC_MCHAN_CMD & 0xfu;
        mchan_push(t);
    } else {
        t->tid = MCHAN_COUNTERS;
        for (unsigned row = 0; row < t->rows; row++)
            rt_copy_row(t->dst + row * t->dst_stride, t->src + row * t->src_stride, t->row_bytes);
    }
    dma_pushed++;
}

/* Measured: the cycles the waiting core spends here count as DMA wait of the current region. */
void rt_dma_wait(rt_dma_id_t id)
{
    if ((int)(dma_completed - id) >= 0)
        return;
    uint32_t start = PERF_READ(0);
    while ((int)(dma_pushed - id) < 0)
        push_one();
    while ((int)(dma_completed - id) < 0)
        complete_one();
    uint32_t waited = PERF_READ(0) - start;
    rt_dma_cycles_total += waited;
    int core = rt_core_id();
    rt_perf_counts[core][perf_cursor[core].region][RT_PERF_DMA_WAIT] += waited;
}

void rt_dma_wait_all(void)
{
    rt_dma_wait(dma_issued);
}

rt_dma_id_t rt_dma_start_2d(void *dst, const void *src, unsigned row_bytes, unsigned rows,
                            unsigned dst_stride, unsigned src_stride)
{
    rt_dma_id_t id = dma_issued + 1u;
    if ((int)(dma_completed - (id - RT_DMA_QUEUE_SLOTS)) < 0)
        rt_dma_wait(id - RT_DMA_QUEUE_SLOTS);
    struct dma_transfer *slot = &dma_queue[id % RT_DMA_QUEUE_SLOTS];
    *slot = (struct dma_transfer){dst, src, row_bytes, rows, dst_stride, src_stride, MCHAN_COUNTERS};
    if (RT_DMA_CHECK) {
        for (unsigned row = 0; row < rows; row++)
            rt_poison(slot->dst + row * dst_stride, row_bytes);
    }
    dma_issued = id;
    rt_dma_bytes_total += (unsigned long long)row_bytes * rows;
    rt_dma_transfers_total += 1u;
    if (!RT_DMA_CHECK)
        push_one();
    return id;
}

/* ---- devices and start-up ------------------------------------------------------------------------ */

void rt_platform_putc(char c)
{
    *GVSOC_STDOUT = (uint8_t)c;
}

void rt_platform_exit(int code)
{
    if (code == RT_EXIT_OK || code == RT_EXIT_CHECK)
        print_perf();
    FENCE_ALL();
    *GVSOC_EXIT = GVSOC_EXIT_DONE | ((uint32_t)code & 0xffu);
    for (;;)
        __asm__ volatile("wfi");
}

/* Core 0 clears .bss and runs main(); the others wait for that, then serve the team. */
void rt_hart_start(int core)
{
    rt_core_prologue(core);
    *GVSOC_EU_CORE_MASK_OR = 1u << GVSOC_EU_BARRIER_EVENT;
    if (core != 0) {
        while (!RT_LOAD_ACQUIRE(&boot_released))
            ;
        perf_start(core);
        worker_loop();
    }
    memset(__bss_start, 0, (size_t)(__bss_end - __bss_start));
    __libc_init_array();
    *GVSOC_EU_BARRIER0_TRIGGER_MASK = (1u << RT_NUM_CORES) - 1u;
    *GVSOC_EU_BARRIER0_TARGET_MASK = (1u << RT_NUM_CORES) - 1u;
    perf_start(0);
    RT_STORE_RELEASE(&boot_released, 1u);
    exit(main());
}

#endif /* RT_PLATFORM_GVSOC */
