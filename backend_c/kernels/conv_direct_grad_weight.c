/*
 * Convolution gradient w.r.t. the weights, the direct path: kernels wider or taller than 1, other
 * than depthwise 3x3.
 */
#include <stddef.h>

#include "conv_internal.h"
#include "tinyodl_rt.h"

/* For one (output-channel block, input channel, kernel row) the core sums over the batch and all
 * output pixels. A register block holds NK output channels x KWC kernel columns (kw0 .. kw0+KWC-1);
 * wider kernels are covered by several column groups. Interior pixels (all KWC columns inside the
 * image) run in a tight loop per row; the few border columns are then swept over all rows at once,
 * since which kernel columns they miss is the same in every row. */
typedef struct {
    const float *x;  /* x at (0, c, input row of the first valid output row, 0) */
    const float *dy; /* dy at (0, first output channel, first valid output row, 0) */
    int N, x_batch, dy_batch, dy_plane;
    int rows;        /* valid output rows for this kernel row */
    int x_row_step;  /* sh * W */
    int W, OW, sw, pl;
    int kw0;
} gw_rows_t;

/* Interior pixels of one row: NP pixels from xp / dp on, all KWC kernel columns inside the image. */
TK_INLINE void gw_pixels(float acc[][3], const float *restrict xp, const float *restrict const dp[], const int NK,
                         const int NP, const int KWC, const int sw)
{
    TK_UNROLL for (int j = 0; j < NP; j++) {
        float dv[CONV_BLOCK];
        TK_UNROLL for (int i = 0; i < NK; i++) dv[i] = dp[i][j];
        TK_UNROLL for (int kw = 0; kw < KWC; kw++) {
            const float xv = xp[j * sw + kw];
            TK_UNROLL for (int i = 0; i < NK; i++) TK_MAC(acc[i][kw], dv[i], xv);
        }
    }
}

/* One border column ow (x column col of kernel column 0) over all rows, kernel columns [KLO, KHI). */
TK_INLINE void gw_border_column(const gw_rows_t *t, float acc[][3], int ow, int col, const int NK, const int KLO,
                                const int KHI)
{
    const int dy_plane = t->dy_plane;
    for (int n = 0; n < t->N; n++) {
        const float *restrict xr = t->x + (size_t)n * t->x_batch + col;
        const float *restrict dr = t->dy + (size_t)n * t->dy_batch + ow;
        for (int row = 0; row < t->rows; row++) {
            TK_UNROLL for (int kw = KLO; kw < KHI; kw++) {
                const float xv = xr[kw];
                TK_UNROLL for (int i = 0; i < NK; i++) TK_MAC(acc[i][kw], dr[i * dy_plane], xv);
            }
            xr += t->x_row_step;
            dr += t->OW;
        }
    }
}

/* dw block = contributions of the output columns outside [a, b) (the image border cuts their
 * windows). Which kernel columns a border column keeps is the same in every row, so each column is
 * one loop over all rows with that range fixed at compile time. */
TK_INLINE void gw_borders(const gw_rows_t *t, float *dw, int dw_k, int a, int b, const int NK, const int KWC,
                          const int SWC)
{
    const int sw = SWC ? SWC : t->sw, col0 = t->kw0 - t->pl;
    float acc[CONV_BLOCK][3];
    TK_UNROLL for (int i = 0; i < NK; i++) {
        TK_UNROLL for (int kw = 0; kw < KWC; kw++) acc[i][kw] = 0.0f;
    }
    for (int ow = 0; ow < t->OW; ow++) {
        if (ow == a && a < b) ow = b;
        if (ow >= t->OW) break;
        const int col = ow * sw + col0;
        const int lo = tk_max(0, -col), hi = tk_min(KWC, t->W - col);
        if (KWC == 1) {
            if (lo < hi) gw_border_column(t, acc, ow, col, NK, 0, 1);
            continue;
        }
        switch (lo * 4 + hi) {
        case 0 * 4 + 3: gw_border_column(t, acc, ow, col, NK, 0, 3); break;
        case 1 * 4 + 3: gw_border_column(t, acc, ow, col, NK, 1, 3); break;
        case 2 * 4 + 3: gw_border_column(t, acc, ow, col, NK, 2, 3); break;
        case 0 * 4 + 2: gw_border_column(t, acc, ow, col, NK, 0, 2); break;
        case 0 * 4 + 1: gw_border_column(t, acc, ow, col, NK, 0, 1); break;
        case 1 * 4 + 2: gw_border_column(t, acc, ow, col, NK, 1, 2); break;
        default: break; /* no kernel column inside the image */
        }
    }
    TK_UNROLL for (int i = 0; i < NK; i++) {
        TK_UNROLL for (int kw = 0; kw < KWC; kw++) dw[i * dw_k + kw] = acc[i][kw];
    }
}

TK_INLINE void gw_block(const gw_rows_t *t, float *dw, int dw_k, const int NK, const int KWC, const int SWC)
{
    const int sw = SWC ? SWC : t->sw;
    const int W = t->W, OW = t->OW, dy_plane = t->dy_plane, rows = t->rows, x_row_step = t->x_row_step;
    const int col0 = t->kw0 - t->pl; /* x column of ow = 0, kw = kw0 */
    /* Interior: ow*sw + col0 >= 0 and ow*sw + col0 + KWC <= W. */
    const int a = tk_min(tk_max(tk_ceil_div(-col0, sw), 0), OW);
    const int b = tk_min(tk_max(tk_floor_div(W - KWC - col0, sw) + 1, a), OW);
    /* The border pass writes its partial sums to dw; the interior pass starts from them. */
    gw_borders(t, dw, dw_k, a, b, NK, KWC, SWC);
    if (a == b) return;
    float acc[CONV_BLOCK][3];
    TK_UNROLL for (int i = 0; i < NK; i++) {
        TK_UNROLL for (int kw = 0; kw < KWC; kw++) acc[i][kw] = dw[i * dw_k + kw];
    }
    for (int n = 0; n < t->N; n++) {
        const float *xr = t->x + (size_t)n * t->x_batch + col0 + a * sw;
        const float *dr = t->dy + (size_t)n * t->dy_batch + a;
        for (int row = 0; row < rows; row++) {
            const float *restrict xp = xr;
            const float *restrict dp[CONV_BLOCK];
            TK_UNROLL for (int i = 0; i < NK; i++) dp[i] = dr + i * dy_plane;
            int ow = a;
            for (; ow + 4 <= b; ow += 4) {
                gw_pixels(acc, xp, dp, NK, 4, KWC, sw);
                xp += 4 * sw;
                TK_UNROLL for (int i = 0; i < NK; i++) {
                    dp[i] += 4;
                    TK_OPAQUE(dp[i]);
                }
            }
            if (ow + 2 <= b) {
                gw_pixels(acc, xp, dp, NK, 2, KWC, sw);
                xp += 2 * sw;
                TK_UNROLL for (int i = 0; i < NK; i++) dp[i] += 2;
                ow += 2;
            }
            if (ow < b) gw_pixels(acc, xp, dp, NK, 1, KWC, sw);
            xr += x_row_step;
            dr += OW;
        }
    }
    TK_UNROLL for (int i = 0; i < NK; i++) {
        TK_UNROLL for (int kw = 0; kw < KWC; kw++) dw[i * dw_k + kw] = acc[i][kw];
    }
}

typedef void (*gw_block_fn)(const gw_rows_t *t, float *dw, int dw_k);

#define GW_VARIANT(NK, KWC, SWC)                                                                        \
    static void gw_block_##NK##_##KWC##_##SWC(const gw_rows_t *t, float *dw, int dw_k)                 \
    {                                                                                                   \
        gw_block(t, dw, dw_k, NK, KWC, SWC);                                                            \
    }
GW_VARIANT(4, 3, 1)
GW_VARIANT(4, 3, 2)
GW_VARIANT(4, 3, 0)
GW_VARIANT(4, 1, 0)
GW_VARIANT(1, 3, 1)
GW_VARIANT(1, 3, 2)
GW_VARIANT(1, 3, 0)
GW_VARIANT(1, 1, 0)

static gw_block_fn gw_block_pick(int four_channels, int three_columns, int sw)
{
    if (!three_columns) return four_channels ? gw_block_4_1_0 : gw_block_1_1_0;
    if (four_channels) return sw == 1 ? gw_block_4_3_1 : sw == 2 ? gw_block_4_3_2 : gw_block_4_3_0;
    return sw == 1 ? gw_block_1_3_1 : sw == 2 ? gw_block_1_3_2 : gw_block_1_3_0;
}

/* Width-4 stride-2 kernels (keyword-spotting stems) whose rows the forward's tiles cover entirely
 * (fwd_row_tiles in conv_direct_fwd.c): the weight gradient walks the same tiles, each over all
 * rows, with the 4 channels x 4 kernel columns of sums in registers. */
TK_INLINE void gw_tile_rows(const gw_rows_t *t, float acc[][4], int ow, const int NP, const int KWC, const int SWC,
                            const int LO, const int HI)
{
    float a[CONV_BLOCK][4];
    TK_UNROLL for (int i = 0; i < CONV_BLOCK; i++) {
        TK_UNROLL for (int kw = 0; kw < KWC; kw++) a[i][kw] = acc[i][kw];
    }
    for (int n = 0; n < t->N; n++) {
        const float *restrict xr = t->x + (size_t)n * t->x_batch + ow * SWC - t->pl + LO;
        const float *restrict dp[CONV_BLOCK];
        TK_UNROLL for (int i = 0; i < CONV_BLOCK; i++) dp[i] = t->dy + (size_t)n * t->dy_batch + i * t->dy_plane + ow;
        for (int row = 0; row < t->rows; row++) {
            TK_UNROLL for (int j = 0; j < NP; j++) {
                float dv[CONV_BLOCK];
                TK_UNROLL for (int i = 0; i < CONV_BLOCK; i++) dv[i] = dp[i][j];
                TK_UNROLL for (int kw = 0; kw < KWC; kw++) {
                    if ((j == 0 && kw < LO) || (j == NP - 1 && kw >= KWC - HI)) continue;
                    const float xv = xr[j * SWC + kw - LO];
                    TK_UNROLL for (int i = 0; i < CONV_BLOCK; i++) TK_MAC(a[i][kw], dv[i], xv);
                }
            }
            xr += t->x_row_step;
            TK_UNROLL for (int i = 0; i < CONV_BLOCK; i++) {
                dp[i] += t->OW;
                TK_OPAQUE(dp[i]);
            }
        }
    }
    TK_UNROLL for (int i = 0; i < CONV_BLOCK; i++) {
        TK_UNROLL for (int kw = 0; kw < KWC; kw++) acc[i][kw] = a[i][kw];
    }
}

#define GW_TILE_CASE(NP, LO, HI)                                                                        \
    case TILE_SHAPE(NP, LO, HI): gw_tile_rows(t, acc, ow, NP, KWC, SWC, LO, HI); break;

/* Returns 0 (and writes nothing) if the tiles leave pixels of the row uncovered. */
TK_INLINE int gw_tiles(const gw_rows_t *t, float *dw, int dw_k, const int KWC, const int SWC)
{
    const int OW = t->OW, pl = t->pl;
    const int a = tk_min(tk_max(tk_ceil_div(pl, SWC), 0), OW);
    const int b = tk_min(tk_max(tk_floor_div(t->W + pl - KWC, SWC) + 1, a), OW);
    int left, right;
    tile_span(a, b, OW, t->W, pl, KWC, SWC, &left, &right);
    if (a - left != 0 || b + right != OW) return 0;
    float acc[CONV_BLOCK][4] = {{0.0f}};
    for (int ow = 0; ow < OW;) {
        const int np = tile_pixels(ow, OW);
        switch (TILE_SHAPE(np, left && ow == 0, right && ow + np == OW)) {
            TILE_CASES(GW_TILE_CASE)
        default: return 0;
        }
        ow += np;
    }
    TK_UNROLL for (int i = 0; i < CONV_BLOCK; i++) {
        TK_UNROLL for (int kw = 0; kw < KWC; kw++) dw[i * dw_k + kw] = acc[i][kw];
    }
    return 1;
}

static int gw_tiles_4_2(const gw_rows_t *t, float *dw, int dw_k) { return gw_tiles(t, dw, dw_k, 4, 2); }

/* Split over (group, block of output channels, input channel, kernel row). */
void conv_direct_grad_weight(const float *x, const float *dy, float *dw, const conv2d_params_t *p)
{
    const int G = p->groups, Cg = p->C / G, Kg = p->K / G;
    const int kblocks = (Kg + CONV_BLOCK - 1) / CONV_BLOCK;
    const int KH = p->KH, KW = p->KW, sh = p->stride_h;
    const int dw_k = Cg * KH * KW;
    gw_rows_t t;
    t.N = p->N;
    t.x_batch = p->C * p->H * p->W;
    t.dy_batch = p->K * p->OH * p->OW;
    t.dy_plane = p->OH * p->OW;
    t.x_row_step = sh * p->W;
    t.W = p->W;
    t.OW = p->OW;
    t.sw = p->stride_w;
    t.pl = p->pad_left;

    int first, end;
    rt_chunk(G * kblocks * Cg * KH, &first, &end);
    for (int item = first; item < end; item++) {
        const int kh = item % KH;
        int rest = item / KH;
        const int cl = rest % Cg;
        rest /= Cg;
        const int kb = rest % kblocks;
        const int g = rest / kblocks;
        const int k0 = g * Kg + kb * CONV_BLOCK;
        const int nk = tk_min(CONV_BLOCK, Kg - kb * CONV_BLOCK);
        int oh_lo, oh_hi;
        conv_gw_valid_rows(p, kh, &oh_lo, &oh_hi);
        t.rows = oh_hi - oh_lo;
        const int ih_lo = oh_lo * sh + kh - p->pad_top;
        t.x = x + ((size_t)(g * Cg + cl) * p->H + (t.rows ? ih_lo : 0)) * p->W;
        t.dy = dy + ((size_t)k0 * p->OH + oh_lo) * p->OW;
        float *dwp = dw + ((size_t)k0 * Cg + cl) * KH * KW + kh * KW;
        for (int done = 0; done < nk;) {
            const int block = nk - done >= CONV_BLOCK ? CONV_BLOCK : 1;
            const int tiled = block == CONV_BLOCK && KW == 4 && t.sw == 2 && gw_tiles_4_2(&t, dwp, dw_k);
            for (int kw0 = 0; kw0 < KW && !tiled;) {
                const int cols = KW - kw0 >= 3 ? 3 : 1;
                t.kw0 = kw0;
                gw_block_pick(block == CONV_BLOCK, cols == 3, t.sw)(&t, dwp + kw0, dw_k);
                kw0 += cols;
            }
            done += block;
            t.dy += (size_t)block * t.dy_plane;
            dwp += (size_t)block * dw_k;
        }
    }
}

/* ================================ bias gradient ================================ */
