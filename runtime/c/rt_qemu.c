/*
 * tinyodl runtime on QEMU (-machine virt): start-up, team fork/join, sleeping barrier, the DMA engine
 * hart, watchdog and hart count, UART output and exit through the test device. Compiled empty for
 * the other platforms (rt_platform.h).
 */
#include "rt_platform.h"

#if !RT_PLATFORM_GVSOC

#include <stdlib.h>
#include <string.h>

void rt_hart_start(int hart) __attribute__((noreturn));

/* The hart after the team is the DMA engine. */
#define DMA_HART RT_NUM_CORES

/* ---- shared state ----------------------------------------------------------------------------- */

/* Boot hand-shake: in .data (loaded by QEMU, not cleared by the .bss zeroing that it waits for). */
static volatile unsigned boot_released __attribute__((section(".data"))) = 0;

static volatile unsigned barrier_arrived;
static volatile unsigned barrier_generation;

static void (*volatile team_fn)(void *arg);
static void *volatile team_arg;
static volatile unsigned team_generation;

/* One queued transfer; a 1-D transfer is one row. */
struct dma_transfer {
    unsigned char *dst;
    const unsigned char *src;
    unsigned row_bytes;
    unsigned rows;
    unsigned dst_stride;
    unsigned src_stride;
};

/* The ring queue: transfer `id` (ids start at 1) sits in slot id % RT_DMA_QUEUE_SLOTS. The counters
 * only grow (wrapping after 2^32 transfers; comparisons are wrap-safe). dma_issued is written by the
 * issuing core, dma_completed by the engine only, dma_requested (checking mode) by any waiter. */
static struct dma_transfer dma_queue[RT_DMA_QUEUE_SLOTS];
static volatile unsigned dma_issued;
static volatile unsigned dma_completed;
static volatile unsigned dma_requested;
/* Bit h set: core h sleeps until dma_completed moves, so the engine knows whom to wake. */
static volatile unsigned dma_waiters;

/* ---- cores ------------------------------------------------------------------------------------ */

int rt_core_id(void)
{
    return (int)CSR_READ(mhartid);
}

int rt_num_cores(void)
{
    return RT_NUM_CORES;
}

typedef int (*sleep_condition)(const volatile unsigned *word, unsigned value);

static int word_differs(const volatile unsigned *word, unsigned seen)
{
    return __atomic_load_n(word, __ATOMIC_ACQUIRE) != seen;
}

/* A growing counter has reached `target` (wrap-safe while the two are less than 2^31 apart). */
static int count_reached(const volatile unsigned *count, unsigned target)
{
    return (int)(__atomic_load_n(count, __ATOMIC_ACQUIRE) - target) >= 0;
}

/* Sleeps until ready(word, value). A waker first changes the word, then raises our msip; clearing
 * msip before each check means a wake-up arriving at any point is never lost, and a wake-up meant for
 * another condition only costs one more check. Interrupts are masked while waiting so a wake-up does
 * not enter the trap handler; on hart 0 a short window after each wake-up lets a pending watchdog
 * interrupt through. Always inlined, so `ready` is a direct call. */
static inline __attribute__((always_inline)) void sleep_until(sleep_condition ready, const volatile unsigned *word,
                                                              unsigned value)
{
    int hart = rt_core_id();
    unsigned long saved = CSR_READ_CLEAR(mstatus, MSTATUS_MIE);
    for (;;) {
        if (CSR_READ(mip) & MIP_MSIP) {
            CLINT_MSIP[hart] = 0;
            FENCE_ALL();
        }
        if (ready(word, value))
            break;
        __asm__ volatile("wfi" : : : "memory");
        if (saved & MSTATUS_MIE) {
            CLINT_MSIP[hart] = 0;
            CSR_SET(mstatus, MSTATUS_MIE);
            CSR_CLEAR(mstatus, MSTATUS_MIE);
        }
    }
    CSR_SET(mstatus, saved & MSTATUS_MIE);
}

static void wait_for_change(volatile unsigned *word, unsigned seen)
{
    sleep_until(word_differs, word, seen);
}

/* Wakes the other cores of the team (not the DMA engine). */
static void wake_others(void)
{
    int me = rt_core_id();
    FENCE_ALL();
    for (int hart = 0; hart < RT_NUM_CORES; hart++) {
        if (hart != me)
            CLINT_MSIP[hart] = 1;
    }
}

void rt_barrier(void)
{
    if (RT_NUM_CORES == 1)
        return;
    unsigned generation = __atomic_load_n(&barrier_generation, __ATOMIC_ACQUIRE);
    unsigned arrived = __atomic_fetch_add(&barrier_arrived, 1u, __ATOMIC_ACQ_REL);
    if (arrived == RT_NUM_CORES - 1) {
        __atomic_store_n(&barrier_arrived, 0u, __ATOMIC_RELAXED);
        __atomic_store_n(&barrier_generation, generation + 1u, __ATOMIC_RELEASE);
        wake_others();
    } else {
        wait_for_change(&barrier_generation, generation);
    }
}

void rt_team_run(void (*fn)(void *arg), void *arg)
{
    team_fn = fn;
    team_arg = arg;
    __atomic_store_n(&team_generation, team_generation + 1u, __ATOMIC_RELEASE);
    wake_others();
    fn(arg);
    rt_barrier();
}

static void __attribute__((noreturn)) worker_loop(void)
{
    unsigned seen = 0;
    for (;;) {
        wait_for_change(&team_generation, seen);
        seen = __atomic_load_n(&team_generation, __ATOMIC_ACQUIRE);
        void (*fn)(void *) = team_fn;
        fn(team_arg);
        rt_barrier();
    }
}

/* ---- DMA engine --------------------------------------------------------------------------------- */

static unsigned long long modelled_cycles(const struct dma_transfer *transfer)
{
    unsigned long long bytes = (unsigned long long)transfer->row_bytes * transfer->rows;
    int into_l1 = rt_in_l1(transfer->dst);
    unsigned setup = into_l1 ? RT_DMA_L2_TO_L1_SETUP_CYCLES : RT_DMA_L1_TO_L2_SETUP_CYCLES;
    unsigned per_100_cycles = into_l1 ? RT_DMA_L2_TO_L1_BYTES_PER_100_CYCLES : RT_DMA_L1_TO_L2_BYTES_PER_100_CYCLES;
    return setup + (100ull * bytes + per_100_cycles - 1u) / per_100_cycles;
}

static void perform(const struct dma_transfer *transfer)
{
    for (unsigned row = 0; row < transfer->rows; row++)
        rt_copy_row(transfer->dst + row * transfer->dst_stride, transfer->src + row * transfer->src_stride,
                 transfer->row_bytes);
    rt_dma_bytes_total += (unsigned long long)transfer->row_bytes * transfer->rows;
    rt_dma_transfers_total += 1u;
    rt_dma_cycles_total += modelled_cycles(transfer);
}

/* The engine hart: takes transfers in FIFO order (in checking mode only those somebody waits for),
 * performs them, publishes the completion and wakes the cores waiting for one. */
static void __attribute__((noreturn)) dma_engine_loop(void)
{
    unsigned done = 0;
    for (;;) {
        sleep_until(count_reached, RT_DMA_CHECK ? &dma_requested : &dma_issued, done + 1u);
        (void)__atomic_load_n(&dma_issued, __ATOMIC_ACQUIRE); /* orders the slot's read after its publication */
        done++;
        perform(&dma_queue[done % RT_DMA_QUEUE_SLOTS]);
        __atomic_store_n(&dma_completed, done, __ATOMIC_RELEASE);
        /* Pairs with the fence in rt_dma_wait: either the waiter sees the new count or we see its bit. */
        FENCE_ALL();
        unsigned waiters = __atomic_load_n(&dma_waiters, __ATOMIC_ACQUIRE);
        for (int hart = 0; hart < RT_NUM_CORES; hart++) {
            if (waiters & (1u << hart))
                CLINT_MSIP[hart] = 1;
        }
    }
}

static void wake_dma_engine(void)
{
    FENCE_ALL();
    CLINT_MSIP[DMA_HART] = 1;
}

/* Checking mode: the engine works up to the highest id anybody waits for. */
static void request(rt_dma_id_t id)
{
    unsigned current = __atomic_load_n(&dma_requested, __ATOMIC_RELAXED);
    while ((int)(current - id) < 0) {
        if (__atomic_compare_exchange_n(&dma_requested, &current, id, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
            wake_dma_engine();
            return;
        }
    }
}

void rt_dma_wait(rt_dma_id_t id)
{
    if (count_reached(&dma_completed, id))
        return;
    if (RT_DMA_CHECK)
        request(id);
    unsigned me = 1u << rt_core_id();
    __atomic_fetch_or(&dma_waiters, me, __ATOMIC_SEQ_CST);
    FENCE_ALL();
    sleep_until(count_reached, &dma_completed, id);
    __atomic_fetch_and(&dma_waiters, ~me, __ATOMIC_RELEASE);
}

void rt_dma_wait_all(void)
{
    rt_dma_wait(__atomic_load_n(&dma_issued, __ATOMIC_ACQUIRE));
}

/* A full queue: sleeps until the transfer that last used the next slot is complete, then starts. Out
 * of line and reached by a tail call, so the common path saves no registers on the (L2) stack. */
static rt_dma_id_t __attribute__((noinline, cold)) start_when_a_slot_frees(
    void *dst, const void *src, unsigned row_bytes, unsigned rows, unsigned dst_stride, unsigned src_stride)
{
    rt_dma_wait(dma_issued + 1u - RT_DMA_QUEUE_SLOTS);
    return rt_dma_start_2d(dst, src, row_bytes, rows, dst_stride, src_stride);
}

rt_dma_id_t rt_dma_start_2d(void *dst, const void *src, unsigned row_bytes, unsigned rows,
                            unsigned dst_stride, unsigned src_stride)
{
    rt_dma_id_t id = dma_issued + 1u;
    if (!count_reached(&dma_completed, id - RT_DMA_QUEUE_SLOTS))
        return start_when_a_slot_frees(dst, src, row_bytes, rows, dst_stride, src_stride);
    struct dma_transfer *slot = &dma_queue[id % RT_DMA_QUEUE_SLOTS];
    *slot = (struct dma_transfer){dst, src, row_bytes, rows, dst_stride, src_stride};
    if (RT_DMA_CHECK) {
        for (unsigned row = 0; row < rows; row++)
            rt_poison(slot->dst + row * dst_stride, row_bytes);
    }
    __atomic_store_n(&dma_issued, id, __ATOMIC_RELEASE);
    if (!RT_DMA_CHECK)
        wake_dma_engine();
    return id;
}

/* ---- watchdog and hart count ------------------------------------------------------------------ */

static uint64_t read_mtime(void)
{
    uint32_t high, low;
    do {
        high = *CLINT_MTIME_HI;
        low = *CLINT_MTIME_LO;
    } while (high != *CLINT_MTIME_HI);
    return ((uint64_t)high << 32) | low;
}

static void set_mtimecmp(int hart, uint64_t when)
{
    *CLINT_MTIMECMP_HI(hart) = 0xffffffffu;
    *CLINT_MTIMECMP_LO(hart) = (uint32_t)when;
    *CLINT_MTIMECMP_HI(hart) = (uint32_t)(when >> 32);
}

/* A hart exists iff its mtimecmp register keeps what is written to it: QEMU reads back 0 for harts
 * the machine does not have. Pushing every team hart's timer to "never" is what start-up wants anyway. */
static int hart_exists(int hart)
{
    set_mtimecmp(hart, ~0ull);
    return *CLINT_MTIMECMP_HI(hart) == 0xffffffffu;
}

/* The team's cores plus the DMA engine. */
static void check_hart_count(void)
{
    int expected = RT_NUM_CORES + 1;
    int present = 1;
    while (present < expected && hart_exists(present))
        present++;
    if (present == expected && !hart_exists(expected))
        return;
    rt_claim_fatal_report();
    rt_puts("wrong hart count: the machine has ");
    if (present == expected)
        rt_puts("more than ");
    rt_print_int(present);
    rt_puts(" harts, the program was built for RT_NUM_CORES=");
    rt_print_int(RT_NUM_CORES);
    rt_puts(" and needs ");
    rt_print_int(expected);
    rt_puts(" (the cores and the DMA engine)\n");
    rt_exit(RT_EXIT_HART_COUNT);
}

static void start_watchdog(void)
{
    if (RT_WATCHDOG_MS <= 0)
        return;
    set_mtimecmp(0, read_mtime() + (uint64_t)RT_WATCHDOG_MS * MTIME_TICKS_PER_MS);
    CSR_SET(mie, MIE_MTIE);
}

/* ---- start-up --------------------------------------------------------------------------------- */

/* The engine waits for the release like the cores, but runs only runtime code that needs no TLS block
 * (tp stays 0) and has its own stack in crt0.S, outside the painted team stacks. */
void rt_hart_start(int hart)
{
    if (hart == DMA_HART) {
        CSR_SET(mie, MIE_MSIE);
        wait_for_change(&boot_released, 0u);
        dma_engine_loop();
    }
    rt_core_prologue(hart);
    CSR_SET(mie, MIE_MSIE);
    if (hart != 0) {
        wait_for_change(&boot_released, 0u);
        worker_loop();
    }
    memset(__bss_start, 0, (size_t)(__bss_end - __bss_start));
    check_hart_count();
    start_watchdog();
    __libc_init_array();
    __atomic_store_n(&boot_released, 1u, __ATOMIC_RELEASE);
    wake_others();
    wake_dma_engine();
    CSR_SET(mstatus, MSTATUS_MIE);
    exit(main());
}

/* ---- devices ---------------------------------------------------------------------------------- */

void rt_platform_putc(char c)
{
    volatile uint8_t *uart = (volatile uint8_t *)UART_BASE;
    while (!(uart[UART_LSR] & UART_LSR_THR_EMPTY))
        ;
    uart[UART_THR] = (uint8_t)c;
}

void rt_platform_exit(int code)
{
    volatile uint32_t *test = (volatile uint32_t *)TEST_DEVICE;
    *test = code == 0 ? TEST_PASS : (((uint32_t)code & 0xffffu) << 16) | TEST_FAIL;
    for (;;)
        __asm__ volatile("wfi");
}

#endif /* !RT_PLATFORM_GVSOC */
