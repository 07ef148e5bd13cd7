/*
 * tinyodl runtime: start-up in C, team fork/join, sleeping barrier, the DMA engine hart, UART output,
 * exit, trap and watchdog reporting. See tinyodl_rt.h for the contract.
 */
#include "tinyodl_rt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- QEMU virt devices ------------------------------------------------------------------------ */

#define UART_BASE 0x10000000u
#define UART_THR 0u
#define UART_LSR 5u
#define UART_LSR_THR_EMPTY 0x20u
#define TEST_DEVICE 0x00100000u
#define TEST_PASS 0x5555u
#define TEST_FAIL 0x3333u
#define CLINT_MSIP ((volatile uint32_t *)0x02000000u)
#define CLINT_MTIMECMP_LO(hart) ((volatile uint32_t *)(0x02004000u + 8u * (unsigned)(hart)))
#define CLINT_MTIMECMP_HI(hart) ((volatile uint32_t *)(0x02004004u + 8u * (unsigned)(hart)))
#define CLINT_MTIME_LO ((volatile uint32_t *)0x0200bff8u)
#define CLINT_MTIME_HI ((volatile uint32_t *)0x0200bffcu)
#define MTIME_TICKS_PER_MS 10000ull

#define MSTATUS_MIE 0x8u
#define MIE_MSIE 0x8u
#define MIP_MSIP 0x8u
#define MIE_MTIE 0x80u
#define MCAUSE_INTERRUPT 0x80000000u
#define MCAUSE_MTI (MCAUSE_INTERRUPT | 7u)

#define CSR_READ(name)                                                                     \
    ({                                                                                     \
        unsigned long value_;                                                              \
        __asm__ volatile("csrr %0, " #name : "=r"(value_));                                \
        value_;                                                                            \
    })
#define CSR_SET(name, bits) __asm__ volatile("csrs " #name ", %0" : : "r"(bits) : "memory")
#define CSR_CLEAR(name, bits) __asm__ volatile("csrc " #name ", %0" : : "r"(bits) : "memory")
#define CSR_READ_CLEAR(name, bits)                                                         \
    ({                                                                                     \
        unsigned long old_;                                                                \
        __asm__ volatile("csrrc %0, " #name ", %1" : "=r"(old_) : "r"(bits) : "memory");  \
        old_;                                                                              \
    })
#define FENCE_ALL() __asm__ volatile("fence iorw, iorw" : : : "memory")

/* Stacks are painted at start-up; an overwritten canary at the bottom means an overflow. */
#define STACK_PAINT 0x5afe57acu
#define STACK_CANARY_WORDS 16u
#define STACK_PAINT_MARGIN_BYTES 16u

/* ---- linker-script symbols -------------------------------------------------------------------- */

extern char __bss_start[], __bss_end[];
extern char __tdata_start[], __tdata_size[], __tbss_size[], __tbss_offset[];
extern char __tls_blocks_start[], __tls_block_bytes[];
extern char __stacks_start[], __stack_bytes[];
extern char __l1_start[], __l1_region_end[];

void __libc_init_array(void);
int main(void);
void rt_hart_start(int hart) __attribute__((noreturn));
void rt_trap_fatal(unsigned mcause, unsigned mepc, unsigned mtval, unsigned hart)
    __attribute__((noreturn));

/* The linker script checks these against its own num_cores and stack_bytes: a mismatch would give
 * harts stacks that the script never reserved. */
#define RT_STRINGIFY_(x) #x
#define RT_STRINGIFY(x) RT_STRINGIFY_(x)
/* The hart after the team is the DMA engine. */
#define DMA_HART RT_NUM_CORES
_Static_assert(RT_NUM_CORES >= 1 && RT_NUM_CORES < 32, "RT_NUM_CORES must be in [1, 32): waiters are a bit mask");
_Static_assert(RT_DMA_QUEUE_SLOTS >= 1, "RT_DMA_QUEUE_SLOTS must be positive");

__asm__(".globl __rt_num_cores_compiled\n.set __rt_num_cores_compiled, " RT_STRINGIFY(RT_NUM_CORES) "\n"
        ".globl __rt_stack_bytes_compiled\n.set __rt_stack_bytes_compiled, " RT_STRINGIFY(RT_STACK_BYTES));

/* ---- shared state ----------------------------------------------------------------------------- */

/* Boot hand-shake: in .data (loaded by QEMU, not cleared by the .bss zeroing that it waits for). */
static volatile unsigned boot_released __attribute__((section(".data"))) = 0;
static volatile unsigned fatal_taken __attribute__((section(".data"))) = 0;
/* Harts start at their own pace; only a hart that painted its stack can have its canary checked. */
static volatile unsigned char stack_painted[RT_NUM_CORES] __attribute__((section(".data"))) = {0};

static volatile unsigned barrier_arrived;
static volatile unsigned barrier_generation;

static void (*volatile team_fn)(void *arg);
static void *volatile team_arg;
static volatile unsigned team_generation;

volatile unsigned long long rt_dma_bytes_total;
volatile unsigned long long rt_dma_transfers_total;
volatile unsigned long long rt_dma_cycles_total;

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

static int in_l1(const unsigned char *address)
{
    return address >= (const unsigned char *)__l1_start && address < (const unsigned char *)__l1_region_end;
}

static unsigned long long modelled_cycles(const struct dma_transfer *transfer)
{
    unsigned long long bytes = (unsigned long long)transfer->row_bytes * transfer->rows;
    int into_l1 = in_l1(transfer->dst);
    unsigned setup = into_l1 ? RT_DMA_L2_TO_L1_SETUP_CYCLES : RT_DMA_L1_TO_L2_SETUP_CYCLES;
    unsigned per_100_cycles = into_l1 ? RT_DMA_L2_TO_L1_BYTES_PER_100_CYCLES : RT_DMA_L1_TO_L2_BYTES_PER_100_CYCLES;
    return setup + (100ull * bytes + per_100_cycles - 1u) / per_100_cycles;
}

typedef uint32_t __attribute__((may_alias)) aliased_word;

/* picolibc's rv32 memcpy copies byte by byte (6 instructions a byte); copying words where source and
 * destination share their alignment makes a simulated transfer about 5x cheaper in QEMU time. The
 * attribute keeps GCC from turning the loops back into a memcpy call. */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
static void copy_row(unsigned char *dst, const unsigned char *src, unsigned bytes)
{
    if ((((uintptr_t)dst ^ (uintptr_t)src) & 3u) == 0u) {
        for (; bytes && ((uintptr_t)dst & 3u); bytes--)
            *dst++ = *src++;
        aliased_word *to = (aliased_word *)dst;
        const aliased_word *from = (const aliased_word *)src;
        for (; bytes >= 16u; bytes -= 16u, to += 4, from += 4) {
            aliased_word a = from[0], b = from[1], c = from[2], d = from[3];
            to[0] = a;
            to[1] = b;
            to[2] = c;
            to[3] = d;
        }
        for (; bytes >= 4u; bytes -= 4u)
            *to++ = *from++;
        dst = (unsigned char *)to;
        src = (const unsigned char *)from;
    }
    for (; bytes; bytes--)
        *dst++ = *src++;
}

static void perform(const struct dma_transfer *transfer)
{
    for (unsigned row = 0; row < transfer->rows; row++)
        copy_row(transfer->dst + row * transfer->dst_stride, transfer->src + row * transfer->src_stride,
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

static unsigned char poison_byte(const unsigned char *address)
{
    return (unsigned char)(RT_DMA_POISON >> (8u * ((uintptr_t)address & 3u)));
}

/* Checking mode: every aligned word of a poisoned buffer reads RT_DMA_POISON, whatever the buffer's
 * alignment and size, so any float read from it is NaN. */
static void poison(unsigned char *dst, unsigned bytes)
{
    unsigned char *end = dst + bytes;
    for (; dst < end && ((uintptr_t)dst & 3u); dst++)
        *dst = poison_byte(dst);
    for (; end - dst >= 4; dst += 4)
        *(aliased_word *)dst = RT_DMA_POISON;
    for (; dst < end; dst++)
        *dst = poison_byte(dst);
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
            poison(slot->dst + row * dst_stride, row_bytes);
    }
    __atomic_store_n(&dma_issued, id, __ATOMIC_RELEASE);
    if (!RT_DMA_CHECK)
        wake_dma_engine();
    return id;
}

rt_dma_id_t rt_dma_start_1d(void *dst, const void *src, unsigned bytes)
{
    return rt_dma_start_2d(dst, src, bytes, 1u, bytes, bytes);
}

void rt_dma_copy(void *dst, const void *src, unsigned bytes)
{
    rt_dma_wait(rt_dma_start_1d(dst, src, bytes));
}

void rt_dma_copy_2d(void *dst, const void *src, unsigned row_bytes, unsigned rows,
                    unsigned dst_stride, unsigned src_stride)
{
    rt_dma_wait(rt_dma_start_2d(dst, src, row_bytes, rows, dst_stride, src_stride));
}

/* ---- output ----------------------------------------------------------------------------------- */

void rt_putc(char c)
{
    volatile uint8_t *uart = (volatile uint8_t *)UART_BASE;
    while (!(uart[UART_LSR] & UART_LSR_THR_EMPTY))
        ;
    uart[UART_THR] = (uint8_t)c;
}

void rt_puts(const char *s)
{
    while (*s)
        rt_putc(*s++);
}

void rt_print_hex32(unsigned value)
{
    static const char digits[] = "0123456789abcdef";
    rt_puts("0x");
    for (int shift = 28; shift >= 0; shift -= 4)
        rt_putc(digits[(value >> shift) & 0xfu]);
}

void rt_print_int(int value)
{
    char text[12];
    int length = 0;
    unsigned magnitude = value < 0 ? 0u - (unsigned)value : (unsigned)value;
    do {
        text[length++] = (char)('0' + magnitude % 10u);
        magnitude /= 10u;
    } while (magnitude);
    if (value < 0)
        rt_putc('-');
    while (length)
        rt_putc(text[--length]);
}

static int stdio_put(char c, FILE *file)
{
    (void)file;
    rt_putc(c);
    return (unsigned char)c;
}

static FILE rt_stdio = FDEV_SETUP_STREAM(stdio_put, NULL, NULL, _FDEV_SETUP_WRITE);
FILE *const stdin = &rt_stdio;
FILE *const stdout = &rt_stdio;
FILE *const stderr = &rt_stdio;

/* ---- stacks ----------------------------------------------------------------------------------- */

static volatile uint32_t *stack_bottom(int hart)
{
    return (volatile uint32_t *)(__stacks_start + (unsigned)hart * (unsigned)(uintptr_t)__stack_bytes);
}

/* Paints this hart's unused stack, below the current frame. Volatile stores keep the compiler from
 * turning the loop into a memset call, whose frame would land in the area being painted. */
static void paint_own_stack(int hart)
{
    uintptr_t sp;
    __asm__ volatile("mv %0, sp" : "=r"(sp));
    volatile uint32_t *word = stack_bottom(hart);
    volatile uint32_t *limit = (volatile uint32_t *)(sp - STACK_PAINT_MARGIN_BYTES);
    while (word < limit)
        *word++ = STACK_PAINT;
    __atomic_store_n(&stack_painted[hart], 1, __ATOMIC_RELEASE);
}

unsigned rt_stack_peak_bytes(int hart)
{
    if (!__atomic_load_n(&stack_painted[hart], __ATOMIC_ACQUIRE))
        return 0;
    volatile uint32_t *bottom = stack_bottom(hart);
    unsigned words = (unsigned)(uintptr_t)__stack_bytes / 4u;
    unsigned untouched = 0;
    while (untouched < words && bottom[untouched] == STACK_PAINT)
        untouched++;
    return (words - untouched) * 4u;
}

static int overflowed_stack(void)
{
    for (int hart = 0; hart < RT_NUM_CORES; hart++) {
        if (!__atomic_load_n(&stack_painted[hart], __ATOMIC_ACQUIRE))
            continue;
        for (unsigned i = 0; i < STACK_CANARY_WORDS; i++) {
            if (stack_bottom(hart)[i] != STACK_PAINT)
                return hart;
        }
    }
    return -1;
}

/* ---- exit, traps, watchdog -------------------------------------------------------------------- */

void rt_exit(int code)
{
    volatile uint32_t *test = (volatile uint32_t *)TEST_DEVICE;
    if (code == RT_EXIT_OK || code == RT_EXIT_CHECK) {
        int hart = overflowed_stack();
        if (hart >= 0) {
            rt_puts("\nSTACK OVERFLOW hart=");
            rt_print_int(hart);
            rt_puts(" RT_STACK_BYTES=");
            rt_print_int(RT_STACK_BYTES);
            rt_putc('\n');
            code = RT_EXIT_STACK;
        }
    }
    FENCE_ALL();
    *test = code == 0 ? TEST_PASS : (((uint32_t)code & 0xffffu) << 16) | TEST_FAIL;
    for (;;)
        __asm__ volatile("wfi");
}

void _exit(int code)
{
    rt_exit(code);
}

/* Only the first hart to fail reports; later ones stop quietly so the line stays readable. */
static void claim_fatal_report(void)
{
    if (__atomic_exchange_n(&fatal_taken, 1u, __ATOMIC_ACQ_REL) != 0u) {
        CSR_CLEAR(mstatus, MSTATUS_MIE);
        for (;;)
            __asm__ volatile("wfi");
    }
}

static const char *exception_name(unsigned code)
{
    switch (code) {
    case 0: return "instruction_address_misaligned";
    case 1: return "instruction_access_fault";
    case 2: return "illegal_instruction";
    case 3: return "breakpoint";
    case 4: return "load_address_misaligned";
    case 5: return "load_access_fault";
    case 6: return "store_address_misaligned";
    case 7: return "store_access_fault";
    case 8: return "ecall_from_u_mode";
    case 9: return "ecall_from_s_mode";
    case 11: return "ecall_from_m_mode";
    case 12: return "instruction_page_fault";
    case 13: return "load_page_fault";
    case 15: return "store_page_fault";
    default: return "unknown_exception";
    }
}

void rt_trap_fatal(unsigned mcause, unsigned mepc, unsigned mtval, unsigned hart)
{
    claim_fatal_report();
    if (mcause == MCAUSE_MTI) {
        rt_puts("\nWATCHDOG expired after ");
        rt_print_int(RT_WATCHDOG_MS);
        rt_puts(" ms mepc=");
        rt_print_hex32(mepc);
        rt_puts(" hart=");
        rt_print_int((int)hart);
        rt_putc('\n');
        rt_exit(RT_EXIT_WATCHDOG);
    }
    rt_puts("\nTRAP mcause=");
    if (mcause & MCAUSE_INTERRUPT) {
        rt_puts("interrupt_");
        rt_print_int((int)(mcause & ~MCAUSE_INTERRUPT));
    } else {
        rt_puts(exception_name(mcause));
    }
    rt_puts(" (");
    rt_print_int((int)(mcause & ~MCAUSE_INTERRUPT));
    rt_puts(") mepc=");
    rt_print_hex32(mepc);
    rt_puts(" mtval=");
    rt_print_hex32(mtval);
    rt_puts(" hart=");
    rt_print_int((int)hart);
    rt_putc('\n');
    rt_exit(RT_EXIT_TRAP);
}

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
    claim_fatal_report();
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

static void init_thread_pointer(int hart)
{
    char *block = __tls_blocks_start + (unsigned)hart * (unsigned)(uintptr_t)__tls_block_bytes;
    memcpy(block, __tdata_start, (size_t)(uintptr_t)__tdata_size);
    memset(block + (uintptr_t)__tbss_offset, 0, (size_t)(uintptr_t)__tbss_size);
    __asm__ volatile("mv tp, %0" : : "r"(block) : "memory");
}

/* The engine waits for the release like the cores, but runs only runtime code that needs no TLS block
 * (tp stays 0) and has its own stack in crt0.S, outside the painted team stacks. */
void rt_hart_start(int hart)
{
    if (hart == DMA_HART) {
        CSR_SET(mie, MIE_MSIE);
        wait_for_change(&boot_released, 0u);
        dma_engine_loop();
    }
    paint_own_stack(hart);
    init_thread_pointer(hart);
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
