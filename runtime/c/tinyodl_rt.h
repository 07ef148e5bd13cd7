/*
 * tinyodl on-target runtime: start-up, core team, barrier, perf regions, DMA model, output, exit.
 *
 * Target: a PULP-style cluster simulated by `qemu-system-riscv32 -machine virt`, one hart per core,
 * rv32imafc (+Zfh), ilp32f, picolibc, bare metal (`-bios none -kernel`).
 *
 * Compile-time settings (-D on the command line):
 *   RT_NUM_CORES    harts in the team (default 8). Start-up checks that the machine has exactly this
 *                   many harts and otherwise exits with RT_EXIT_HART_COUNT.
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
 *   5 RT_EXIT_HART_COUNT  the machine's hart count differs from RT_NUM_CORES; one line "wrong hart count .."
 *   6 RT_EXIT_STACK       a hart's stack overflowed (found when the program ends with 0 or 1: the
 *                         bottom of every stack is painted at start-up); one line
 *                         "STACK OVERFLOW hart=N RT_STACK_BYTES=B"
 *
 * Threading model: hart 0 runs main(). The other harts sleep in `wfi` until rt_team_run() hands them
 * a function. Waiting never spins: a waiter sleeps in `wfi` and is woken by a CLINT software interrupt
 * (msip) that the releasing hart raises. With 8 vCPUs on few host cores a spinning waiter would steal
 * host time from the harts doing the work.
 */
#ifndef TINYODL_RT_H
#define TINYODL_RT_H

#include <stdint.h>

#ifndef RT_NUM_CORES
#define RT_NUM_CORES 8
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
/* Harts in the team (RT_NUM_CORES, checked against the machine at start-up). */
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
#define RT_REGION(id)                                                                      \
    do {                                                                                   \
        _Static_assert((id) >= 0 && (id) < 2048, "RT_REGION id must be in [0, 2048)");     \
        __asm__ volatile("slti x0, x0, %0" : : "i"(id) : "memory");                        \
    } while (0)

/* ---- DMA (modelled) --------------------------------------------------------------------------- */

/* A cluster DMA moves data between L2 and L1. QEMU has none, so the copy is done by the calling core
 * and its cost is modelled and accumulated instead:
 *     cycles(transfer) = RT_DMA_SETUP_CYCLES + ceil(bytes / RT_DMA_BYTES_PER_CYCLE)
 * RT_DMA_SETUP_CYCLES: programming the DMA's registers and the first beat's latency (PULP's cluster
 * DMA needs a few tens of cycles); RT_DMA_BYTES_PER_CYCLE: one 64-bit AXI beat per cycle.
 * The counters are plain (not atomic): as on PULP, one core at a time drives the DMA (typically core 0,
 * followed by rt_barrier() before others read the data). */
#define RT_DMA_SETUP_CYCLES 30u
#define RT_DMA_BYTES_PER_CYCLE 8u

extern volatile unsigned long long rt_dma_bytes_total;     /* bytes moved */
extern volatile unsigned long long rt_dma_transfers_total; /* number of transfers (1D or 2D) */
extern volatile unsigned long long rt_dma_cycles_total;    /* modelled cycles, formula above */

/* Copies `bytes` bytes from src to dst (regions must not overlap) and accounts one transfer. */
void rt_dma_copy(void *dst, const void *src, unsigned bytes);
/* Strided copy of `rows` rows of `row_bytes` bytes each; accounts one transfer of rows*row_bytes. */
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

/* Deepest use of hart `hart`'s stack so far, in bytes: every hart paints its stack at start-up and
 * this finds the lowest overwritten word (0 for a hart that has not started yet). */
unsigned rt_stack_peak_bytes(int hart);

/* Ends the simulation: QEMU exits with `code` (0 = success, see the exit codes above). Returning from
 * main is the same as rt_exit(main's return value). */
void rt_exit(int code) __attribute__((noreturn));

#endif /* TINYODL_RT_H */
