/*
 * tinyodl start-up and trap entry. Every hart starts at _start with a0 = mhartid (QEMU virt with
 * -bios none -kernel). Each team hart gets its stack, trap stack (in mscratch), trap vector and FPU,
 * then continues in C (rt_hart_start). Hart RT_NUM_CORES is the DMA engine: it gets the stack and
 * trap stack defined below instead. Harts beyond it have no stack: they park, and hart 0 reports the
 * wrong hart count.
 */
#ifndef RT_NUM_CORES
#define RT_NUM_CORES 8
#endif

#define MSTATUS_FS_INITIAL 0x2000
#define MCAUSE_MSI 0x80000003
#define CLINT_MSIP 0x02000000
#define DMA_HART_STACK_BYTES 2048
#define DMA_HART_TRAP_STACK_BYTES 1024

    .section .text.init, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    .option push
    .option norelax
    la gp, __global_pointer$
    .option pop
    csrw mie, zero
    csrr a0, mhartid
    li t0, RT_NUM_CORES
    bltu a0, t0, .Lcore_stacks
    bne a0, t0, .Lpark
    la sp, dma_hart_stack_top
    la t3, dma_hart_trap_stack_top
    j .Ltrap_stack_set

.Lcore_stacks:
    /* sp = __stacks_start + (hart + 1) * __stack_bytes */
    addi t1, a0, 1
    lui t2, %hi(__stack_bytes)
    addi t2, t2, %lo(__stack_bytes)
    mul t2, t2, t1
    la sp, __stacks_start
    add sp, sp, t2

    /* mscratch = top of this hart's trap stack */
    lui t2, %hi(__trap_stack_bytes)
    addi t2, t2, %lo(__trap_stack_bytes)
    mul t2, t2, t1
    la t3, __trap_stacks_start
    add t3, t3, t2
.Ltrap_stack_set:
    csrw mscratch, t3

    la t0, rt_trap_entry
    csrw mtvec, t0
    li t0, MSTATUS_FS_INITIAL
    csrs mstatus, t0
    fscsr zero

    call rt_hart_start
.Lpark:
    csrw mie, zero
1:  wfi
    j 1b
    .size _start, . - _start

/*
 * The DMA engine's stacks. In .data, not .bss: the engine starts on them while hart 0 still clears
 * .bss. Its code is the queue loop and memcpy, far below these sizes.
 */
    .section .data.dma_hart_stacks, "aw", @progbits
    .balign 16
    .space DMA_HART_TRAP_STACK_BYTES
dma_hart_trap_stack_top:
    .space DMA_HART_STACK_BYTES
dma_hart_stack_top:

/*
 * Trap entry (direct mode). A machine software interrupt is a wake-up whose work the interrupted
 * code re-checks itself, so it only clears this hart's msip and returns. Anything else is fatal and
 * goes to rt_trap_fatal(mcause, mepc, mtval, hart) on the trap stack.
 */
    .text
    .globl rt_trap_entry
    .type rt_trap_entry, @function
    .align 2
rt_trap_entry:
    csrrw sp, mscratch, sp
    addi sp, sp, -16
    sw t0, 0(sp)
    sw t1, 4(sp)
    csrr t0, mcause
    li t1, MCAUSE_MSI
    bne t0, t1, .Lfatal
    csrr t0, mhartid
    slli t0, t0, 2
    li t1, CLINT_MSIP
    add t0, t0, t1
    sw zero, 0(t0)
    lw t0, 0(sp)
    lw t1, 4(sp)
    addi sp, sp, 16
    csrrw sp, mscratch, sp
    mret
.Lfatal:
    csrr a0, mcause
    csrr a1, mepc
    csrr a2, mtval
    csrr a3, mhartid
    call rt_trap_fatal
1:  wfi
    j 1b
    .size rt_trap_entry, . - rt_trap_entry
