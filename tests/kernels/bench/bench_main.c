/* Instruction counts of the kernels on ResNet8 and DS-CNN layers, one hart playing each core in turn.
 * Under `-icount shift=0,sleep=off` with a single hart, minstret counts exactly this hart's
 * instructions. Prints one line per (case, phase, core count, core):
 *     R <case> <phase> <cores> <core> <instructions> <macs of the whole call> */
#include "tinyodl_kernels.h"
#include "tinyodl_rt.h"

#ifndef BENCH_N
#define BENCH_N 1
#endif

int bench_core, bench_cores = 1;
void rt_barrier(void) {}

#define UART ((volatile unsigned char *)0x10000000)
static void put_str(const char *s) { while (*s) *UART = (unsigned char)*s++; }
static void put_uint(unsigned v)
{
    char buf[12];
    int i = 11;
    buf[i] = 0;
    do { buf[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    put_str(buf + i);
}

static inline unsigned read_minstret(void)
{
    unsigned v;
    __asm__ volatile("csrr %0, minstret" : "=r"(v) : : "memory");
    return v;
}

#define MAX_ELEMS (BENCH_N * 16 * 32 * 32)
#define MAX_WEIGHTS (64 * 64 * 9)
static float buf_x[MAX_ELEMS], buf_y[MAX_ELEMS], buf_dy[MAX_ELEMS], buf_dx[MAX_ELEMS];
static float buf_w[MAX_WEIGHTS], buf_dw[MAX_WEIGHTS], buf_bias[64];

static void fill(float *p, int n, unsigned seed)
{
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (float)(int)(seed >> 9 & 0xffff) / 32768.0f - 1.0f;
    }
}

typedef struct {
    const char *name;
    int C, H, W, K, KH, KW, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, groups;
} conv_case_t;

/* Square image and kernel, equal strides, the same pad on every side. */
#define SQUARE(name, C, H, K, KH, stride, pad, groups) {name, C, H, H, K, KH, KH, stride, stride, pad, pad, pad, pad, groups}

static const conv_case_t conv_cases[] = {
    /* ResNet8 */
    SQUARE("conv3x3_c3_k16_32x32_s1", 3, 32, 16, 3, 1, 1, 1),
    SQUARE("conv3x3_c16_k16_32x32_s1", 16, 32, 16, 3, 1, 1, 1),
    SQUARE("conv3x3_c16_k32_32x32_s2", 16, 32, 32, 3, 2, 1, 1),
    SQUARE("conv3x3_c32_k32_16x16_s1", 32, 16, 32, 3, 1, 1, 1),
    SQUARE("conv3x3_c32_k64_16x16_s2", 32, 16, 64, 3, 2, 1, 1),
    SQUARE("conv3x3_c64_k64_8x8_s1", 64, 8, 64, 3, 1, 1, 1),
    SQUARE("conv1x1_c16_k32_32x32_s2", 16, 32, 32, 1, 2, 0, 1),
    SQUARE("conv1x1_c32_k64_16x16_s2", 32, 16, 64, 1, 2, 0, 1),
    SQUARE("conv1x1_c32_k32_16x16_s1", 32, 16, 32, 1, 1, 0, 1),
    SQUARE("dw3x3_c32_16x16_s1", 32, 16, 32, 3, 1, 1, 32),
    SQUARE("dw3x3_c64_16x16_s2", 64, 16, 64, 3, 2, 1, 64),
    /* DS-CNN (MLPerf Tiny keyword spotting): 49x10 MFCC input, 10x4 stem, 25x5 feature maps */
    {"dscnn_stem10x4_c1_k64_s2", 1, 49, 10, 64, 10, 4, 2, 2, 4, 1, 5, 1, 1},
    {"dscnn_dw3x3_c64_25x5", 64, 25, 5, 64, 3, 3, 1, 1, 1, 1, 1, 1, 64},
    {"dscnn_pw1x1_c64_k64_25x5", 64, 25, 5, 64, 1, 1, 1, 1, 0, 0, 0, 0, 1},
};

typedef struct {
    const char *name;
    int M, N, K, trans_a, trans_b;
} gemm_case_t;

static const gemm_case_t gemm_cases[] = {
    {"gemm_fwd_b16_64to10", 16, 10, 64, 0, 1},
    {"gemm_dx_b16_10to64", 16, 64, 10, 0, 0},
    {"gemm_dw_b16_10x64", 10, 64, 16, 1, 0},
    {"gemm_fwd_b16_256to128", 16, 128, 256, 0, 1},
    {"gemm_nn_64x64x64", 64, 64, 64, 0, 0},
};

static void report(const char *name, const char *phase, int cores, int core, unsigned insns, unsigned macs)
{
    put_str("R ");
    put_str(name);
    put_str(" ");
    put_str(phase);
    put_str(" ");
    put_uint((unsigned)cores);
    put_str(" ");
    put_uint((unsigned)core);
    put_str(" ");
    put_uint(insns);
    put_str(" ");
    put_uint(macs);
    put_str("\n");
}

static const int core_counts[] = {1, 8};

static void bench_conv(const conv_case_t *c)
{
    conv2d_params_t p;
    p.N = BENCH_N;
    p.C = c->C;
    p.H = c->H;
    p.W = c->W;
    p.K = c->K;
    p.KH = c->KH;
    p.KW = c->KW;
    p.stride_h = c->stride_h;
    p.stride_w = c->stride_w;
    p.pad_top = c->pad_top;
    p.pad_left = c->pad_left;
    p.pad_bottom = c->pad_bottom;
    p.pad_right = c->pad_right;
    p.groups = c->groups;
    p.OH = (c->H + c->pad_top + c->pad_bottom - c->KH) / c->stride_h + 1;
    p.OW = (c->W + c->pad_left + c->pad_right - c->KW) / c->stride_w + 1;
    const unsigned macs = (unsigned)(p.N * p.K * p.OH * p.OW * (p.C / p.groups) * p.KH * p.KW);
    fill(buf_x, p.N * p.C * p.H * p.W, 1);
    fill(buf_w, p.K * (p.C / p.groups) * p.KH * p.KW, 2);
    fill(buf_dy, p.N * p.K * p.OH * p.OW, 3);
    fill(buf_bias, p.K, 4);
    for (unsigned ci = 0; ci < sizeof core_counts / sizeof core_counts[0]; ci++) {
        bench_cores = core_counts[ci];
        for (int phase = 0; phase < 3; phase++) {
            for (int core = 0; core < bench_cores; core++) {
                bench_core = core;
                unsigned t0 = read_minstret();
                if (phase == 0) conv2d_fwd(buf_x, buf_w, buf_bias, buf_y, &p);
                if (phase == 1) conv2d_grad_input(buf_dy, buf_w, buf_dx, &p);
                if (phase == 2) conv2d_grad_weight(buf_x, buf_dy, buf_dw, &p);
                unsigned t1 = read_minstret();
                static const char *names[] = {"fwd", "grad_input", "grad_weight"};
                report(c->name, names[phase], bench_cores, core, t1 - t0, macs);
            }
        }
    }
}

static void bench_gemm(const gemm_case_t *c)
{
    gemm_params_t p = {c->M, c->N, c->K, c->trans_a, c->trans_b, 1.0f, 1.0f, GEMM_BIAS_COL, 0, 0, 0};
    fill(buf_x, c->M * c->K, 5);
    fill(buf_w, c->K * c->N, 6);
    fill(buf_bias, 64, 7);
    for (unsigned ci = 0; ci < sizeof core_counts / sizeof core_counts[0]; ci++) {
        bench_cores = core_counts[ci];
        for (int core = 0; core < bench_cores; core++) {
            bench_core = core;
            unsigned t0 = read_minstret();
            gemm(buf_x, buf_w, buf_bias, buf_y, &p);
            unsigned t1 = read_minstret();
            report(c->name, "gemm", bench_cores, core, t1 - t0, (unsigned)(c->M * c->N * c->K));
        }
    }
}

int main(void)
{
    for (unsigned i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++) bench_conv(&conv_cases[i]);
    for (unsigned i = 0; i < sizeof gemm_cases / sizeof gemm_cases[0]; i++) bench_gemm(&gemm_cases[i]);
    put_str("DONE\n");
    return 0;
}
