/*
 * tinyodl_insn: QEMU TCG plugin (plugin API v1, QEMU 7.2) counting executed instructions and memory
 * accesses per hart and per perf region, plus a cycle estimate from a simple in-order core model that
 * knows where each load and store lands (L1 or L2).
 *
 *   qemu-system-riscv32 ... -plugin file=tinyodl_insn.so,out=counts.json[,l1=START:END]...
 *       [,load_use=N][,l2_load=N][,l2_store=N][,l2_load_use=N]
 *
 * Arguments (numbers in C syntax, 0x... for hex):
 *   out=PATH        where the counts go (required);
 *   l1=START:END    an address range [START, END) whose accesses count as L1; up to MAX_L1_RANGES of
 *                   them. The host passes the linker's .l1 region and the per-hart stacks (with the
 *                   thread-local blocks and trap stacks next to them): PULP runtimes keep core stacks
 *                   in the TCDM, while our linker script puts them in L2 only because QEMU has one RAM.
 *                   Every other address (L2, off-chip data, peripherals) counts as L2;
 *   load_use=N      extra cycles when the instruction after an L1 load uses its value (default 1);
 *   l2_load=N, l2_store=N   cycles an L2 load / store blocks the core, L1's cycle included (default 15);
 *   l2_load_use=N   extra cycles when the instruction after an L2 load uses its value (default 1).
 * The defaults are the GVSoC pulp-open figures (see ir/target.py, which the host passes explicitly).
 *
 * Regions: the guest marks "from here on count to region id" with the HINT `slti x0, x0, id`
 * (0 <= id < 2048, see RT_REGION in runtime/c/tinyodl_rt.h). The marker itself counts to the new
 * region. Every hart starts in region 0.
 *
 * How: at translation time each translation block (TB) is decoded once into segments split at
 * markers, each with its instruction count and modelled cycles. At execution a callback adds the
 * segments to the running hart's current region. vCPUs run in parallel threads (MTTCG); each writes
 * only its own per-vCPU arrays, and TB descriptions are read-only once built.
 *
 * Memory: a callback on every load and store (atomics count as loads) adds one to the running hart's
 * l1_accesses or l2_accesses and, for L2, the extra cycles over an L1 access: l2_load - 1 (plus
 * l2_load_use - load_use when the next instruction in the block uses the value) or l2_store - 1. Which
 * extra applies is decided once per instruction at translation; the callback only compares the address
 * with the L1 ranges, without branches. Instruction fetches are not charged (warm instruction cache).
 *
 * Output at exit (only regions that were entered):
 *   {"cycle_model": {...}, "l1_ranges": [[START, END], ...],
 *    "harts": [{"hart": 0, "regions": {"<id>": {"insns": N, "cycles": C, "l1_accesses": A,
 *                                               "l2_accesses": B}}}]}
 *
 * Cycle model: a CV32E40P-class 4-stage in-order core (RI5CY, as in PULP clusters), following the
 * "Pipeline Details" chapter of the CV32E40P user manual, with single-cycle L1 (TCDM without bank
 * conflicts, no instruction-cache misses) and the L2 extras above. One cycle per instruction plus:
 *   - load-use: the instruction right after a load that reads the load's result waits load_use;
 *   - jumps (jal, jalr) take JUMP_CYCLES; a jalr whose address register was written by the
 *     instruction just before it waits JALR_DEP_STALL more;
 *   - a conditional branch that is taken takes BRANCH_TAKEN_CYCLES (decided at run time: the branch
 *     was taken when the next executed block does not start at the fall-through address);
 *   - mulh/mulhsu/mulhu take MULH_CYCLES, div/divu/rem/remu DIV_CYCLES (the real divider needs
 *     3..35 cycles depending on the divisor's leading zeros; DIV_CYCLES is a small divisor's);
 *   - FPU results are ready FPU_ADDMUL_LAT (fadd/fsub/fmul/fmadd family) or FPU_OTHERS_LAT
 *     (compare, convert, move, sign-inject, min/max, classify) cycles late; fdiv/fsqrt occupy the FPU
 *     for FPU_DIVSQRT_CYCLES and later FPU instructions or users of the result wait for it;
 *   - accesses to the CSRs the manual lists as slow (mstatus, mtvec, mepc, mcause, machine counters
 *     and events, debug CSRs) take CSR_SLOW_CYCLES.
 * Hazards are tracked inside a TB (a scoreboard of register ready times); at a TB boundary all
 * results are assumed ready. Misaligned fetch targets and misaligned accesses are not modelled.
 *
 * wfi: QEMU does not end a TB at wfi, and a hart that sleeps on it skips the rest of the block and
 * later resumes at the next pc in a new block. The instructions after a wfi are therefore credited
 * only once the next block shows whether they ran (it does not start right after the wfi). A block
 * that faults in the middle (a fatal trap) is counted whole.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu-plugin.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

/* Cycle-model parameters. The values come from the CV32E40P manual's table of cycles per instruction
 * type; the FPU latencies are configuration parameters of the core (FPU_ADDMUL_LAT, FPU_OTHERS_LAT),
 * and 1 is assumed for both, a pipelined FPU as clusters running at a few hundred MHz use. */
#define JUMP_CYCLES 2         /* jal/jalr: taken in ID, the fetch stage is flushed */
#define JALR_DEP_STALL 1      /* jalr right after the instruction computing its address */
#define BRANCH_TAKEN_CYCLES 3 /* taken in EX, IF and ID are flushed; not taken: 1 */
#define MULH_CYCLES 5         /* upper-word multiplications; mul itself is 1 */
#define DIV_CYCLES 32         /* 3 + leading zeros of the divisor (3..35); 32 for divisors 4..7 */
#define FPU_ADDMUL_LAT 1      /* extra cycles before an add/mul/fma result can be used */
#define FPU_OTHERS_LAT 1      /* same for compare/convert/move/sign-inject/min/max/classify */
#define FPU_DIVSQRT_CYCLES 19 /* fdiv.s/fsqrt.s: worst case when the result is used right away */
#define CSR_SLOW_CYCLES 4     /* mstatus, mtvec, mepc, mcause, counters, debug CSRs; others: 1 */

#define NUM_REGIONS 2048
#define MAX_L1_RANGES 4
/* a memory instruction's callback data: its extra cycles when the access goes to L2 in the low bits,
 * above them 1 + the region a marker earlier in its block selected (0: the region at the block's start) */
#define EXTRA_BITS 16
#define EXTRA_MASK ((1u << EXTRA_BITS) - 1)
#define WFI_ENCODING 0x10500073u
#define NO_REG (-1)
#define FP_REG(n) (32 + (n))

enum insn_class {
    CLASS_ALU,
    CLASS_LOAD,
    CLASS_STORE,
    CLASS_BRANCH,
    CLASS_JAL,
    CLASS_JALR,
    CLASS_MULH,
    CLASS_DIV,
    CLASS_FPU_ADDMUL,
    CLASS_FPU_OTHER,
    CLASS_FPU_DIVSQRT,
    CLASS_CSR_SLOW,
};

/* What the cycle model needs to know about one instruction. Registers: 0..31 integer (x0 is
 * reported as NO_REG), 32..63 floating point. */
struct decoded {
    enum insn_class cls;
    int rd;
    int rs[3];
    bool is_wfi;
    bool is_marker;
    int marker_region;
};

struct segment {
    int region; /* region entered at the segment's start; -1 for "keep the current one" */
    uint32_t insns;
    uint32_t cycles;
};

struct tb_info {
    uint64_t start_pc;
    uint64_t fallthrough_pc; /* pc after the last instruction */
    bool ends_in_branch;     /* the last instruction is a conditional branch */
    uint32_t tail_segment;   /* first segment after a wfi (0: no wfi with instructions after it) */
    uint64_t tail_pc;        /* pc after that wfi */
    uint32_t n_segments;
    struct segment segments[];
};

struct region_count {
    uint64_t insns;
    uint64_t cycles;
    uint64_t l1_accesses;
    uint64_t l2_accesses;
};

struct vcpu_state {
    int region;
    int entry_region;                    /* region when the running block started */
    bool pending_branch;                 /* the last block ended in a conditional branch */
    uint64_t pending_fallthrough;        /* ... whose not-taken successor is here */
    const struct tb_info *pending_tail;  /* the last block's wfi tail, not yet known to have run */
    struct region_count *counts; /* NUM_REGIONS entries */
};

static struct vcpu_state *vcpus;
static unsigned n_vcpus;
static char *out_path;

/* memory model; unused L1 ranges have size 0 and match no address */
static uint64_t l1_start[MAX_L1_RANGES];
static uint64_t l1_size[MAX_L1_RANGES];
static unsigned n_l1_ranges;
static unsigned load_use_stall = 1;
static unsigned l2_load_cycles = 15;
static unsigned l2_store_cycles = 15;
static unsigned l2_load_use_stall = 1;

/* ---- decoding ---------------------------------------------------------------------------------- */

static int int_reg(uint32_t number)
{
    return number == 0 ? NO_REG : (int)number;
}

static struct decoded plain(enum insn_class cls, int rd, int rs1, int rs2)
{
    struct decoded d = {.cls = cls, .rd = rd, .rs = {rs1, rs2, NO_REG}, .is_wfi = false, .is_marker = false};
    return d;
}

static bool is_slow_csr(uint32_t csr)
{
    switch (csr) {
    case 0x300: /* mstatus */
    case 0x305: /* mtvec */
    case 0x341: /* mepc */
    case 0x342: /* mcause */
    case 0x320: /* mcountinhibit */
    case 0x7b0: /* dcsr */
    case 0x7b1: /* dpc */
    case 0x7b2: /* dscratch0 */
    case 0x7b3: /* dscratch1 */
        return true;
    default:
        /* mcycle/minstret/mhpmcounter* and their high halves, mhpmevent* */
        return (csr >= 0xb00 && csr <= 0xb1f) || (csr >= 0xb80 && csr <= 0xb9f) ||
               (csr >= 0x323 && csr <= 0x33f);
    }
}

static struct decoded decode_fp_op(uint32_t insn, uint32_t rd, uint32_t rs1, uint32_t rs2)
{
    uint32_t funct5 = insn >> 27;
    switch (funct5) {
    case 0x00: /* fadd */
    case 0x01: /* fsub */
    case 0x02: /* fmul */
        return plain(CLASS_FPU_ADDMUL, FP_REG(rd), FP_REG(rs1), FP_REG(rs2));
    case 0x03: /* fdiv */
        return plain(CLASS_FPU_DIVSQRT, FP_REG(rd), FP_REG(rs1), FP_REG(rs2));
    case 0x0b: /* fsqrt */
        return plain(CLASS_FPU_DIVSQRT, FP_REG(rd), FP_REG(rs1), NO_REG);
    case 0x14: /* fcmp: integer result */
        return plain(CLASS_FPU_OTHER, int_reg(rd), FP_REG(rs1), FP_REG(rs2));
    case 0x18: /* fcvt.w[u].s: integer result */
    case 0x1c: /* fmv.x.w, fclass: integer result */
        return plain(CLASS_FPU_OTHER, int_reg(rd), FP_REG(rs1), NO_REG);
    case 0x1a: /* fcvt.s.w[u]: integer source */
    case 0x1e: /* fmv.w.x: integer source */
        return plain(CLASS_FPU_OTHER, FP_REG(rd), int_reg(rs1), NO_REG);
    case 0x08: /* fcvt between float formats */
        return plain(CLASS_FPU_OTHER, FP_REG(rd), FP_REG(rs1), NO_REG);
    default: /* fsgnj, fmin/fmax */
        return plain(CLASS_FPU_OTHER, FP_REG(rd), FP_REG(rs1), FP_REG(rs2));
    }
}

static struct decoded decode32(uint32_t insn)
{
    uint32_t opcode = insn & 0x7f;
    uint32_t rd = (insn >> 7) & 0x1f;
    uint32_t funct3 = (insn >> 12) & 0x7;
    uint32_t rs1 = (insn >> 15) & 0x1f;
    uint32_t rs2 = (insn >> 20) & 0x1f;
    uint32_t funct7 = insn >> 25;

    switch (opcode) {
    case 0x13: /* OP-IMM */
        if ((insn & 0x000fffff) == 0x00002013) {
            struct decoded d = plain(CLASS_ALU, NO_REG, NO_REG, NO_REG);
            int32_t imm = (int32_t)insn >> 20;
            if (imm >= 0) {
                d.is_marker = true;
                d.marker_region = imm;
            }
            return d;
        }
        return plain(CLASS_ALU, int_reg(rd), int_reg(rs1), NO_REG);
    case 0x37: /* lui */
    case 0x17: /* auipc */
        return plain(CLASS_ALU, int_reg(rd), NO_REG, NO_REG);
    case 0x33: /* OP, M extension when funct7 == 1 */
        if (funct7 == 0x01 && funct3 >= 1 && funct3 <= 3)
            return plain(CLASS_MULH, int_reg(rd), int_reg(rs1), int_reg(rs2));
        if (funct7 == 0x01 && funct3 >= 4)
            return plain(CLASS_DIV, int_reg(rd), int_reg(rs1), int_reg(rs2));
        return plain(CLASS_ALU, int_reg(rd), int_reg(rs1), int_reg(rs2));
    case 0x03: /* loads */
        return plain(CLASS_LOAD, int_reg(rd), int_reg(rs1), NO_REG);
    case 0x07: /* flw, flh */
        return plain(CLASS_LOAD, FP_REG(rd), int_reg(rs1), NO_REG);
    case 0x23: /* stores */
        return plain(CLASS_STORE, NO_REG, int_reg(rs1), int_reg(rs2));
    case 0x27: /* fsw, fsh */
        return plain(CLASS_STORE, NO_REG, int_reg(rs1), FP_REG(rs2));
    case 0x63: /* conditional branches */
        return plain(CLASS_BRANCH, NO_REG, int_reg(rs1), int_reg(rs2));
    case 0x6f: /* jal */
        return plain(CLASS_JAL, int_reg(rd), NO_REG, NO_REG);
    case 0x67: /* jalr */
        return plain(CLASS_JALR, int_reg(rd), int_reg(rs1), NO_REG);
    case 0x2f: /* atomics: result like a load */
        return plain(CLASS_LOAD, int_reg(rd), int_reg(rs1), int_reg(rs2));
    case 0x43: /* fmadd */
    case 0x47: /* fmsub */
    case 0x4b: /* fnmsub */
    case 0x4f: /* fnmadd */
    {
        struct decoded d = plain(CLASS_FPU_ADDMUL, FP_REG(rd), FP_REG(rs1), FP_REG(rs2));
        d.rs[2] = FP_REG(insn >> 27);
        return d;
    }
    case 0x53:
        return decode_fp_op(insn, rd, rs1, rs2);
    case 0x73: /* SYSTEM */
        if (funct3 != 0) {
            enum insn_class cls = is_slow_csr(insn >> 20) ? CLASS_CSR_SLOW : CLASS_ALU;
            return plain(cls, int_reg(rd), funct3 < 4 ? int_reg(rs1) : NO_REG, NO_REG);
        }
        {
            struct decoded d = plain(CLASS_ALU, NO_REG, NO_REG, NO_REG);
            d.is_wfi = insn == WFI_ENCODING;
            return d;
        }
    default: /* fence and anything unknown: one cycle */
        return plain(CLASS_ALU, NO_REG, NO_REG, NO_REG);
    }
}

/* Compressed registers x8..x15 / f8..f15. */
static uint32_t creg(uint32_t field)
{
    return 8 + (field & 0x7);
}

static struct decoded decode16(uint16_t insn)
{
    uint32_t quadrant = insn & 0x3;
    uint32_t funct3 = (insn >> 13) & 0x7;
    uint32_t rd_full = (insn >> 7) & 0x1f;
    uint32_t rs2_full = (insn >> 2) & 0x1f;
    uint32_t rd_short = creg(insn >> 2);  /* rd' / rs2' at bits 4:2 */
    uint32_t rs1_short = creg(insn >> 7); /* rs1' / rd' at bits 9:7 */

    if (quadrant == 0) {
        switch (funct3) {
        case 0: /* c.addi4spn */
            return plain(CLASS_ALU, int_reg(rd_short), 2, NO_REG);
        case 2: /* c.lw */
            return plain(CLASS_LOAD, int_reg(rd_short), int_reg(rs1_short), NO_REG);
        case 3: /* c.flw */
            return plain(CLASS_LOAD, FP_REG(rd_short), int_reg(rs1_short), NO_REG);
        case 6: /* c.sw */
            return plain(CLASS_STORE, NO_REG, int_reg(rs1_short), int_reg(rd_short));
        case 7: /* c.fsw */
            return plain(CLASS_STORE, NO_REG, int_reg(rs1_short), FP_REG(rd_short));
        default:
            return plain(CLASS_ALU, NO_REG, NO_REG, NO_REG);
        }
    }
    if (quadrant == 1) {
        switch (funct3) {
        case 0: /* c.addi / c.nop */
            return plain(CLASS_ALU, int_reg(rd_full), int_reg(rd_full), NO_REG);
        case 1: /* c.jal (rv32) */
            return plain(CLASS_JAL, 1, NO_REG, NO_REG);
        case 2: /* c.li */
            return plain(CLASS_ALU, int_reg(rd_full), NO_REG, NO_REG);
        case 3: /* c.addi16sp / c.lui */
            return plain(CLASS_ALU, int_reg(rd_full), rd_full == 2 ? 2 : NO_REG, NO_REG);
        case 4: {
            uint32_t kind = (insn >> 10) & 0x3;
            if (kind == 3) /* c.sub/xor/or/and */
                return plain(CLASS_ALU, int_reg(rs1_short), int_reg(rs1_short), int_reg(rd_short));
            return plain(CLASS_ALU, int_reg(rs1_short), int_reg(rs1_short), NO_REG);
        }
        case 5: /* c.j */
            return plain(CLASS_JAL, NO_REG, NO_REG, NO_REG);
        default: /* c.beqz, c.bnez */
            return plain(CLASS_BRANCH, NO_REG, int_reg(rs1_short), NO_REG);
        }
    }
    if (quadrant == 2) {
        switch (funct3) {
        case 0: /* c.slli */
            return plain(CLASS_ALU, int_reg(rd_full), int_reg(rd_full), NO_REG);
        case 2: /* c.lwsp */
            return plain(CLASS_LOAD, int_reg(rd_full), 2, NO_REG);
        case 3: /* c.flwsp */
            return plain(CLASS_LOAD, FP_REG(rd_full), 2, NO_REG);
        case 4: {
            bool bit12 = (insn >> 12) & 1;
            if (!bit12 && rs2_full == 0) /* c.jr */
                return plain(CLASS_JALR, NO_REG, int_reg(rd_full), NO_REG);
            if (!bit12) /* c.mv */
                return plain(CLASS_ALU, int_reg(rd_full), int_reg(rs2_full), NO_REG);
            if (rd_full == 0) /* c.ebreak */
                return plain(CLASS_ALU, NO_REG, NO_REG, NO_REG);
            if (rs2_full == 0) /* c.jalr */
                return plain(CLASS_JALR, 1, int_reg(rd_full), NO_REG);
            /* c.add */
            return plain(CLASS_ALU, int_reg(rd_full), int_reg(rd_full), int_reg(rs2_full));
        }
        case 6: /* c.swsp */
            return plain(CLASS_STORE, NO_REG, 2, int_reg(rs2_full));
        case 7: /* c.fswsp */
            return plain(CLASS_STORE, NO_REG, 2, FP_REG(rs2_full));
        default:
            return plain(CLASS_ALU, NO_REG, NO_REG, NO_REG);
        }
    }
    return plain(CLASS_ALU, NO_REG, NO_REG, NO_REG);
}

/* ---- cycle model -------------------------------------------------------------------------------- */

struct scoreboard {
    uint64_t now;            /* issue cycle of the next instruction */
    uint64_t ready[64];      /* cycle from which each register's value can be used */
    uint64_t fpu_free;       /* cycle from which the FPU accepts a new instruction */
    int last_rd;             /* destination of the previous instruction */
};

static bool is_fpu(enum insn_class cls)
{
    return cls == CLASS_FPU_ADDMUL || cls == CLASS_FPU_OTHER || cls == CLASS_FPU_DIVSQRT;
}

/* Issues one instruction and returns the cycles it added; a taken branch's extra cycles are added at
 * run time. */
static uint32_t issue(struct scoreboard *board, const struct decoded *d)
{
    uint64_t start = board->now;
    uint64_t issue_at = start;
    for (int i = 0; i < 3; i++) {
        if (d->rs[i] != NO_REG && board->ready[d->rs[i]] > issue_at)
            issue_at = board->ready[d->rs[i]];
    }
    if (is_fpu(d->cls) && board->fpu_free > issue_at)
        issue_at = board->fpu_free;
    if (d->cls == CLASS_JALR && d->rs[0] != NO_REG && d->rs[0] == board->last_rd)
        issue_at += JALR_DEP_STALL;

    uint64_t occupancy = 1;
    uint64_t latency = 1;
    switch (d->cls) {
    case CLASS_LOAD: latency = 1 + load_use_stall; break;
    case CLASS_JAL:
    case CLASS_JALR: occupancy = JUMP_CYCLES; break;
    case CLASS_MULH: occupancy = latency = MULH_CYCLES; break;
    case CLASS_DIV: occupancy = latency = DIV_CYCLES; break;
    case CLASS_CSR_SLOW: occupancy = latency = CSR_SLOW_CYCLES; break;
    case CLASS_FPU_ADDMUL: latency = 1 + FPU_ADDMUL_LAT; board->fpu_free = issue_at + 1; break;
    case CLASS_FPU_OTHER: latency = 1 + FPU_OTHERS_LAT; board->fpu_free = issue_at + 1; break;
    case CLASS_FPU_DIVSQRT:
        latency = FPU_DIVSQRT_CYCLES;
        board->fpu_free = issue_at + FPU_DIVSQRT_CYCLES;
        break;
    default: break;
    }
    if (d->rd != NO_REG)
        board->ready[d->rd] = issue_at + latency;
    board->last_rd = d->rd;
    board->now = issue_at + occupancy;
    return (uint32_t)(board->now - start);
}

/* ---- translation and execution ------------------------------------------------------------------ */

static void credit(struct vcpu_state *vcpu, const struct tb_info *tb, uint32_t from, uint32_t to)
{
    for (uint32_t i = from; i < to; i++) {
        const struct segment *segment = &tb->segments[i];
        if (segment->region >= 0)
            vcpu->region = segment->region;
        vcpu->counts[vcpu->region].insns += segment->insns;
        vcpu->counts[vcpu->region].cycles += segment->cycles;
    }
}

static void vcpu_tb_exec(unsigned int vcpu_index, void *udata)
{
    const struct tb_info *tb = udata;
    if (vcpu_index >= n_vcpus)
        return;
    struct vcpu_state *vcpu = &vcpus[vcpu_index];
    const struct tb_info *previous = vcpu->pending_tail;
    if (previous != NULL) {
        vcpu->pending_tail = NULL;
        if (tb->start_pc != previous->tail_pc) {
            credit(vcpu, previous, previous->tail_segment, previous->n_segments);
            vcpu->pending_branch = previous->ends_in_branch;
            vcpu->pending_fallthrough = previous->fallthrough_pc;
        }
    }
    if (vcpu->pending_branch) {
        if (tb->start_pc != vcpu->pending_fallthrough)
            vcpu->counts[vcpu->region].cycles += BRANCH_TAKEN_CYCLES - 1;
        vcpu->pending_branch = false;
    }
    vcpu->entry_region = vcpu->region;
    if (tb->tail_segment != 0) {
        credit(vcpu, tb, 0, tb->tail_segment);
        vcpu->pending_tail = tb;
    } else {
        credit(vcpu, tb, 0, tb->n_segments);
        vcpu->pending_branch = tb->ends_in_branch;
        vcpu->pending_fallthrough = tb->fallthrough_pc;
    }
}

static void vcpu_mem(unsigned int vcpu_index, qemu_plugin_meminfo_t info, uint64_t vaddr, void *udata)
{
    (void)info;
    if (vcpu_index >= n_vcpus)
        return;
    struct vcpu_state *vcpu = &vcpus[vcpu_index];
    uintptr_t packed = (uintptr_t)udata;
    int marked_region = (int)(packed >> EXTRA_BITS) - 1;
    struct region_count *count = &vcpu->counts[marked_region >= 0 ? marked_region : vcpu->entry_region];
    uint64_t in_l1 = 0;
    for (unsigned i = 0; i < MAX_L1_RANGES; i++)
        in_l1 |= (uint64_t)(vaddr - l1_start[i] < l1_size[i]);
    count->l1_accesses += in_l1;
    count->l2_accesses += 1 - in_l1;
    count->cycles += (1 - in_l1) * (packed & EXTRA_MASK);
}

/* Extra cycles of instruction `d` over an L1 access when it goes to L2; `next` is the instruction after
 * it in the block (NULL at the block's end, where the block model assumes results are ready). */
static unsigned l2_extra_cycles(const struct decoded *d, const struct decoded *next)
{
    if (d->cls == CLASS_STORE)
        return l2_store_cycles - 1;
    unsigned extra = l2_load_cycles - 1;
    bool used_next = false;
    for (int i = 0; next != NULL && d->rd != NO_REG && i < 3; i++)
        used_next |= next->rs[i] == d->rd;
    if (used_next)
        extra += l2_load_use_stall - load_use_stall;
    return extra;
}

static struct decoded decode_at(struct qemu_plugin_insn *insn)
{
    const uint8_t *bytes = qemu_plugin_insn_data(insn);
    if (qemu_plugin_insn_size(insn) == 2)
        return decode16((uint16_t)(bytes[0] | bytes[1] << 8));
    return decode32((uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 | (uint32_t)bytes[2] << 16 |
                    (uint32_t)bytes[3] << 24);
}

static void vcpu_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    if (n == 0)
        return;
    size_t n_markers = 0;
    for (size_t i = 0; i < n; i++)
        n_markers += decode_at(qemu_plugin_tb_get_insn(tb, i)).is_marker;

    /* one segment to start, one per marker, one for a wfi tail */
    struct tb_info *info = calloc(1, sizeof *info + (n_markers + 2) * sizeof(struct segment));
    if (info == NULL)
        abort();
    struct qemu_plugin_insn *last = qemu_plugin_tb_get_insn(tb, n - 1);
    info->start_pc = qemu_plugin_tb_vaddr(tb);
    info->fallthrough_pc = qemu_plugin_insn_vaddr(last) + qemu_plugin_insn_size(last);
    info->n_segments = 1;
    info->segments[0].region = -1;

    struct scoreboard board;
    memset(&board, 0, sizeof board);
    board.last_rd = NO_REG;
    bool after_wfi = false;
    int marked_region = -1;
    struct decoded d = decode_at(qemu_plugin_tb_get_insn(tb, 0));
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        bool has_next = i + 1 < n;
        struct decoded next = has_next ? decode_at(qemu_plugin_tb_get_insn(tb, i + 1)) : d;
        struct segment *current = &info->segments[info->n_segments - 1];
        if (after_wfi) {
            /* QEMU does not end a block at wfi: when the hart sleeps, the rest of the block is
             * skipped and re-executed from the pc after the wfi once it wakes up */
            after_wfi = false;
            info->tail_segment = info->n_segments;
            current = &info->segments[info->n_segments++];
            current->region = -1;
        }
        if (d.is_marker) {
            if (current->insns > 0) {
                current = &info->segments[info->n_segments++];
            }
            current->region = d.marker_region;
            marked_region = d.marker_region;
        }
        if (d.cls == CLASS_LOAD || d.cls == CLASS_STORE) {
            uintptr_t packed = (uintptr_t)(marked_region + 1) << EXTRA_BITS |
                               (l2_extra_cycles(&d, has_next ? &next : NULL) & EXTRA_MASK);
            qemu_plugin_register_vcpu_mem_cb(insn, vcpu_mem, QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_RW,
                                             (void *)packed);
        }
        current->insns += 1;
        current->cycles += issue(&board, &d);
        info->ends_in_branch = d.cls == CLASS_BRANCH;
        if (d.is_wfi && info->tail_segment == 0) {
            after_wfi = true;
            info->tail_pc = qemu_plugin_insn_vaddr(insn) + qemu_plugin_insn_size(insn);
        }
        d = next;
    }
    qemu_plugin_register_vcpu_tb_exec_cb(tb, vcpu_tb_exec, QEMU_PLUGIN_CB_NO_REGS, info);
}

/* ---- output -------------------------------------------------------------------------------------- */

static void write_counts(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    FILE *out = fopen(out_path, "w");
    if (out == NULL) {
        fprintf(stderr, "tinyodl_insn: cannot write %s\n", out_path);
        return;
    }
    fprintf(out,
            "{\"cycle_model\": {\"load_use_stall\": %u, \"jump_cycles\": %d, \"jalr_dep_stall\": %d, "
            "\"branch_taken_cycles\": %d, \"mulh_cycles\": %d, \"div_cycles\": %d, "
            "\"fpu_addmul_lat\": %d, \"fpu_others_lat\": %d, \"fpu_divsqrt_cycles\": %d, "
            "\"csr_slow_cycles\": %d, \"l2_load_cycles\": %u, \"l2_store_cycles\": %u, "
            "\"l2_load_use_stall\": %u},\n \"l1_ranges\": [",
            load_use_stall, JUMP_CYCLES, JALR_DEP_STALL, BRANCH_TAKEN_CYCLES, MULH_CYCLES, DIV_CYCLES,
            FPU_ADDMUL_LAT, FPU_OTHERS_LAT, FPU_DIVSQRT_CYCLES, CSR_SLOW_CYCLES, l2_load_cycles,
            l2_store_cycles, l2_load_use_stall);
    for (unsigned i = 0; i < n_l1_ranges; i++)
        fprintf(out, "%s[%" PRIu64 ", %" PRIu64 "]", i ? ", " : "", l1_start[i], l1_start[i] + l1_size[i]);
    fprintf(out, "],\n \"harts\": [");
    for (unsigned hart = 0; hart < n_vcpus; hart++) {
        fprintf(out, "%s\n  {\"hart\": %u, \"regions\": {", hart ? "," : "", hart);
        bool first = true;
        for (int region = 0; region < NUM_REGIONS; region++) {
            const struct region_count *count = &vcpus[hart].counts[region];
            if (count->insns == 0)
                continue;
            fprintf(out,
                    "%s\"%d\": {\"insns\": %" PRIu64 ", \"cycles\": %" PRIu64 ", \"l1_accesses\": %" PRIu64
                    ", \"l2_accesses\": %" PRIu64 "}",
                    first ? "" : ", ", region, count->insns, count->cycles, count->l1_accesses,
                    count->l2_accesses);
            first = false;
        }
        fprintf(out, "}}");
    }
    fprintf(out, "\n]}\n");
    fclose(out);
}

/* ---- arguments ----------------------------------------------------------------------------------- */

static bool parse_number(const char *text, uint64_t *value)
{
    char *end;
    if (*text == '\0' || *text == '-')
        return false;
    *value = strtoull(text, &end, 0);
    return *end == '\0';
}

static bool parse_unsigned(const char *name, const char *text, unsigned *value)
{
    uint64_t number;
    if (!parse_number(text, &number) || number > 0xffffffffu) {
        fprintf(stderr, "tinyodl_insn: %s=%s is not a number\n", name, text);
        return false;
    }
    *value = (unsigned)number;
    return true;
}

static bool parse_range(const char *text)
{
    char start_text[32];
    const char *colon = strchr(text, ':');
    uint64_t start, end;
    size_t length = colon == NULL ? 0 : (size_t)(colon - text);
    if (colon == NULL || length == 0 || length >= sizeof start_text) {
        fprintf(stderr, "tinyodl_insn: l1=%s is not START:END\n", text);
        return false;
    }
    memcpy(start_text, text, length);
    start_text[length] = '\0';
    if (!parse_number(start_text, &start) || !parse_number(colon + 1, &end) || end <= start) {
        fprintf(stderr, "tinyodl_insn: l1=%s is not START:END with START < END\n", text);
        return false;
    }
    if (n_l1_ranges == MAX_L1_RANGES) {
        fprintf(stderr, "tinyodl_insn: more than %d l1= ranges\n", MAX_L1_RANGES);
        return false;
    }
    l1_start[n_l1_ranges] = start;
    l1_size[n_l1_ranges] = end - start;
    n_l1_ranges++;
    return true;
}

static bool parse_argument(char *argument)
{
    char *equals = strchr(argument, '=');
    if (equals == NULL) {
        fprintf(stderr, "tinyodl_insn: argument '%s' is not NAME=VALUE\n", argument);
        return false;
    }
    *equals = '\0';
    const char *name = argument, *value = equals + 1;
    if (strcmp(name, "out") == 0) {
        out_path = equals + 1;
        return true;
    }
    if (strcmp(name, "l1") == 0)
        return parse_range(value);
    if (strcmp(name, "load_use") == 0)
        return parse_unsigned(name, value, &load_use_stall);
    if (strcmp(name, "l2_load") == 0)
        return parse_unsigned(name, value, &l2_load_cycles);
    if (strcmp(name, "l2_store") == 0)
        return parse_unsigned(name, value, &l2_store_cycles);
    if (strcmp(name, "l2_load_use") == 0)
        return parse_unsigned(name, value, &l2_load_use_stall);
    fprintf(stderr, "tinyodl_insn: unknown argument '%s' (expected out, l1, load_use, l2_load, l2_store, "
            "l2_load_use)\n", name);
    return false;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                           char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (!parse_argument(argv[i]))
            return -1;
    }
    if (l2_load_cycles < 1 || l2_store_cycles < 1 || l2_load_cycles > EXTRA_MASK ||
        l2_store_cycles > EXTRA_MASK || l2_load_use_stall > EXTRA_MASK || load_use_stall > EXTRA_MASK) {
        fprintf(stderr, "tinyodl_insn: l2_load and l2_store must be between 1 and %u\n", EXTRA_MASK);
        return -1;
    }
    if (l2_load_use_stall < load_use_stall) {
        fprintf(stderr, "tinyodl_insn: l2_load_use (%u) must be >= load_use (%u)\n", l2_load_use_stall,
                load_use_stall);
        return -1;
    }
    if (out_path == NULL || *out_path == '\0') {
        fprintf(stderr, "tinyodl_insn: missing argument out=PATH\n");
        return -1;
    }
    if (!info->system_emulation) {
        fprintf(stderr, "tinyodl_insn: needs full-system emulation\n");
        return -1;
    }
    n_vcpus = (unsigned)info->system.max_vcpus;
    vcpus = calloc(n_vcpus, sizeof *vcpus);
    if (vcpus == NULL)
        return -1;
    for (unsigned i = 0; i < n_vcpus; i++) {
        vcpus[i].counts = calloc(NUM_REGIONS, sizeof *vcpus[i].counts);
        if (vcpus[i].counts == NULL)
            return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, vcpu_tb_trans);
    qemu_plugin_register_atexit_cb(id, write_counts, NULL);
    return 0;
}
