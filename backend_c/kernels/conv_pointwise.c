/*
 * 1x1 convolutions: forward and input gradient of the flat case (stride 1, no padding) as matrix
 * products over whole planes; weight gradient of every 1x1 case.
 */
#include <stddef.h>

#include "conv_internal.h"
#include "tinyodl_rt.h"

/* A 1x1 stride-1 convolution without padding is a matrix product over the flat plane,
 * out[i, p] = bias[i] + sum over r of A[i, r] * B[r, p]: the forward with A = w [K, C] and B = x,
 * the input gradient with A = w transposed and B = dy. Work items are chunks of PW_CHUNK pixels of
 * 4 rows of out, so narrow images (DS-CNN: 25x5) still fill the register blocks of 4 rows x
 * PW_PIXELS pixels (20 sums: 4 x 6 would spill). The sum is unrolled by PW_UNROLL terms, each of the
 * 8 operand pointers moving once per unrolled step. */
#define PW_PIXELS 5
#define PW_CHUNK (7 * PW_PIXELS)
#define PW_UNROLL 4

typedef struct {
    const float *a;    /* A at (first row of the block, 0) */
    const float *b;    /* B at (0, first pixel of the chunk) */
    const float *bias; /* bias of the block's first row, or NULL */
    float *out;        /* out at (first row of the block, first pixel of the chunk) */
    int terms;         /* terms of the sum */
    int a_i, a_r;      /* A strides: row of out, term; one of them is 1 */
    int plane;         /* B stride between terms, out stride between rows */
    int pixels;        /* pixels of the chunk */
} pw_t;

/* NI rows x NP pixels from pixel px. AI1: A's rows are adjacent (a_i == 1), so one pointer per term
 * reaches the NI rows at constant offsets; else a_r == 1 and one pointer per row reaches the terms. */
TK_INLINE void pw_block(const pw_t *t, int px, const int NI, const int NP, const int AI1)
{
    float acc[CONV_BLOCK][PW_PIXELS];
    TK_UNROLL for (int i = 0; i < NI; i++) {
        const float b = t->bias ? t->bias[i] : 0.0f;
        TK_UNROLL for (int j = 0; j < NP; j++) acc[i][j] = b;
    }
    const int plane = t->plane, a_r = t->a_r;
    const int NA = AI1 ? PW_UNROLL : NI; /* A pointers: one per term of a step, or one per row */
    const float *restrict bp[PW_UNROLL];
    const float *restrict ap[PW_UNROLL > CONV_BLOCK ? PW_UNROLL : CONV_BLOCK];
    TK_UNROLL for (int u = 0; u < PW_UNROLL; u++) bp[u] = t->b + px + u * plane;
    TK_UNROLL for (int q = 0; q < NA; q++) ap[q] = t->a + q * (AI1 ? a_r : t->a_i);
    int r = 0;
    for (; r + PW_UNROLL <= t->terms; r += PW_UNROLL) {
        TK_UNROLL for (int u = 0; u < PW_UNROLL; u++) {
            float bv[PW_PIXELS];
            TK_UNROLL for (int j = 0; j < NP; j++) bv[j] = bp[u][j];
            TK_UNROLL for (int i = 0; i < NI; i++) {
                const float av = AI1 ? ap[u][i] : ap[i][u];
                TK_UNROLL for (int j = 0; j < NP; j++) TK_MAC(acc[i][j], av, bv[j]);
            }
        }
        TK_UNROLL for (int u = 0; u < PW_UNROLL; u++) {
            bp[u] += PW_UNROLL * plane;
            TK_OPAQUE(bp[u]);
        }
        TK_UNROLL for (int q = 0; q < NA; q++) {
            ap[q] += AI1 ? PW_UNROLL * a_r : PW_UNROLL;
            TK_OPAQUE(ap[q]);
        }
    }
    for (; r < t->terms; r++) {
        TK_UNROLL for (int i = 0; i < NI; i++) {
            const float av = AI1 ? ap[0][i] : ap[i][0];
            TK_UNROLL for (int j = 0; j < NP; j++) TK_MAC(acc[i][j], av, bp[0][j]);
        }
        bp[0] += plane;
        if (AI1) {
            ap[0] += a_r;
        } else {
            TK_UNROLL for (int i = 0; i < NI; i++) ap[i]++;
        }
    }
    float *restrict out = t->out + px;
    TK_UNROLL for (int i = 0; i < NI; i++) {
        TK_UNROLL for (int j = 0; j < NP; j++) out[i * plane + j] = acc[i][j];
    }
}

TK_INLINE void pw_chunk(const pw_t *t, const int NI, const int AI1)
{
    int px = 0;
    for (; px + PW_PIXELS <= t->pixels; px += PW_PIXELS) pw_block(t, px, NI, PW_PIXELS, AI1);
    if (px + 4 <= t->pixels) {
        pw_block(t, px, NI, 4, AI1);
        px += 4;
    }
    if (px + 2 <= t->pixels) {
        pw_block(t, px, NI, 2, AI1);
        px += 2;
    }
    if (px < t->pixels) pw_block(t, px, NI, 1, AI1);
}

typedef void (*pw_chunk_fn)(const pw_t *t);

#define PW_VARIANT(NI, AI1)                                                                             \
    static void pw_chunk_##NI##_##AI1(const pw_t *t) { pw_chunk(t, NI, AI1); }
PW_VARIANT(4, 0)
PW_VARIANT(1, 0)
PW_VARIANT(4, 1)
PW_VARIANT(1, 1)

/* Forward (transposed == 0: out = y, B = x) or input gradient (transposed == 1: out = dx, B = dy) of
 * a flat 1x1 convolution. Split over (n, group, 4-row block, chunk). */
void conv_pw_product(const float *w, const float *b, const float *bias, float *out, const conv2d_params_t *p,
                     int transposed)
{
    const int G = p->groups, Cg = p->C / G, Kg = p->K / G, plane = p->H * p->W;
    const int rows = transposed ? Cg : Kg, terms = transposed ? Kg : Cg;
    const int blocks = (rows + CONV_BLOCK - 1) / CONV_BLOCK, chunks = (plane + PW_CHUNK - 1) / PW_CHUNK;
    const pw_chunk_fn chunk4 = transposed ? pw_chunk_4_1 : pw_chunk_4_0;
    const pw_chunk_fn chunk1 = transposed ? pw_chunk_1_1 : pw_chunk_1_0;
    pw_t t;
    t.terms = terms;
    t.a_i = transposed ? 1 : Cg;
    t.a_r = transposed ? Cg : 1;
    t.plane = plane;
    int first, end;
    rt_chunk(p->N * G * blocks * chunks, &first, &end);
    for (int item = first; item < end; item++) {
        const int chunk = item % chunks;
        int rest = item / chunks;
        const int block = rest % blocks;
        rest /= blocks;
        const int g = rest % G, n = rest / G;
        const int row0 = g * rows + block * CONV_BLOCK, nrows = tk_min(CONV_BLOCK, rows - block * CONV_BLOCK);
        const int px0 = chunk * PW_CHUNK;
        t.pixels = tk_min(PW_CHUNK, plane - px0);
        t.a = w + (size_t)g * Kg * Cg + (size_t)block * CONV_BLOCK * t.a_i;
        t.b = b + ((size_t)n * G * terms + (size_t)g * terms) * plane + px0;
        t.out = out + ((size_t)n * G * rows + row0) * plane + px0;
        t.bias = bias ? bias + row0 : NULL;
        if (nrows == CONV_BLOCK) {
            chunk4(&t);
        } else {
            for (int i = 0; i < nrows; i++) {
                chunk1(&t);
                t.a += t.a_i;
                t.out += plane;
                if (t.bias) t.bias++;
            }
        }
    }
}

/* 1x1 kernels: a register block of NK output channels x NC input channels, summed over all pixels
 * (a matrix product dy . x^T over the pixels, x read with the column stride). */
typedef struct {
    const float *x;  /* x at (0, first input channel, input row of the first valid output row, 0) */
    const float *dy; /* dy at (0, first output channel, first valid output row, 0) */
    int N, x_batch, dy_batch, x_plane, dy_plane;
    int rows, x_row_step, OW, sw;
    int col0;        /* x column of ow = 0: -pad_left */
    int a, b;        /* output columns whose input column is inside the image */
} gw1_t;

TK_INLINE void gw1_pixels(float acc[][CONV_BLOCK], const float *restrict const xp[], const float *restrict const dp[],
                          int sw, const int NK, const int NC, const int NP)
{
    TK_UNROLL for (int j = 0; j < NP; j++) {
        float xv[CONV_BLOCK], dv[CONV_BLOCK];
        TK_UNROLL for (int c = 0; c < NC; c++) xv[c] = xp[c][j * sw];
        TK_UNROLL for (int i = 0; i < NK; i++) dv[i] = dp[i][j];
        TK_UNROLL for (int i = 0; i < NK; i++) {
            TK_UNROLL for (int c = 0; c < NC; c++) TK_MAC(acc[i][c], dv[i], xv[c]);
        }
    }
}

TK_INLINE void gw1_block(const gw1_t *t, float *dw, int dw_k, const int NK, const int NC, const int SWC)
{
    const int sw = SWC ? SWC : t->sw, a = t->a, b = t->b;
    float acc[CONV_BLOCK][CONV_BLOCK];
    TK_UNROLL for (int i = 0; i < NK; i++) {
        TK_UNROLL for (int c = 0; c < NC; c++) acc[i][c] = 0.0f;
    }
    for (int n = 0; n < t->N; n++) {
        const float *xr = t->x + (size_t)n * t->x_batch + t->col0 + a * sw;
        const float *dr = t->dy + (size_t)n * t->dy_batch + a;
        for (int row = 0; row < t->rows; row++) {
            const float *restrict xp[CONV_BLOCK];
            const float *restrict dp[CONV_BLOCK];
            TK_UNROLL for (int c = 0; c < NC; c++) xp[c] = xr + c * t->x_plane;
            TK_UNROLL for (int i = 0; i < NK; i++) dp[i] = dr + i * t->dy_plane;
            int ow = a;
            for (; ow + 4 <= b; ow += 4) {
                gw1_pixels(acc, xp, dp, sw, NK, NC, 4);
                TK_UNROLL for (int c = 0; c < NC; c++) {
                    xp[c] += 4 * sw;
                    TK_OPAQUE(xp[c]);
                }
                TK_UNROLL for (int i = 0; i < NK; i++) {
                    dp[i] += 4;
                    TK_OPAQUE(dp[i]);
                }
            }
            if (ow + 2 <= b) {
                gw1_pixels(acc, xp, dp, sw, NK, NC, 2);
                TK_UNROLL for (int c = 0; c < NC; c++) xp[c] += 2 * sw;
                TK_UNROLL for (int i = 0; i < NK; i++) dp[i] += 2;
                ow += 2;
            }
            if (ow < b) gw1_pixels(acc, xp, dp, sw, NK, NC, 1);
            xr += t->x_row_step;
            dr += t->OW;
        }
    }
    TK_UNROLL for (int i = 0; i < NK; i++) {
        TK_UNROLL for (int c = 0; c < NC; c++) dw[i * dw_k + c] = acc[i][c];
    }
}

typedef void (*gw1_block_fn)(const gw1_t *t, float *dw, int dw_k);

#define GW1_VARIANT(NK, NC, SWC)                                                                        \
    static void gw1_block_##NK##_##NC##_##SWC(const gw1_t *t, float *dw, int dw_k)                     \
    {                                                                                                   \
        gw1_block(t, dw, dw_k, NK, NC, SWC);                                                            \
    }
GW1_VARIANT(4, 4, 1)
GW1_VARIANT(4, 4, 2)
GW1_VARIANT(4, 4, 0)
GW1_VARIANT(4, 1, 0)
GW1_VARIANT(1, 4, 0)
GW1_VARIANT(1, 1, 0)

static gw1_block_fn gw1_block_pick(int nk, int nc, int sw)
{
    if (nk == CONV_BLOCK && nc == CONV_BLOCK) return sw == 1 ? gw1_block_4_4_1 : sw == 2 ? gw1_block_4_4_2 : gw1_block_4_4_0;
    if (nk == CONV_BLOCK) return gw1_block_4_1_0;
    return nc == CONV_BLOCK ? gw1_block_1_4_0 : gw1_block_1_1_0;
}

void conv_pw_grad_weight(const float *x, const float *dy, float *dw, const conv2d_params_t *p)
{
    const int G = p->groups, Cg = p->C / G, Kg = p->K / G, sw = p->stride_w;
    const int kblocks = (Kg + CONV_BLOCK - 1) / CONV_BLOCK, cblocks = (Cg + CONV_BLOCK - 1) / CONV_BLOCK;
    gw1_t t;
    t.N = p->N;
    t.x_batch = p->C * p->H * p->W;
    t.dy_batch = p->K * p->OH * p->OW;
    t.x_plane = p->H * p->W;
    t.dy_plane = p->OH * p->OW;
    t.x_row_step = p->stride_h * p->W;
    t.OW = p->OW;
    t.sw = sw;
    t.col0 = -p->pad_left;
    t.a = tk_min(tk_max(tk_ceil_div(p->pad_left, sw), 0), p->OW);
    t.b = tk_min(tk_max(tk_floor_div(p->W - 1 + p->pad_left, sw) + 1, t.a), p->OW);
    int oh_lo, oh_hi;
    conv_gw_valid_rows(p, 0, &oh_lo, &oh_hi);
    t.rows = oh_hi - oh_lo;
    if (conv_is_flat(p)) {
        /* One row of H * W pixels: the pixel pairs run through the plane, not through each row. */
        t.rows = 1;
        t.OW = t.b = p->H * p->W;
    }
    const int ih_lo = t.rows ? oh_lo * p->stride_h - p->pad_top : 0;

    int first, end;
    rt_chunk(G * kblocks * cblocks, &first, &end);
    for (int item = first; item < end; item++) {
        const int cb = item % cblocks, kb = item / cblocks % kblocks, g = item / cblocks / kblocks;
        const int k0 = g * Kg + kb * CONV_BLOCK, cl0 = cb * CONV_BLOCK;
        const int nk = tk_min(CONV_BLOCK, Kg - kb * CONV_BLOCK), nc = tk_min(CONV_BLOCK, Cg - cl0);
        for (int i = 0; i < nk;) {
            const int bk = nk - i >= CONV_BLOCK ? CONV_BLOCK : 1;
            for (int c = 0; c < nc;) {
                const int bc = nc - c >= CONV_BLOCK ? CONV_BLOCK : 1;
                t.x = x + ((size_t)(g * Cg + cl0 + c) * p->H + ih_lo) * p->W;
                t.dy = dy + ((size_t)(k0 + i) * p->OH + oh_lo) * p->OW;
                gw1_block_pick(bk, bc, sw)(&t, dw + (size_t)(k0 + i) * Cg + cl0 + c, Cg);
                c += bc;
            }
            i += bk;
        }
    }
}
