/*
 * Convolution forward, the direct path: any kernel, strides, pads and groups, one output row of a
 * block of output channels per work item (see conv.c for the register blocks and border handling).
 */
#include <stddef.h>

#include "conv_internal.h"
#include "tinyodl_rt.h"

/* One output row of a block of output channels, all pointers positioned for that row. */
typedef struct {
    const float *x;    /* x at (n, first input channel of the group, input row of the first valid
                          kernel row, column 0) */
    const float *w;    /* w at (first output channel, 0, first valid kernel row, 0) */
    const float *bias; /* bias at the first output channel, or NULL */
    float *y;          /* y at (n, first output channel, oh, 0) */
    int cin;           /* input channels of the group */
    int nkh;           /* kernel rows inside the image */
    int x_plane, W;    /* x strides: channel, row */
    int w_k, w_c, KW;  /* w strides: output channel, input channel; kernel width */
    int y_plane;
    int sw, pl;
    int OW;
    int ow_a, ow_b;    /* [ow_a, ow_b): pixels whose window lies inside the image columns */
} fwd_row_t;

/* acc[i][j] += sum over c < cin, kh < nkh, kw < nkw of
 *     xw[c*x_plane + kh*W + j*sw + kw] * ww[i*w_k + c*w_c + kh*KW + kw].
 * With NKH, NKW and KWC (the weight row length) constant, the window is unrolled and every weight
 * sits at a constant offset from one of NK channel pointers; otherwise the loops are generic. */
TK_INLINE void fwd_accumulate(const fwd_row_t *t, float acc[][8], const float *xw, const float *ww, int nkw,
                              const int NK, const int NP, const int NKH, const int NKW, const int KWC,
                              const int SWC)
{
    const int sw = SWC ? SWC : t->sw, W = t->W, w_c = t->w_c, x_plane = t->x_plane, cin = t->cin;
    const float *restrict xc = xw;
    if (NKH && NKW && KWC) {
        const float *restrict wp[CONV_BLOCK];
        TK_UNROLL for (int i = 0; i < NK; i++) wp[i] = ww + i * t->w_k;
        for (int c = 0; c < cin; c++) {
            TK_UNROLL for (int kh = 0; kh < NKH; kh++) {
                const float *restrict xr = xc + kh * W;
                TK_UNROLL for (int kw = 0; kw < NKW; kw++) {
                    float xv[8];
                    TK_UNROLL for (int j = 0; j < NP; j++) xv[j] = xr[j * sw + kw];
                    TK_UNROLL for (int i = 0; i < NK; i++) {
                        const float wv = wp[i][kh * KWC + kw];
                        TK_UNROLL for (int j = 0; j < NP; j++) TK_MAC(acc[i][j], wv, xv[j]);
                    }
                }
            }
            xc += x_plane;
            TK_UNROLL for (int i = 0; i < NK; i++) {
                wp[i] += w_c;
                TK_OPAQUE(wp[i]);
            }
        }
        return;
    }
    const int nkh = t->nkh, KW = t->KW, w_k = t->w_k;
    const float *restrict wc = ww;
    for (int c = 0; c < cin; c++) {
        const float *restrict xr = xc;
        const float *restrict wr = wc;
        for (int kh = 0; kh < nkh; kh++) {
            for (int kw = 0; kw < nkw; kw++) {
                float xv[8];
                TK_UNROLL for (int j = 0; j < NP; j++) xv[j] = xr[j * sw + kw];
                TK_UNROLL for (int i = 0; i < NK; i++) {
                    const float wv = wr[i * w_k + kw];
                    TK_UNROLL for (int j = 0; j < NP; j++) TK_MAC(acc[i][j], wv, xv[j]);
                }
            }
            xr += W;
            wr += KW;
        }
        xc += x_plane;
        wc += w_c;
    }
}

/* NP output pixels from ow on, NK channels, kernel columns [kw_lo, kw_lo + nkw) inside the image for
 * all of them. KWC is the kernel width when it is a compile-time constant, else 0. */
TK_INLINE void fwd_pixels(const fwd_row_t *t, int ow, int kw_lo, int nkw, const int NK, const int NP,
                          const int KWC, const int SWC)
{
    const int sw = SWC ? SWC : t->sw;
    float acc[CONV_BLOCK][8];
    TK_UNROLL for (int i = 0; i < NK; i++) {
        const float b = t->bias ? t->bias[i] : 0.0f;
        TK_UNROLL for (int j = 0; j < NP; j++) acc[i][j] = b;
    }
    const float *xw = t->x + ow * sw - t->pl + kw_lo;
    const float *ww = t->w + kw_lo;
    const int nkh = t->nkh;
    /* Constant row counts: the full kernel, or one row cut by a padding of one. */
    if (KWC == 3 && nkw == 3 && nkh == 3)
        fwd_accumulate(t, acc, xw, ww, nkw, NK, NP, 3, 3, 3, SWC);
    else if (KWC == 3 && nkw == 3 && nkh == 2)
        fwd_accumulate(t, acc, xw, ww, nkw, NK, NP, 2, 3, 3, SWC);
    else if (KWC == 3 && nkw == 2 && nkh == 3)
        fwd_accumulate(t, acc, xw, ww, nkw, NK, NP, 3, 2, 3, SWC);
    else if (KWC == 3 && nkw == 2 && nkh == 2)
        fwd_accumulate(t, acc, xw, ww, nkw, NK, NP, 2, 2, 3, SWC);
    else if (KWC == 1 && nkw == 1 && nkh == 1)
        fwd_accumulate(t, acc, xw, ww, nkw, NK, NP, 1, 1, 1, SWC);
    else
        fwd_accumulate(t, acc, xw, ww, nkw, NK, NP, 0, 0, 0, SWC);
    float *restrict y = t->y + ow;
    TK_UNROLL for (int i = 0; i < NK; i++) {
        TK_UNROLL for (int j = 0; j < NP; j++) y[i * t->y_plane + j] = acc[i][j];
    }
}

/* One output pixel whose window crosses the left or right image border. */
TK_INLINE void fwd_border_pixel(const fwd_row_t *t, int ow, const int NK, const int KWC, const int SWC)
{
    const int iw0 = ow * t->sw - t->pl;
    const int kw_lo = tk_max(0, -iw0), kw_hi = tk_min(t->KW, t->W - iw0);
    fwd_pixels(t, ow, kw_lo, tk_max(kw_hi - kw_lo, 0), NK, 1, KWC, SWC);
}

TK_INLINE void fwd_row(const fwd_row_t *t, const int NK, const int KWC, const int SWC)
{
    const int a = t->ow_a, b = t->ow_b, KW = KWC ? KWC : t->KW, NPMAX = FWD_PIXELS(NK);
    for (int ow = 0; ow < a; ow++) fwd_border_pixel(t, ow, NK, KWC, SWC);
    int ow = a;
    for (; ow + NPMAX <= b; ow += NPMAX) fwd_pixels(t, ow, 0, KW, NK, NPMAX, KWC, SWC);
    if (NPMAX > 4 && ow + 4 <= b) {
        fwd_pixels(t, ow, 0, KW, NK, 4, KWC, SWC);
        ow += 4;
    }
    if (ow + 2 <= b) {
        fwd_pixels(t, ow, 0, KW, NK, 2, KWC, SWC);
        ow += 2;
    }
    if (ow < b) fwd_pixels(t, ow, 0, KW, NK, 1, KWC, SWC);
    for (ow = b; ow < t->OW; ow++) fwd_border_pixel(t, ow, NK, KWC, SWC);
}

typedef void (*fwd_row_fn)(const fwd_row_t *t);

#define FWD_ROW_VARIANT(NK, KWC, SWC)                                                                   \
    static void fwd_row_##NK##_##KWC##_##SWC(const fwd_row_t *t) { fwd_row(t, NK, KWC, SWC); }
FWD_ROW_VARIANT(4, 3, 1)
FWD_ROW_VARIANT(4, 3, 2)
FWD_ROW_VARIANT(4, 1, 1)
FWD_ROW_VARIANT(4, 1, 2)
FWD_ROW_VARIANT(4, 0, 0)
FWD_ROW_VARIANT(1, 3, 1)
FWD_ROW_VARIANT(1, 3, 2)
FWD_ROW_VARIANT(1, 0, 0)

/* Rows of a few output pixels with a wide kernel (the 10x4 stride-2 stem of keyword-spotting nets:
 * 5 output columns, 2 of them border pixels) leave the 4-pixel blocks above almost nothing to do.
 * Here a row is cut into tiles of up to 5 pixels x 4 channels whose first pixel may lose kernel
 * column 0 and whose last pixel may lose column KWC - 1 to the image border, both fixed at compile
 * time, so a padding of one costs no per-pixel path. The kernel width is a constant: each kernel
 * row is unrolled, its weights at constant offsets from 4 channel pointers. */
TK_INLINE void fwd_tile(const fwd_row_t *t, int ow, const int NP, const int KWC, const int SWC, const int LO,
                        const int HI)
{
    const int W = t->W, nkh = t->nkh, cin = t->cin;
    float acc[CONV_BLOCK][TILE_PIXELS];
    TK_UNROLL for (int i = 0; i < CONV_BLOCK; i++) {
        const float b = t->bias ? t->bias[i] : 0.0f;
        TK_UNROLL for (int j = 0; j < NP; j++) acc[i][j] = b;
    }
    const float *xc = t->x + ow * SWC - t->pl + LO;
    const float *wc = t->w;
    for (int c = 0; c < cin; c++) {
        const float *restrict xr = xc;
        const float *restrict wp[CONV_BLOCK];
        TK_UNROLL for (int i = 0; i < CONV_BLOCK; i++) wp[i] = wc + i * t->w_k;
        for (int kh = 0; kh < nkh; kh++) {
            TK_UNROLL for (int kw = 0; kw < KWC; kw++) {
                float wv[CONV_BLOCK];
                TK_UNROLL for (int i = 0; i < CONV_BLOCK; i++) wv[i] = wp[i][kw];
                TK_UNROLL for (int j = 0; j < NP; j++) {
                    if ((j == 0 && kw < LO) || (j == NP - 1 && kw >= KWC - HI)) continue;
                    const float xv = xr[j * SWC + kw - LO];
                    TK_UNROLL for (int i = 0; i < CONV_BLOCK; i++) TK_MAC(acc[i][j], wv[i], xv);
                }
                /* Reload x for the next kernel column rather than keep this one's values live:
                 * with 20 sums in registers, keeping them would spill. */
                TK_OPAQUE(xr);
            }
            xr += W;
            TK_UNROLL for (int i = 0; i < CONV_BLOCK; i++) {
                wp[i] += KWC;
                TK_OPAQUE(wp[i]);
            }
        }
        xc += t->x_plane;
        wc += t->w_c;
    }
    float *restrict y = t->y + ow;
    TK_UNROLL for (int i = 0; i < CONV_BLOCK; i++) {
        TK_UNROLL for (int j = 0; j < NP; j++) y[i * t->y_plane + j] = acc[i][j];
    }
}

#define FWD_TILE_CASE(NP, LO, HI)                                                                       \
    case TILE_SHAPE(NP, LO, HI): fwd_tile(t, ow, NP, KWC, SWC, LO, HI); break;

TK_INLINE void fwd_row_tiles(const fwd_row_t *t, const int KWC, const int SWC)
{
    int left, right;
    tile_span(t->ow_a, t->ow_b, t->OW, t->W, t->pl, KWC, SWC, &left, &right);
    const int m0 = t->ow_a - left, m1 = t->ow_b + right;
    for (int ow = 0; ow < m0; ow++) fwd_border_pixel(t, ow, CONV_BLOCK, 0, 0);
    for (int ow = m0; ow < m1;) {
        const int np = tile_pixels(ow, m1);
        switch (TILE_SHAPE(np, left && ow == m0, right && ow + np == m1)) {
            TILE_CASES(FWD_TILE_CASE)
        default: fwd_border_pixel(t, ow, CONV_BLOCK, 0, 0);
        }
        ow += np;
    }
    for (int ow = m1; ow < t->OW; ow++) fwd_border_pixel(t, ow, CONV_BLOCK, 0, 0);
}

static void fwd_row_tiles_4_2(const fwd_row_t *t) { fwd_row_tiles(t, 4, 2); }

static fwd_row_fn fwd_row_pick(int four_channels, int KW, int sw)
{
    if (four_channels) {
        if (KW == 4 && sw == 2) return fwd_row_tiles_4_2;
        if (KW == 3 && sw == 1) return fwd_row_4_3_1;
        if (KW == 3 && sw == 2) return fwd_row_4_3_2;
        if (KW == 1 && sw == 1) return fwd_row_4_1_1;
        if (KW == 1 && sw == 2) return fwd_row_4_1_2;
        return fwd_row_4_0_0;
    }
    if (KW == 3 && sw == 1) return fwd_row_1_3_1;
    if (KW == 3 && sw == 2) return fwd_row_1_3_2;
    return fwd_row_1_0_0;
}

/* Split over (n, group, block of output channels, output row). */
void conv_direct_fwd(const float *x, const float *w, const float *bias, float *y, const conv2d_params_t *p)
{
    const int G = p->groups, Cg = p->C / G, Kg = p->K / G;
    const int kblocks = (Kg + CONV_BLOCK - 1) / CONV_BLOCK;
    const int sh = p->stride_h, sw = p->stride_w;
    fwd_row_t t;
    t.cin = Cg;
    t.x_plane = p->H * p->W;
    t.W = p->W;
    t.w_c = p->KH * p->KW;
    t.w_k = Cg * t.w_c;
    t.KW = p->KW;
    t.y_plane = p->OH * p->OW;
    t.sw = sw;
    t.pl = p->pad_left;
    t.OW = p->OW;
    t.ow_a = tk_min(tk_max(tk_ceil_div(p->pad_left, sw), 0), p->OW);
    t.ow_b = tk_min(tk_max(tk_floor_div(p->W + p->pad_left - p->KW, sw) + 1, t.ow_a), p->OW);
    const fwd_row_fn row4 = fwd_row_pick(1, p->KW, sw);
    const fwd_row_fn row1 = fwd_row_pick(0, p->KW, sw);

    int first, end;
    rt_chunk(p->N * G * kblocks * p->OH, &first, &end);
    for (int item = first; item < end; item++) {
        const int oh = item % p->OH;
        int rest = item / p->OH;
        const int kb = rest % kblocks;
        rest /= kblocks;
        const int g = rest % G;
        const int n = rest / G;
        const int k0 = g * Kg + kb * CONV_BLOCK;
        const int nk = tk_min(CONV_BLOCK, Kg - kb * CONV_BLOCK);
        const int ih0 = oh * sh - p->pad_top;
        const int kh_lo = tk_max(0, -ih0);
        t.nkh = tk_max(0, tk_min(p->KH, p->H - ih0) - kh_lo);
        t.x = x + ((size_t)(n * p->C + g * Cg) * p->H + (t.nkh ? ih0 + kh_lo : 0)) * p->W;
        t.w = w + ((size_t)k0 * Cg * p->KH + kh_lo) * p->KW;
        t.bias = bias ? bias + k0 : NULL;
        t.y = y + ((size_t)(n * p->K + k0) * p->OH + oh) * p->OW;
        if (nk == CONV_BLOCK) {
            row4(&t);
        } else {
            for (int i = 0; i < nk; i++) {
                row1(&t);
                t.w += t.w_k;
                t.y += t.y_plane;
                if (t.bias) t.bias++;
            }
        }
    }
}
