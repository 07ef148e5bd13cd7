/*
 * tinyodl start-up and trap entry. QEMU virt (-bios none -kernel): every hart starts at _start.
 * GVSoC pulp-open: the FC (mhartid 0x3e0) starts there alone and boots the cluster (below); then the
 * cluster cores start there too, core i with mhartid i, and take the same path as QEMU's harts. Each team hart gets its stack, trap stack (in mscratch), trap vector and FPU,
 * then continues in C (rt_hart_start). Hart RT_NUM_CORES is the DMA engine: it gets the stack and
 * trap stack defined below instead. Harts beyond it have no stack: they park, and hart 0 reports the
 * wrong hart count.
 */
#ifndef RT_NUM_CORES
#define RT_NUM_CORES 8
#endif
#ifndef RT_PLATFORM_GVSOC
#define RT_PLATFORM_GVSOC 0
#endif

#define MSTATUS_FS_INITIAL 0x2000
/* GVSoC pulp-open: instruction-cache enables (FC, cluster), the cluster control unit's boot addresses
 * (one word per core) and fetch-enable mask */
#define GVSOC_FC_ICACHE_ENABLE 0x1A108800
#define GVSOC_CLUSTER_ICACHE_ENABLE 0x10201400
#define GVSOC_CLUSTER_BOOT_ADDRESS 0x10200040
#define GVSOC_CLUSTER_FETCH_ENABLE 0x10200008
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
#if RT_PLATFORM_GVSOC
    srli t0, a0, 5
    li t1, 31
    beq t0, t1, .Lfc_boot
    andi a0, a0, 0x1f
    li t0, RT_NUM_CORES
    bltu a0, t0, .Lcore_stacks
    j .Lpark
#else
    li t0, RT_NUM_CORES
    bltu a0, t0, .Lcore_stacks
    bne a0, t0, .Lpark
    la sp, dma_hart_stack_top
    la t3, dma_hart_trap_stack_top
    j .Ltrap_stack_set
#endif

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

#if RT_PLATFORM_GVSOC
/* The FC needs no stack: it switches the instruction caches on (without them every fetch goes to L2),
 * gives the team's cores the boot address, starts them and parks. */
.Lfc_boot:
    li t1, -1
    li t0, GVSOC_FC_ICACHE_ENABLE
    sw t1, 0(t0)
    li t0, GVSOC_CLUSTER_ICACHE_ENABLE
    sw t1, 0(t0)
    li t1, (1 << RT_NUM_CORES) - 1
    la t2, _start
    li t0, GVSOC_CLUSTER_BOOT_ADDRESS
    li t3, RT_NUM_CORES
2:  sw t2, 0(t0)
    addi t0, t0, 4
    addi t3, t3, -1
    bnez t3, 2b
    li t0, GVSOC_CLUSTER_FETCH_ENABLE
    sw t1, 0(t0)
    j .Lpark
#endif
    .size _start, . - _start

/*
 * The DMA engine's stacks. In .data, not .bss: the engine starts on them while hart 0 still clears
 * .bss. Its code is the queue loop and memcpy, far below these sizes.
 */
#if !RT_PLATFORM_GVSOC
    .section .data.dma_hart_stacks, "aw", @progbits
    .balign 16
    .space DMA_HART_TRAP_STACK_BYTES
dma_hart_trap_stack_top:
    .space DMA_HART_STACK_BYTES
dma_hart_stack_top:
#endif

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
#if RT_PLATFORM_GVSOC
    j .Lfatal
#endif
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
#if RT_PLATFORM_GVSOC
    andi a3, a3, 0x1f
#endif
    call rt_trap_fatal
1:  wfi
    j 1b
    .size rt_trap_entry, . - rt_trap_entry
