/*
 * The runtime's internal header: what differs between the simulated platforms, in one place, and the
 * helpers that the common part (rt.c) shares with each platform's part (rt_qemu.c, rt_gvsoc.c).
 *
 * Platforms (-DRT_PLATFORM_GVSOC=1 selects GVSoC; QEMU is the default):
 *   QEMU   qemu-system-riscv32 -machine virt: one hart per core (mhartid = core), one more hart as the
 *          DMA engine, CLINT software interrupts to wake sleepers, ns16550a UART, SiFive test device
 *          to exit, RAM from 0x80000000.
 *   GVSoC  pulp-open: the fabric controller (FC, mhartid 0x3e0) boots the cluster whose cores have
 *          mhartid = core (cluster 0); the event unit's hardware barrier; the cluster DMA (mchan);
 *          instruction caches switched on by the FC; byte stores to 0x1A10F000 print; a write to
 *          0x1A1040A0 ends the simulation; shared L2 from 0x1C010000, cluster L1 from 0x10000000.
 */
#ifndef TINYODL_RT_PLATFORM_H
#define TINYODL_RT_PLATFORM_H

#include <stdint.h>

#include "tinyodl_rt.h"

#ifndef RT_PLATFORM_GVSOC
#define RT_PLATFORM_GVSOC 0
#endif

#if RT_PLATFORM_GVSOC
/* FC stdout and the end-of-simulation register (APB SoC control) */
#define GVSOC_STDOUT ((volatile uint8_t *)0x1A10F000u)
#define GVSOC_EXIT ((volatile uint32_t *)0x1A1040A0u)
#define GVSOC_EXIT_DONE 0x80000000u
/* Core-local aliases (every core reaches its own) of the event unit and of the cluster DMA */
#define GVSOC_EU_DEMUX 0x10204000u
#define GVSOC_EU_CORE_MASK_OR ((volatile uint32_t *)(GVSOC_EU_DEMUX + 0x08u))
/* barrier 0 through the demux: the model serves the barriers only there, not at the global address */
#define GVSOC_EU_BARRIER0_TRIGGER_MASK ((volatile uint32_t *)(GVSOC_EU_DEMUX + 0x200u + 0x00u))
#define GVSOC_EU_BARRIER0_TARGET_MASK ((volatile uint32_t *)(GVSOC_EU_DEMUX + 0x200u + 0x0Cu))
#define GVSOC_EU_BARRIER0_TRIGGER_WAIT_CLEAR ((volatile uint32_t *)(GVSOC_EU_DEMUX + 0x200u + 0x1Cu))
#define GVSOC_EU_BARRIER_EVENT 16u
#define GVSOC_MCHAN_CMD ((volatile uint32_t *)0x10204400u)
#define GVSOC_MCHAN_STATUS ((volatile uint32_t *)0x10204404u)
#else
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
#endif

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

/* GCC 12 emits AMOs for the atomic builtins even without the A extension (an atomic store becomes an
 * amoswap), and pulp-open's cores trap on them. There, volatile accesses with fences do: the cores are
 * in order and every access reaches memory in program order. */
#if RT_PLATFORM_GVSOC
#define RT_LOAD_ACQUIRE(address) ({ __typeof__(*(address)) value_ = *(address); FENCE_ALL(); value_; })
#define RT_STORE_RELEASE(address, value) do { FENCE_ALL(); *(address) = (value); } while (0)
#define RT_EXCHANGE(address, value) ({ __typeof__(*(address)) old_ = *(address); *(address) = (value); old_; })
#else
#define RT_LOAD_ACQUIRE(address) __atomic_load_n(address, __ATOMIC_ACQUIRE)
#define RT_STORE_RELEASE(address, value) __atomic_store_n(address, value, __ATOMIC_RELEASE)
#define RT_EXCHANGE(address, value) __atomic_exchange_n(address, value, __ATOMIC_ACQ_REL)
#endif

/* ---- linker-script symbols -------------------------------------------------------------------- */

extern char __bss_start[], __bss_end[];
extern char __l1_start[], __l1_region_end[];

void __libc_init_array(void);
int main(void);

/* ---- provided by rt.c ------------------------------------------------------------------------- */

/* Whether an address lies in the L1 region of the linker script. */
int rt_in_l1(const void *address);
/* Copies a row with word accesses where source and destination share their alignment. */
void rt_copy_row(unsigned char *dst, const unsigned char *src, unsigned bytes);
/* Checking mode: every aligned word of the buffer reads RT_DMA_POISON. */
void rt_poison(unsigned char *dst, unsigned bytes);
/* Start-up of a team core, before anything else in C: paints its stack, gives it its TLS block. */
void rt_core_prologue(int core);
/* Only the first hart to fail reports; the others stop quietly. */
void rt_claim_fatal_report(void);

/* ---- provided by the platform's file (rt_qemu.c or rt_gvsoc.c) -------------------------------- */

void rt_platform_putc(char c);
/* Ends the simulation with `code` (the stack check has been done). */
void rt_platform_exit(int code) __attribute__((noreturn));

#endif /* TINYODL_RT_PLATFORM_H */
