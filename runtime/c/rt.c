/*
 * tinyodl runtime, the part common to every platform: output, stacks, exit and trap reporting, the
 * copy and poison helpers of the DMA. The platform's own part (start-up, team, barrier, DMA, devices)
 * is rt_qemu.c or rt_gvsoc.c; rt_platform.h says what differs. See tinyodl_rt.h for the contract.
 */
#include "rt_platform.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Stacks are painted at start-up; an overwritten canary at the bottom means an overflow. */
#define STACK_PAINT 0x5afe57acu
#define STACK_CANARY_WORDS 16u
#define STACK_PAINT_MARGIN_BYTES 16u

extern char __tdata_start[], __tdata_size[], __tbss_size[], __tbss_offset[];
extern char __tls_blocks_start[], __tls_block_bytes[];
extern char __stacks_start[], __stack_bytes[];

void rt_trap_fatal(unsigned mcause, unsigned mepc, unsigned mtval, unsigned hart)
    __attribute__((noreturn));

/* The linker script checks these against its own num_cores and stack_bytes: a mismatch would give
 * harts stacks that the script never reserved. */
#define RT_STRINGIFY_(x) #x
#define RT_STRINGIFY(x) RT_STRINGIFY_(x)
_Static_assert(RT_NUM_CORES >= 1 && RT_NUM_CORES < 32, "RT_NUM_CORES must be in [1, 32): waiters are a bit mask");
_Static_assert(RT_DMA_QUEUE_SLOTS >= 1, "RT_DMA_QUEUE_SLOTS must be positive");

__asm__(".globl __rt_num_cores_compiled\n.set __rt_num_cores_compiled, " RT_STRINGIFY(RT_NUM_CORES) "\n"
        ".globl __rt_stack_bytes_compiled\n.set __rt_stack_bytes_compiled, " RT_STRINGIFY(RT_STACK_BYTES));

static volatile unsigned fatal_taken __attribute__((section(".data"))) = 0;
/* Harts start at their own pace; only a hart that painted its stack can have its canary checked. */
static volatile unsigned char stack_painted[RT_NUM_CORES] __attribute__((section(".data"))) = {0};

volatile unsigned long long rt_dma_bytes_total;
volatile unsigned long long rt_dma_transfers_total;
volatile unsigned long long rt_dma_cycles_total;

/* ---- DMA helpers -------------------------------------------------------------------------------- */

int rt_in_l1(const void *address)
{
    const unsigned char *at = address;
    return at >= (const unsigned char *)__l1_start && at < (const unsigned char *)__l1_region_end;
}

typedef uint32_t __attribute__((may_alias)) aliased_word;

/* picolibc's rv32 memcpy copies byte by byte (6 instructions a byte); copying words where source and
 * destination share their alignment makes a simulated transfer about 5x cheaper in QEMU time. The
 * attribute keeps GCC from turning the loops back into a memcpy call. */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
void rt_copy_row(unsigned char *dst, const unsigned char *src, unsigned bytes)
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


static unsigned char poison_byte(const unsigned char *address)
{
    return (unsigned char)(RT_DMA_POISON >> (8u * ((uintptr_t)address & 3u)));
}

/* Checking mode: every aligned word of a poisoned buffer reads RT_DMA_POISON, whatever the buffer's
 * alignment and size, so any float read from it is NaN. */
void rt_poison(unsigned char *dst, unsigned bytes)
{
    unsigned char *end = dst + bytes;
    for (; dst < end && ((uintptr_t)dst & 3u); dst++)
        *dst = poison_byte(dst);
    for (; end - dst >= 4; dst += 4)
        *(aliased_word *)dst = RT_DMA_POISON;
    for (; dst < end; dst++)
        *dst = poison_byte(dst);
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
    rt_platform_putc(c);
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
    RT_STORE_RELEASE(&stack_painted[hart], 1);
}

unsigned rt_stack_peak_bytes(int hart)
{
    if (!RT_LOAD_ACQUIRE(&stack_painted[hart]))
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
        if (!RT_LOAD_ACQUIRE(&stack_painted[hart]))
            continue;
        for (unsigned i = 0; i < STACK_CANARY_WORDS; i++) {
            if (stack_bottom(hart)[i] != STACK_PAINT)
                return hart;
        }
    }
    return -1;
}

/* ---- exit and traps --------------------------------------------------------------------------- */

void rt_exit(int code)
{
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
    rt_platform_exit(code);
}

void _exit(int code)
{
    rt_exit(code);
}

/* Only the first hart to fail reports; later ones stop quietly so the line stays readable. */
void rt_claim_fatal_report(void)
{
    if (RT_EXCHANGE(&fatal_taken, 1u) != 0u) {
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
    rt_claim_fatal_report();
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

/* ---- start-up --------------------------------------------------------------------------------- */

static void init_thread_pointer(int hart)
{
    char *block = __tls_blocks_start + (unsigned)hart * (unsigned)(uintptr_t)__tls_block_bytes;
    memcpy(block, __tdata_start, (size_t)(uintptr_t)__tdata_size);
    memset(block + (uintptr_t)__tbss_offset, 0, (size_t)(uintptr_t)__tbss_size);
    __asm__ volatile("mv tp, %0" : : "r"(block) : "memory");
}

void rt_core_prologue(int core)
{
    paint_own_stack(core);
    init_thread_pointer(core);
}
