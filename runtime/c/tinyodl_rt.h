/*
 * tinyodl on-target runtime: start-up, core team, barrier, perf regions, DMA model, output, exit.
 *
 * Target: a PULP-style cluster simulated by `qemu-system-riscv32 -machine virt`, one hart per core,
 * rv32imafc (+Zfh), ilp32f, picolibc, bare metal (`-bios none -kernel`).
 *
 * Compile-time settings (-D on the command line):
 *   RT_NUM_CORES    harts in the team (default 8). The machine has one hart more, the DMA engine
 *                   (hart RT_NUM_CORES): start-up checks that it has exactly RT_NUM_CORES + 1 harts
 *                   and otherwise exits with RT_EXIT_HART_COUNT.
 *   RT_DMA_*        DMA queue, checking mode and timing model: see the DMA section below.
 *   RT_STACK_BYTES  stack per hart in L2 (default 8192). Must match the linker script's stack_bytes.
 *   RT_WATCHDOG_MS  hart 0's watchdog in milliseconds of CLINT mtime (10 MHz; QEMU without -icount
 *                   advances it with host time). Default 60000; 0 disables it.
 *
 * Exit codes of a simulated run (the QEMU process exits with the same number):
 *   0 RT_EXIT_OK          success (main returned 0 or rt_exit(0))
 *   1 RT_EXIT_CHECK       a result check failed (used by generated code)
 *   2 RT_EXIT_RESERVED    reserved (the host uses 2 for bad input)
 *   3 RT_EXIT_TRAP        unexpected trap; one line "TRAP mcause=<name> (<num>) mepc=.. mtval=.. hart=N"
 *   4 RT_EXIT_WATCHDOG    watchdog expired; one line "WATCHDOG ..."
 *   5 RT_EXIT_HART_COUNT  the machine's hart count differs from RT_NUM_CORES + 1; one line "wrong hart count .."
 *   6 RT_EXIT_STACK       a hart's stack overflowed (found when the program ends with 0 or 1: the
 *                         bottom of every stack is painted at start-up); one line
 *                         "STACK OVERFLOW hart=N RT_STACK_BYTES=B"
 *
 * Threading model: hart 0 runs main(). The other cores sleep in `wfi` until rt_team_run() hands them
 * a function; hart RT_NUM_CORES runs the DMA engine. Waiting never spins: a waiter sleeps in `wfi` and
 * is woken by a CLINT software interrupt (msip) that the releasing hart raises. With 9 vCPUs on few
 * host cores a spinning waiter would steal host time from the harts doing the work. A hart may also
 * be woken for someone else's event (the DMA engine wakes every waiter it knows of), so every sleep
 * re-checks its own condition.
 */
#ifndef TINYODL_RT_H
#define TINYODL_RT_H

#include <stdint.h>

#ifndef RT_NUM_CORES
#define RT_NUM_CORES 8
#endif
/* 1: the program runs on GVSoC pulp-open (rt_platform.h), 0: on QEMU virt */
#ifndef RT_PLATFORM_GVSOC
#define RT_PLATFORM_GVSOC 0
#endif
#ifndef RT_STACK_BYTES
#define RT_STACK_BYTES 8192
#endif
#ifndef RT_WATCHDOG_MS
#define RT_WATCHDOG_MS 60000
#endif

#define RT_EXIT_OK 0
#define RT_EXIT_CHECK 1
#define RT_EXIT_RESERVED 2
#define RT_EXIT_TRAP 3
#define RT_EXIT_WATCHDOG 4
#define RT_EXIT_HART_COUNT 5
#define RT_EXIT_STACK 6

/* ---- cores and team --------------------------------------------------------------------------- */

/* This hart's index, 0 .. rt_num_cores()-1. */
int rt_core_id(void);
/* Harts in the team (RT_NUM_CORES; the machine has one more, the DMA engine). */
int rt_num_cores(void);

/* Called by hart 0 (from main): runs fn(arg) on every core, hart 0 included, and returns once all
 * of them have returned from fn. Not reentrant: fn must not call rt_team_run. */
void rt_team_run(void (*fn)(void *arg), void *arg);

/* Barrier among all cores of the team, callable any number of times inside a team function. */
void rt_barrier(void);

/* Splits n items over the cores: core c gets [*start, *end). Every core gets n / cores items and the
 * first n % cores cores one more, so the busiest core has at most one item more than the idlest and
 * cores beyond n get an empty range when n < cores. */
static inline void rt_chunk(int n, int *start, int *end)
{
    int cores = rt_num_cores();
    int core = rt_core_id();
    int base = n / cores;
    int leftover = n % cores;
    int first = core * base + (core < leftover ? core : leftover);
    *start = first;
    *end = first + base + (core < leftover ? 1 : 0);
}

/* ---- performance regions ---------------------------------------------------------------------- */

/* From here on, this hart's executed instructions count to region `id` (0 <= id < 2048; 0 is
 * "other", where every hart starts). Emits the architectural no-op HINT `slti x0, x0, id`, which the
 * tinyodl_insn QEMU plugin recognises; it costs one instruction and changes no state. The memory
 * clobber keeps loads and stores on their side of the marker. */
#if RT_PLATFORM_GVSOC
/* On GVSoC the core's own counters measure each region instead: RT_REGION reads them and adds what
 * they counted since the last marker to the region it closes. rt_perf_counts[core][region][field]
 * holds the sums (fields below); at a successful exit, core 0 prints one line
 * "PERF <core> <region> <field>..." per region that ran instructions. RT_PERF_REGIONS (the number of
 * region ids in use, default 2048) sizes the table; ids beyond it count to region 0. */
#ifndef RT_PERF_REGIONS
#define RT_PERF_REGIONS 2048
#endif
enum {
    RT_PERF_CYCLES,            /* cycles the core ran (not while clock-gated in a barrier) */
    RT_PERF_INSTRUCTIONS,      /* instructions executed */
    RT_PERF_LOAD_USE,          /* load-use stall cycles */
    RT_PERF_JUMP_REGISTER,     /* jump-register stall cycles */
    RT_PERF_ICACHE_MISS,       /* cycles waiting for instruction fetches */
    RT_PERF_BRANCH_TAKEN,      /* taken branches */
    /* The cores' "external" events (L2 load/store cycles, TCDM contention: PCER bits 14-16) read 0 in
     * pulp-open: the model leaves the counter ports that would feed them unbound. */
    RT_PERF_COUNTERS,          /* the hardware counters above; then what the runtime measures: */
    RT_PERF_DMA_WAIT = RT_PERF_COUNTERS, /* cycles spent in rt_dma_wait */
    RT_PERF_FIELDS
};
void rt_perf_region(int id);
#define RT_REGION(id)                                                                      \
    do {                                                                                   \
        _Static_assert((id) >= 0 && (id) < 2048, "RT_REGION id must be in [0, 2048)");     \
        rt_perf_region(id);                                                                \
    } while (0)
#else
#define RT_REGION(id)                                                                      \
    do {                                                                                   \
        _Static_assert((id) >= 0 && (id) < 2048, "RT_REGION id must be in [0, 2048)");     \
        __asm__ volatile("slti x0, x0, %0" : : "i"(id) : "memory");                        \
    } while (0)
#endif

/* ---- DMA engine ------------------------------------------------------------------------------ */

/* The cluster's DMA engine is hart RT_NUM_CORES, an agent of its own (PULP clusters are 8 cores + 1):
 * it takes transfers from a FIFO queue in L2 and copies them while the cores go on computing.
 * It never runs team work and never marks a perf region, so its instructions are counted in region 0
 * of its own hart only, never as a compute core's.
 *
 * Contract:
 *   - One core at a time issues (rt_dma_start_*), as on PULP where core 0 drives the DMA; any core may
 *     wait. Transfers complete in the order they were started.
 *   - Source and destination of one transfer must not overlap. Until the transfer is waited for, the
 *     issuer must not write its source nor anyone read or write its destination.
 *   - The returned ids start at 1 and increase by one per transfer (so 0 can stand for "no transfer":
 *     waiting for it returns at once). rt_dma_wait(id) returns once transfer `id` and all started
 *     before it are complete, and makes their data visible to the waiting core. Waiting for an id
 *     twice is fine; waiting for one that was never returned sleeps until the watchdog fires.
 *   - The queue holds RT_DMA_QUEUE_SLOTS transfers; issuing into a full queue sleeps until a slot frees.
 *   - Nobody spins: waiters, a blocked issuer and the idle engine sleep in `wfi` and are woken by CLINT
 *     software interrupts.
 *
 * Checking mode (-DRT_DMA_CHECK=1) makes a missing or misplaced wait fail deterministically:
 *   - rt_dma_start_* first fills the destination with the NaN pattern RT_DMA_POISON (every aligned
 *     word reads 0x7fc0dead, a quiet NaN; bytes follow their position in the word for unaligned and
 *     odd-sized rows), so reading it before the wait gives NaN, which fails a golden check;
 *   - the engine copies a transfer only once somebody waits for it or for a later one, so a source
 *     written after the start is what gets copied (also wrong, also deterministic);
 *   - consequence: a transfer must not be started into a buffer that an earlier, not yet waited-for
 *     transfer still reads (wait for the outgoing transfer before reusing its buffer), and when the
 *     queue is full the issuer itself waits for the oldest transfer;
 *   - the poisoning runs on the issuing core, so instruction counts of a checking build are not the
 *     performance figures.
 *
 * Modelled time (the copy itself takes QEMU time, not modelled time). Per transfer:
 *     cycles = SETUP + ceil(100 * bytes / BYTES_PER_100_CYCLES)
 * with the L2->L1 parameters when the destination lies in the L1 region (__l1_start ..
 * __l1_region_end) and the L1->L2 ones otherwise. Defaults: GVSoC's pulp-open cluster DMA (mchan),
 * measured from the issuing core's first register access to completion (see TOOLCHAIN.md): L2->L1
 * 21 + bytes/8 cycles, L1->L2 23 + bytes/7.76 (256-byte bursts). A 2-D transfer is modelled as one
 * transfer of rows * row_bytes (an assumption: real mchan splits rows into bursts of their own). */
#ifndef RT_DMA_QUEUE_SLOTS
#define RT_DMA_QUEUE_SLOTS 64
#endif
#ifndef RT_DMA_CHECK
#define RT_DMA_CHECK 0
#endif
#ifndef RT_DMA_L2_TO_L1_SETUP_CYCLES
#define RT_DMA_L2_TO_L1_SETUP_CYCLES 21u
#endif
#ifndef RT_DMA_L2_TO_L1_BYTES_PER_100_CYCLES
#define RT_DMA_L2_TO_L1_BYTES_PER_100_CYCLES 800u
#endif
#ifndef RT_DMA_L1_TO_L2_SETUP_CYCLES
#define RT_DMA_L1_TO_L2_SETUP_CYCLES 23u
#endif
#ifndef RT_DMA_L1_TO_L2_BYTES_PER_100_CYCLES
#define RT_DMA_L1_TO_L2_BYTES_PER_100_CYCLES 776u
#endif
#define RT_DMA_POISON 0x7fc0deadu

/* Updated by the DMA engine only, when a transfer completes: read them after rt_dma_wait_all(). */
extern volatile unsigned long long rt_dma_bytes_total;     /* bytes moved */
extern volatile unsigned long long rt_dma_transfers_total; /* number of transfers (1-D or 2-D) */
extern volatile unsigned long long rt_dma_cycles_total;    /* modelled cycles, formula above; on GVSoC the
                                                              cycles the cores spent in rt_dma_wait (measured) */

typedef unsigned rt_dma_id_t;

/* Starts copying `bytes` bytes from src to dst; returns the transfer's id. */
rt_dma_id_t rt_dma_start_1d(void *dst, const void *src, unsigned bytes);
/* Starts copying `rows` rows of `row_bytes` bytes, row r from src + r * src_stride to
 * dst + r * dst_stride; returns the transfer's id. */
rt_dma_id_t rt_dma_start_2d(void *dst, const void *src, unsigned row_bytes, unsigned rows,
                            unsigned dst_stride, unsigned src_stride);
/* Sleeps until transfer `id` and every transfer started before it are complete. */
void rt_dma_wait(rt_dma_id_t id);
/* Sleeps until every transfer started so far is complete. */
void rt_dma_wait_all(void);

/* Synchronous forms: start, then wait. */
void rt_dma_copy(void *dst, const void *src, unsigned bytes);
void rt_dma_copy_2d(void *dst, const void *src, unsigned row_bytes, unsigned rows,
                    unsigned dst_stride, unsigned src_stride);

/* ---- output and exit -------------------------------------------------------------------------- */

/* Characters go to the ns16550a UART (QEMU: -serial stdio). picolibc's stdout/stderr are wired to it,
 * so printf works, including %f (picolibc's default double-precision printf). Lines printed by
 * several harts at the same time may interleave. */
void rt_putc(char c);
void rt_puts(const char *s); /* no newline appended */
void rt_print_hex32(unsigned value); /* "0x%08x" */
void rt_print_int(int value);
void rt_print_float(float value); /* decimal, as "%.9g" (exact for a float32) with ".0" if integral */

/* Deepest use of hart `hart`'s stack so far, in bytes: every hart paints its stack at start-up and
 * this finds the lowest overwritten word (0 for a hart that has not started yet). */
unsigned rt_stack_peak_bytes(int hart);

/* Ends the simulation: QEMU exits with `code` (0 = success, see the exit codes above). Returning from
 * main is the same as rt_exit(main's return value). */
void rt_exit(int code) __attribute__((noreturn));

#endif /* TINYODL_RT_H */
