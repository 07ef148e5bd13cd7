/*
 * 2-D convolution: forward, gradient w.r.t. the input, gradient w.r.t. the weights, bias gradient.
 *
 * All three are direct loops (no im2col buffer) built from one idea: a micro-kernel keeps a block of
 * outputs in registers (up to 4 channels x 4 pixels of one row) so that every loaded input value feeds
 * several multiply-accumulates, and runs only where no window crosses the image border, so its loops
 * carry no bounds checks. The few border pixels of a row go through a per-pixel path with clipped
 * kernel ranges. Kernel rows outside the image are clipped once per output row.
 *
 * The micro-kernels are written once with `const int` shape parameters (channels per block, pixels per
 * block, kernel width, stride) and instantiated for the common cases (3x3 and 1x1 kernels, stride 1
 * and 2) plus a generic case where the width and stride are runtime values.
 *
 * Narrow images (DS-CNN: 25x5) leave row-sized blocks little to do, so three shapes have their own
 * paths: depthwise 3x3 walks vertical strips of a channel plane with the kernel in registers;
 * width-4 stride-2 kernels (keyword-spotting stems) cover a row with tiles whose end pixels may lose
 * one kernel column at compile time; 1x1 stride-1 convolutions are matrix products over whole planes.
 */
#include <stddef.h>

#include "kernels_internal.h"
#include "tinyodl_kernels.h"
#include "tinyodl_rt.h"

/* Channels of a register block. */
#define CONV_BLOCK 4

/* ================================ forward ================================ */

/* Pixels per register block: 4 with 4 channels (16 sums), 8 with 1 channel (depthwise). */
#define FWD_PIXELS(NK) ((NK) == 1 ? 8 : 4)

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
#define TILE_PIXELS 5

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

/* The tiles of a row: [a, b) are the pixels whose window lies inside the image columns; the pixel
 * left of them joins the first tile if the border takes only its kernel column 0 (*left), the pixel
 * right of them joins the last tile if it loses only its last column (*right). */
TK_INLINE void tile_span(int a, int b, int OW, int W, int pl, const int KWC, const int SWC, int *left, int *right)
{
    *left = a >= 1 && (a - 1) * SWC - pl == -1 && W >= KWC - 1;
    *right = b < OW && b * SWC - pl >= 0 && W - (b * SWC - pl) == KWC - 1;
}

/* Pixels of the tile starting at ow of the span [m0, m1): all if they fit, else 4. */
TK_INLINE int tile_pixels(int ow, int m1) { return m1 - ow <= TILE_PIXELS ? m1 - ow : 4; }

/* Expands CASE(NP, LO, HI) for every tile shape. A one-pixel tile never has both LO and HI: the
 * pixels left and right of [a, b) differ. */
#define TILE_CASES(CASE)                                                                                \
    CASE(1, 0, 0) CASE(1, 0, 1) CASE(1, 1, 0)                                                          \
    CASE(2, 0, 0) CASE(2, 0, 1) CASE(2, 1, 0) CASE(2, 1, 1)                                            \
    CASE(3, 0, 0) CASE(3, 0, 1) CASE(3, 1, 0) CASE(3, 1, 1)                                            \
    CASE(4, 0, 0) CASE(4, 0, 1) CASE(4, 1, 0) CASE(4, 1, 1)                                            \
    CASE(5, 0, 0) CASE(5, 0, 1) CASE(5, 1, 0) CASE(5, 1, 1)
#define TILE_SHAPE(NP, LO, HI) ((NP) * 4 + (LO) * 2 + (HI))

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

/* ================================ depthwise 3x3 ================================ */

/* Depthwise 3x3 (one input channel per output channel) has too little work per pixel for the block
 * machinery above, and its planes are often narrow (DS-CNN: 25x5), where per-row overhead dominates.
 * The output columns are cut into vertical strips of up to 5 pixels (a whole row of a narrow plane),
 * each one function call that keeps the 9 weights (or the 9 weight-gradient sums) in registers and
 * walks every row the core owns, so dispatch and weight loads are paid per strip, not per row. A
 * strip's first pixel may lose kernel column 0 and its last kernel column 2 to the image border
 * (padding 1): that is fixed at compile time, so the pixels next to the border need no checks; other
 * border pixels are strips of one pixel with their kernel columns fixed likewise. Rows whose window
 * crosses the top or bottom edge (after the others, in one shared loop) test each kernel row once.
 * An output pixel sums bias, kernel rows, kernel columns in order; a weight-gradient sum is reduced
 * by one core over strips, batch, rows, pixels in an order that depends on the shape alone. */
typedef struct {
    const float *x;  /* forward: input plane; weight gradient: x of (n = 0, input channel) */
    const float *dy; /* weight gradient: dy of (n = 0, output channel) */
    float *y;        /* forward: output plane */
    const float *w;  /* forward: the 9 weights, already rotated for the input gradient */
    float bias;
    int N, x_batch, dy_batch;
    int H, W, OW, sh, pt;
    int oh0, oh1;    /* output rows of this call */
    int ha, hb;      /* [ha, hb): output rows whose window lies inside the image rows */
} dw_plane_t;

/* A strip of NP pixels from output column ow, stride SW: pixel j reads input columns
 * col + j * SW + kw, kw in [LO, 3) for the first pixel, [0, 3 - HI) for the last, [0, 3) between.
 * acc: the 9 weight-gradient sums (unused by the forward strips). */
typedef void (*dw_strip_fn)(const dw_plane_t *t, int ow, int col, float acc[9]);

#define DW_KLO(j, LO) ((j) == 0 ? (LO) : 0)
#define DW_KHI(j, NP, HI) ((j) == (NP) - 1 ? 3 - (HI) : 3)
/* A strip reads input columns col + [LO, DW_COLS). */
#define DW_COLS(NP, SW, HI) (((NP) - 1) * (SW) + 3 - (HI))
#define DW_MAX_COLS 9 /* DW_COLS(4, 2, 0) */

/* xv[c] = input column col + c of one row, c in [LO, DW_COLS); xr points at column col + LO. */
TK_INLINE void dw_load_cols(float xv[], const float *restrict xr, const int NP, const int SW, const int LO,
                            const int HI)
{
    TK_UNROLL for (int c = LO; c < DW_COLS(NP, SW, HI); c++) xv[c] = xr[c - LO];
}

/* acc[j] += sum over the pixel's kernel columns kw of wr[kw] * x[col + j * SW + kw], one input row. */
TK_INLINE void dw_fwd_taps(float acc[], const float *restrict xr, const float wr[3], const int NP, const int SW,
                           const int LO, const int HI)
{
    float xv[DW_MAX_COLS];
    dw_load_cols(xv, xr, NP, SW, LO, HI);
    TK_UNROLL for (int kw = 0; kw < 3; kw++) {
        TK_UNROLL for (int j = 0; j < NP; j++) {
            if (kw >= DW_KLO(j, LO) && kw < DW_KHI(j, NP, HI)) TK_MAC(acc[j], wr[kw], xv[j * SW + kw]);
        }
    }
}

/* One output row whose window crosses the top or bottom image edge: only kernel rows inside. */
TK_INLINE void dw_fwd_clipped_row(const dw_plane_t *t, const float wv[9], int oh, int ow, int col, const int NP,
                                  const int SW, const int LO, const int HI)
{
    const int ih0 = oh * t->sh - t->pt;
    const int klo = tk_max(0, -ih0), khi = tk_min(3, t->H - ih0);
    float acc[5];
    TK_UNROLL for (int j = 0; j < NP; j++) acc[j] = t->bias;
    TK_UNROLL for (int kh = 0; kh < 3; kh++) {
        if (kh >= klo && kh < khi)
            dw_fwd_taps(acc, t->x + (size_t)(ih0 + kh) * t->W + col + LO, wv + kh * 3, NP, SW, LO, HI);
    }
    float *restrict y = t->y + (size_t)oh * t->OW + ow;
    TK_UNROLL for (int j = 0; j < NP; j++) y[j] = acc[j];
}

TK_INLINE void dw_fwd_strip(const dw_plane_t *t, int ow, int col, const int NP, const int SW, const int LO,
                            const int HI)
{
    float wv[9];
    TK_UNROLL for (int i = 0; i < 9; i++) wv[i] = t->w[i];
    const int W = t->W, OW = t->OW, oh1 = t->oh1;
    const int e1 = tk_min(tk_max(t->ha, t->oh0), oh1), e2 = tk_min(tk_max(t->hb, e1), oh1);
    if (e1 < e2) {
        const float bias = t->bias;
        const int x_step = t->sh * W;
        const float *restrict x0 = t->x + (size_t)(e1 * t->sh - t->pt) * W + col + LO;
        const float *restrict x1 = x0 + W;
        const float *restrict x2 = x1 + W;
        float *restrict y = t->y + (size_t)e1 * OW + ow;
        for (int oh = e1; oh < e2; oh++) {
            float acc[5];
            TK_UNROLL for (int j = 0; j < NP; j++) acc[j] = bias;
            dw_fwd_taps(acc, x0, wv, NP, SW, LO, HI);
            dw_fwd_taps(acc, x1, wv + 3, NP, SW, LO, HI);
            dw_fwd_taps(acc, x2, wv + 6, NP, SW, LO, HI);
            TK_UNROLL for (int j = 0; j < NP; j++) y[j] = acc[j];
            x0 += x_step;
            x1 += x_step;
            x2 += x_step;
            TK_OPAQUE(x0);
            TK_OPAQUE(x1);
            TK_OPAQUE(x2);
            y += OW;
        }
    }
    for (int oh = t->oh0; oh < oh1; oh++) {
        if (oh == e1) oh = e2;
        if (oh >= oh1) break;
        dw_fwd_clipped_row(t, wv, oh, ow, col, NP, SW, LO, HI);
    }
}

/* a[kh * 3 + kw] += sum over the pixels j of dv[j] * x[col + j * SW + kw], one input row. */
TK_INLINE void dw_gw_taps(float a[9], const float dv[], const float *restrict xr, const int kh, const int NP,
                          const int SW, const int LO, const int HI)
{
    float xv[DW_MAX_COLS];
    dw_load_cols(xv, xr, NP, SW, LO, HI);
    TK_UNROLL for (int j = 0; j < NP; j++) {
        TK_UNROLL for (int kw = 0; kw < 3; kw++) {
            if (kw >= DW_KLO(j, LO) && kw < DW_KHI(j, NP, HI)) TK_MAC(a[kh * 3 + kw], dv[j], xv[j * SW + kw]);
        }
    }
}

TK_INLINE void dw_gw_clipped_row(const dw_plane_t *t, float a[9], const float *xp, const float *dp, int oh,
                                 const int NP, const int SW, const int LO, const int HI)
{
    const int ih0 = oh * t->sh - t->pt;
    const int klo = tk_max(0, -ih0), khi = tk_min(3, t->H - ih0);
    float dv[5];
    TK_UNROLL for (int j = 0; j < NP; j++) dv[j] = dp[(size_t)oh * t->OW + j];
    TK_UNROLL for (int kh = 0; kh < 3; kh++) {
        if (kh >= klo && kh < khi) dw_gw_taps(a, dv, xp + (size_t)(ih0 + kh) * t->W, kh, NP, SW, LO, HI);
    }
}

TK_INLINE void dw_gw_strip(const dw_plane_t *t, int ow, int col, float acc[9], const int NP, const int SW,
                           const int LO, const int HI)
{
    float a[9];
    TK_UNROLL for (int i = 0; i < 9; i++) a[i] = acc[i];
    const int W = t->W, OW = t->OW, oh1 = t->oh1, x_step = t->sh * W;
    const int e1 = tk_min(tk_max(t->ha, t->oh0), oh1), e2 = tk_min(tk_max(t->hb, e1), oh1);
    for (int n = 0; n < t->N; n++) {
        const float *xp = t->x + (size_t)n * t->x_batch + col + LO;
        const float *dp = t->dy + (size_t)n * t->dy_batch + ow;
        if (e1 < e2) {
            const float *restrict x0 = xp + (size_t)(e1 * t->sh - t->pt) * W;
            const float *restrict x1 = x0 + W;
            const float *restrict x2 = x1 + W;
            const float *restrict d = dp + (size_t)e1 * OW;
            for (int oh = e1; oh < e2; oh++) {
                float dv[5];
                TK_UNROLL for (int j = 0; j < NP; j++) dv[j] = d[j];
                dw_gw_taps(a, dv, x0, 0, NP, SW, LO, HI);
                dw_gw_taps(a, dv, x1, 1, NP, SW, LO, HI);
                dw_gw_taps(a, dv, x2, 2, NP, SW, LO, HI);
                x0 += x_step;
                x1 += x_step;
                x2 += x_step;
                TK_OPAQUE(x0);
                TK_OPAQUE(x1);
                TK_OPAQUE(x2);
                d += OW;
            }
        }
        for (int oh = t->oh0; oh < oh1; oh++) {
            if (oh == e1) oh = e2;
            if (oh >= oh1) break;
            dw_gw_clipped_row(t, a, xp, dp, oh, NP, SW, LO, HI);
        }
    }
    TK_UNROLL for (int i = 0; i < 9; i++) acc[i] = a[i];
}

#define DW_STRIP_VARIANT(NP, SW, LO, HI)                                                                \
    static void dw_fwd_##NP##_##SW##_##LO##_##HI(const dw_plane_t *t, int ow, int col, float acc[9])   \
    {                                                                                                   \
        (void)acc;                                                                                      \
        dw_fwd_strip(t, ow, col, NP, SW, LO, HI);                                                       \
    }                                                                                                   \
    static void dw_gw_##NP##_##SW##_##LO##_##HI(const dw_plane_t *t, int ow, int col, float acc[9])    \
    {                                                                                                   \
        dw_gw_strip(t, ow, col, acc, NP, SW, LO, HI);                                                   \
    }
#define DW_STRIP_VARIANTS(NP, SW)                                                                       \
    DW_STRIP_VARIANT(NP, SW, 0, 0)                                                                      \
    DW_STRIP_VARIANT(NP, SW, 0, 1)                                                                      \
    DW_STRIP_VARIANT(NP, SW, 1, 0)                                                                      \
    DW_STRIP_VARIANT(NP, SW, 1, 1)
/* Single pixels with every range of kernel columns a border can leave; strips of 2..5 (stride 1)
 * or 2..4 (stride 2) pixels. */
DW_STRIP_VARIANTS(1, 1)
DW_STRIP_VARIANT(1, 1, 0, 2)
DW_STRIP_VARIANT(1, 1, 2, 0)
DW_STRIP_VARIANTS(2, 1)
DW_STRIP_VARIANTS(3, 1)
DW_STRIP_VARIANTS(4, 1)
DW_STRIP_VARIANTS(5, 1)
DW_STRIP_VARIANTS(2, 2)
DW_STRIP_VARIANTS(3, 2)
DW_STRIP_VARIANTS(4, 2)

/* Forward pixel whose window misses the image columns entirely: bias only. */
static void dw_fwd_bias_column(const dw_plane_t *t, int ow, int col, float acc[9])
{
    (void)col;
    (void)acc;
    for (int oh = t->oh0; oh < t->oh1; oh++) t->y[(size_t)oh * t->OW + ow] = t->bias;
}

#define DW_MAX_NP(sw) ((sw) == 1 ? 5 : (sw) == 2 ? 4 : 1)

typedef struct {
    dw_strip_fn pixel[3][3];       /* [LO][HI], LO + HI < 3: one pixel */
    dw_strip_fn strip[2][4][2][2]; /* [SW - 1][NP - 2][LO][HI], 2 <= NP <= DW_MAX_NP(SW) */
    dw_strip_fn empty;             /* a pixel without kernel columns inside the image, or NULL */
} dw_strips_t;

#define DW_LOHI(KIND, NP, SW)                                                                           \
    {{KIND##_##NP##_##SW##_0_0, KIND##_##NP##_##SW##_0_1}, {KIND##_##NP##_##SW##_1_0, KIND##_##NP##_##SW##_1_1}}
#define DW_STRIPS(KIND, EMPTY)                                                                          \
    {{{KIND##_1_1_0_0, KIND##_1_1_0_1, KIND##_1_1_0_2}, {KIND##_1_1_1_0, KIND##_1_1_1_1, NULL},         \
      {KIND##_1_1_2_0, NULL, NULL}},                                                                    \
     {{DW_LOHI(KIND, 2, 1), DW_LOHI(KIND, 3, 1), DW_LOHI(KIND, 4, 1), DW_LOHI(KIND, 5, 1)},             \
      {DW_LOHI(KIND, 2, 2), DW_LOHI(KIND, 3, 2), DW_LOHI(KIND, 4, 2), {{NULL, NULL}, {NULL, NULL}}}},   \
     EMPTY}
static const dw_strips_t dw_fwd_strips = DW_STRIPS(dw_fwd, dw_fwd_bias_column);
static const dw_strips_t dw_gw_strips = DW_STRIPS(dw_gw, NULL);

/* The pixel at output column ow alone, its kernel columns clipped to the image. */
static void dw_run_pixel(const dw_plane_t *t, const dw_strips_t *s, int ow, int col, float acc[9])
{
    const int lo = tk_max(0, -col), hi = tk_min(3, t->W - col);
    if (lo < hi)
        s->pixel[lo][3 - hi](t, ow, col, acc);
    else if (s->empty)
        s->empty(t, ow, col, acc);
}

/* Covers output columns [0, OW) of the rows of t with strips, left to right. */
static void dw_run_strips(const dw_plane_t *t, const dw_strips_t *s, int sw, int pl, float acc[9])
{
    const int OW = t->OW, W = t->W, max_np = DW_MAX_NP(sw);
    /* [a, b): pixels whose window lies inside the image columns. */
    const int a = tk_min(tk_max(tk_ceil_div(pl, sw), 0), OW);
    const int b = tk_min(tk_max(tk_floor_div(W + pl - 3, sw) + 1, a), OW);
    /* The pixel left of them joins the first strip if the border cuts off only its kernel column 0,
     * the pixel right of them joins the last strip if it loses only kernel column 2. */
    const int left = max_np > 1 && a >= 1 && (a - 1) * sw - pl == -1 && W >= 2;
    const int right = max_np > 1 && b < OW && b * sw - pl >= 0 && W - (b * sw - pl) == 2;
    const int m0 = a - left, m1 = b + right;
    for (int ow = 0; ow < m0; ow++) dw_run_pixel(t, s, ow, ow * sw - pl, acc);
    for (int ow = m0; ow < m1;) {
        const int np = m1 - ow <= max_np ? m1 - ow : tk_min(max_np, 4);
        if (np == 1)
            dw_run_pixel(t, s, ow, ow * sw - pl, acc);
        else
            s->strip[sw - 1][np - 2][left && ow == m0][right && ow + np == m1](t, ow, ow * sw - pl, acc);
        ow += np;
    }
    for (int ow = m1; ow < OW; ow++) dw_run_pixel(t, s, ow, ow * sw - pl, acc);
}

static void dw_plane_setup(dw_plane_t *t, const conv2d_params_t *p)
{
    t->N = p->N;
    t->x_batch = p->C * p->H * p->W;
    t->dy_batch = p->K * p->OH * p->OW;
    t->H = p->H;
    t->W = p->W;
    t->OW = p->OW;
    t->sh = p->stride_h;
    t->pt = p->pad_top;
    t->ha = tk_min(tk_max(tk_ceil_div(p->pad_top, p->stride_h), 0), p->OH);
    t->hb = tk_min(tk_max(tk_floor_div(p->H + p->pad_top - 3, p->stride_h) + 1, t->ha), p->OH);
}

/* Depthwise 3x3 forward, multiplier K / C, any strides and pads. With flip the kernel is read rotated
 * by 180 degrees: the input gradient of a stride-1 depthwise convolution is this convolution of dy.
 * Split over (n, channel, output row); a core's consecutive rows of one channel are one band. */
static void dw_conv3x3_fwd(const float *x, const float *w, const float *bias, float *y, const conv2d_params_t *p,
                           int flip)
{
    const int mult = p->K / p->C;
    dw_plane_t t;
    dw_plane_setup(&t, p);
    int first, end;
    rt_chunk(p->N * p->K * p->OH, &first, &end);
    for (int item = first; item < end;) {
        const int plane = item / p->OH, n = plane / p->K, k = plane % p->K;
        const float *wk = w + (size_t)k * 9;
        float wv[9];
        for (int i = 0; i < 9; i++) wv[i] = wk[flip ? 8 - i : i];
        t.w = wv;
        t.x = x + ((size_t)n * p->C + k / mult) * p->H * p->W;
        t.y = y + (size_t)plane * p->OH * p->OW;
        t.bias = bias ? bias[k] : 0.0f;
        t.oh0 = item % p->OH;
        t.oh1 = tk_min(p->OH, t.oh0 + end - item);
        dw_run_strips(&t, &dw_fwd_strips, p->stride_w, p->pad_left, NULL);
        item += t.oh1 - t.oh0;
    }
}

/* Depthwise 3x3 weight gradient: split over output channels, each summed over the batch and all
 * output rows by one core. */
static void dw_conv3x3_grad_weight(const float *x, const float *dy, float *dw, const conv2d_params_t *p)
{
    const int mult = p->K / p->C;
    dw_plane_t t;
    dw_plane_setup(&t, p);
    t.oh0 = 0;
    t.oh1 = p->OH;
    int first, end;
    rt_chunk(p->K, &first, &end);
    for (int k = first; k < end; k++) {
        t.x = x + (size_t)(k / mult) * p->H * p->W;
        t.dy = dy + (size_t)k * p->OH * p->OW;
        float acc[9] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        dw_run_strips(&t, &dw_gw_strips, p->stride_w, p->pad_left, acc);
        for (int i = 0; i < 9; i++) dw[(size_t)k * 9 + i] = acc[i];
    }
}

/* ============================ 1x1 kernels on whole planes ============================ */

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

static int conv_is_flat(const conv2d_params_t *p)
{
    return p->KH == 1 && p->KW == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_top == 0 &&
           p->pad_left == 0 && p->OH == p->H && p->OW == p->W;
}

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
static void pw_product(const float *w, const float *b, const float *bias, float *out, const conv2d_params_t *p,
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

/* ========================= forward: dispatch, dense row loop ========================= */

void conv2d_fwd(const float *x, const float *w, const float *bias, float *y, const conv2d_params_t *p)
{
    const int G = p->groups, Cg = p->C / G, Kg = p->K / G;
    const int kblocks = (Kg + CONV_BLOCK - 1) / CONV_BLOCK;
    const int sh = p->stride_h, sw = p->stride_w;
    if (Cg == 1 && p->KH == 3 && p->KW == 3) {
        dw_conv3x3_fwd(x, w, bias, y, p, 0);
        return;
    }
    if (conv_is_flat(p)) {
        pw_product(w, x, bias, y, p, 0);
        return;
    }
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

/* ============================= gradient w.r.t. the input ============================= */

/* dx[c, ih, iw] = sum over k, kh, kw of dy[k, oh, ow] * w[k, c, kh, kw] where ih = oh*sh + kh - pt and
 * iw = ow*sw + kw - pl. For one input row the valid kh are every sh-th from kh0; for input columns of
 * one phase (iw = phase + m*sw) the valid kw are every sw-th from kw0, and pixel m of the phase meets
 * dy column ow = m + base - t for its t-th valid kw. Neighbouring pixels of a phase therefore read
 * neighbouring dy values, which is what the register block exploits. */
typedef struct {
    const float *dy; /* dy at (n, first output channel of the group, oh of the first valid kh, 0) */
    const float *w;  /* w at (first output channel of the group, first input channel, kh0, kw0) */
    float *dx;       /* dx at (n, first input channel, ih, phase) */
    int kout;        /* output channels of the group */
    int nkh;         /* valid kernel rows */
    int dy_plane, OW;
    int w_k;         /* w stride between output channels */
    int w_c;         /* w stride between input channels */
    int w_kh;        /* w step between successive valid kernel rows: sh * KW */
    int x_plane;
    int sw;
    int nkw, base;   /* valid kernel columns of the phase and dy column of pixel 0, first kw */
    int M;           /* pixels of the phase in the row */
    int m_a, m_b;    /* [m_a, m_b): pixels for which every valid kw meets a dy column */
} gin_row_t;

/* acc[i][j] += sum over k, valid kh, valid kw (t-th) of dyc[k*dy_plane - kh*OW + j - t] * w[...].
 * With KC (square kernel) and SC (equal strides) constant, NKH and NKW are constants too and every
 * weight sits at a constant offset from one pointer; otherwise the loops are generic. */
TK_INLINE void gin_accumulate(const gin_row_t *t, float acc[][8], const float *dyc, int t_lo, int t_hi,
                              const int NC, const int NP, const int KC, const int SC, const int NKH,
                              const int NKW)
{
    const int kout = t->kout, OW = t->OW, dy_plane = t->dy_plane, w_k = t->w_k;
    const float *restrict dp = dyc;
    const float *restrict wc = t->w;
    if (KC) {
        for (int k = 0; k < kout; k++) {
            TK_UNROLL for (int kh = 0; kh < NKH; kh++) {
                const float *restrict dyr = dp - kh * OW;
                TK_UNROLL for (int tk = 0; tk < NKW; tk++) {
                    float dv[8];
                    TK_UNROLL for (int j = 0; j < NP; j++) dv[j] = dyr[j - tk];
                    TK_UNROLL for (int i = 0; i < NC; i++) {
                        const float wv = wc[i * KC * KC + kh * SC * KC + tk * SC];
                        TK_UNROLL for (int j = 0; j < NP; j++) TK_MAC(acc[i][j], wv, dv[j]);
                    }
                }
            }
            dp += dy_plane;
            wc += w_k;
        }
        return;
    }
    const int nkh = t->nkh, w_c = t->w_c, w_kh = t->w_kh, sw = t->sw;
    for (int k = 0; k < kout; k++) {
        const float *restrict dyr = dp;
        const float *restrict wr = wc;
        for (int kh = 0; kh < nkh; kh++) {
            for (int tk = t_lo; tk < t_hi; tk++) {
                float dv[8];
                TK_UNROLL for (int j = 0; j < NP; j++) dv[j] = dyr[j - tk];
                TK_UNROLL for (int i = 0; i < NC; i++) {
                    const float wv = wr[i * w_c + tk * sw];
                    TK_UNROLL for (int j = 0; j < NP; j++) TK_MAC(acc[i][j], wv, dv[j]);
                }
            }
            dyr -= OW;
            wr += w_kh;
        }
        dp += dy_plane;
        wc += w_k;
    }
}

/* NP pixels of the phase from m on (interior: all valid kw meet dy), or one border pixel (NP == 1)
 * whose valid kw are [t_lo, t_hi). */
TK_INLINE void gin_pixels(const gin_row_t *t, int m, int t_lo, int t_hi, const int NC, const int NP, const int KC,
                          const int SC, const int NKH, const int NKW)
{
    float acc[CONV_BLOCK][8];
    TK_UNROLL for (int i = 0; i < NC; i++) {
        TK_UNROLL for (int j = 0; j < NP; j++) acc[i][j] = 0.0f;
    }
    const float *dyc = t->dy + m + t->base;
    if (KC && t_lo == 0 && t_hi == NKW)
        gin_accumulate(t, acc, dyc, t_lo, t_hi, NC, NP, KC, SC, NKH, NKW);
    else
        gin_accumulate(t, acc, dyc, t_lo, t_hi, NC, NP, 0, 0, 0, 0);
    const int sw = SC ? SC : t->sw;
    float *restrict dx = t->dx + m * sw;
    TK_UNROLL for (int i = 0; i < NC; i++) {
        TK_UNROLL for (int j = 0; j < NP; j++) dx[i * t->x_plane + j * sw] = acc[i][j];
    }
}

TK_INLINE void gin_row(const gin_row_t *t, const int NC, const int KC, const int SC, const int NKH, const int NKW)
{
    const int a = t->m_a, b = t->m_b, nkw = t->nkw, NPMAX = FWD_PIXELS(NC);
    if (t->nkh == 0 || nkw == 0) {
        /* No kernel tap reaches this row / phase (stride larger than the kernel, or padding). */
        for (int i = 0; i < NC; i++)
            for (int m = 0; m < t->M; m++) t->dx[i * t->x_plane + m * t->sw] = 0.0f;
        return;
    }
    for (int m = 0; m < a; m++) {
        const int col = m + t->base;
        gin_pixels(t, m, tk_max(0, col - t->OW + 1), tk_min(nkw, col + 1), NC, 1, KC, SC, NKH, NKW);
    }
    int m = a;
    for (; m + NPMAX <= b; m += NPMAX) gin_pixels(t, m, 0, nkw, NC, NPMAX, KC, SC, NKH, NKW);
    if (NPMAX > 4 && m + 4 <= b) {
        gin_pixels(t, m, 0, nkw, NC, 4, KC, SC, NKH, NKW);
        m += 4;
    }
    if (m + 2 <= b) {
        gin_pixels(t, m, 0, nkw, NC, 2, KC, SC, NKH, NKW);
        m += 2;
    }
    if (m < b) gin_pixels(t, m, 0, nkw, NC, 1, KC, SC, NKH, NKW);
    for (m = b; m < t->M; m++) {
        const int col = m + t->base;
        gin_pixels(t, m, tk_max(0, col - t->OW + 1), tk_min(nkw, col + 1), NC, 1, KC, SC, NKH, NKW);
    }
}

typedef void (*gin_row_fn)(const gin_row_t *t);

/* Instantiations: square kernel KC, equal strides SC, NKH valid kernel rows, NKW valid columns. */
#define GIN_ROW_VARIANT(NC, KC, SC, NKH, NKW)                                                           \
    static void gin_row_##NC##_##KC##_##SC##_##NKH##_##NKW(const gin_row_t *t)                         \
    {                                                                                                   \
        gin_row(t, NC, KC, SC, NKH, NKW);                                                               \
    }
#define GIN_ROW_VARIANTS(NC)                                                                            \
    GIN_ROW_VARIANT(NC, 3, 1, 3, 3)                                                                     \
    GIN_ROW_VARIANT(NC, 3, 1, 2, 3)                                                                     \
    GIN_ROW_VARIANT(NC, 3, 2, 1, 1)                                                                     \
    GIN_ROW_VARIANT(NC, 3, 2, 1, 2)                                                                     \
    GIN_ROW_VARIANT(NC, 3, 2, 2, 1)                                                                     \
    GIN_ROW_VARIANT(NC, 3, 2, 2, 2)                                                                     \
    GIN_ROW_VARIANT(NC, 0, 0, 0, 0)
GIN_ROW_VARIANTS(4)
GIN_ROW_VARIANTS(1)
GIN_ROW_VARIANT(4, 1, 1, 1, 1)
GIN_ROW_VARIANT(4, 1, 2, 1, 1)

static gin_row_fn gin_row_pick(int four_channels, const conv2d_params_t *p, int nkh, int nkw)
{
    const int KC = p->KH == p->KW ? p->KH : 0, SC = p->stride_h == p->stride_w ? p->stride_h : 0;
    const int shape = KC * 1000 + SC * 100 + nkh * 10 + nkw;
#define GIN_CASE(NC, KC, SC, NKH, NKW)                                                                  \
    case KC * 1000 + SC * 100 + NKH * 10 + NKW: return gin_row_##NC##_##KC##_##SC##_##NKH##_##NKW;
    if (four_channels) {
        switch (shape) {
            GIN_CASE(4, 3, 1, 3, 3)
            GIN_CASE(4, 3, 1, 2, 3)
            GIN_CASE(4, 3, 2, 1, 1)
            GIN_CASE(4, 3, 2, 1, 2)
            GIN_CASE(4, 3, 2, 2, 1)
            GIN_CASE(4, 3, 2, 2, 2)
            GIN_CASE(4, 1, 1, 1, 1)
            GIN_CASE(4, 1, 2, 1, 1)
        default: return gin_row_4_0_0_0_0;
        }
    }
    switch (shape) {
        GIN_CASE(1, 3, 1, 3, 3)
        GIN_CASE(1, 3, 1, 2, 3)
        GIN_CASE(1, 3, 2, 1, 1)
        GIN_CASE(1, 3, 2, 1, 2)
        GIN_CASE(1, 3, 2, 2, 1)
        GIN_CASE(1, 3, 2, 2, 2)
    default: return gin_row_1_0_0_0_0;
    }
#undef GIN_CASE
}

/* Column phases of a row, precomputed for strides up to MAX_PHASES, else computed per row. */
#define MAX_PHASES 4

typedef struct {
    int nkw, base, M, m_a, m_b, kw0;
} gin_phase_t;

static void gin_phase_setup(gin_phase_t *ph, int phase, const conv2d_params_t *p)
{
    const int sw = p->stride_w;
    const int q = phase + p->pad_left;
    ph->kw0 = q % sw;
    ph->nkw = ph->kw0 < p->KW ? (p->KW - 1 - ph->kw0) / sw + 1 : 0;
    ph->base = (q - ph->kw0) / sw;
    ph->M = phase < p->W ? (p->W - phase + sw - 1) / sw : 0;
    ph->m_a = tk_min(tk_max(0, ph->nkw - 1 - ph->base), ph->M);
    ph->m_b = tk_min(tk_max(p->OW - ph->base, ph->m_a), ph->M);
}

/* Depthwise 3x3 stride 2 input gradient (multiplier 1). Pixel m of column phase b (iw = b + 2m) of
 * row ih gathers from at most 2 dy rows x 2 dy columns, with a sub-kernel fixed for the whole
 * (row, phase): ws[i][t] multiplies dy row dr[i] at column m + base - t. */
TK_INLINE float dw_gin_pixel(const float *const dr[2], const float ws[][2], int col, const int NKH, const int NKW)
{
    float acc = 0.0f;
    TK_UNROLL for (int i = 0; i < NKH; i++) {
        TK_UNROLL for (int t = 0; t < NKW; t++) TK_MAC(acc, ws[i][t], dr[i][col - t]);
    }
    return acc;
}

TK_INLINE void dw_gin_phase(const float *const dr[2], const float ws[][2], float *restrict dxr, int M, int base,
                            int OW, const int NKH, const int NKW)
{
    const int a = tk_min(tk_max(0, NKW - 1 - base), M), b = tk_min(tk_max(OW - base, a), M);
    for (int m = 0; m < M; m++) {
        if (m == a && a < b) {
            for (; m + 4 <= b; m += 4) {
                TK_UNROLL for (int j = 0; j < 4; j++) dxr[2 * (m + j)] = dw_gin_pixel(dr, ws, m + j + base, NKH, NKW);
            }
            for (; m < b; m++) dxr[2 * m] = dw_gin_pixel(dr, ws, m + base, NKH, NKW);
            if (m >= M) break;
        }
        float acc = 0.0f;
        const int col = m + base;
        for (int i = 0; i < NKH; i++)
            for (int t = 0; t < NKW; t++)
                if (col - t >= 0 && col - t < OW) TK_MAC(acc, ws[i][t], dr[i][col - t]);
        dxr[2 * m] = acc;
    }
}

typedef void (*dw_gin_fn)(const float *const dr[2], const float ws[][2], float *dxr, int M, int base, int OW);

#define DW_GIN_VARIANT(NKH, NKW)                                                                        \
    static void dw_gin_phase_##NKH##_##NKW(const float *const dr[2], const float ws[][2], float *dxr, int M, \
                                           int base, int OW)                                            \
    {                                                                                                   \
        dw_gin_phase(dr, ws, dxr, M, base, OW, NKH, NKW);                                               \
    }
DW_GIN_VARIANT(1, 1)
DW_GIN_VARIANT(1, 2)
DW_GIN_VARIANT(2, 1)
DW_GIN_VARIANT(2, 2)

static void dw_grad_input_s2(const float *dy, const float *w, float *dx, const conv2d_params_t *p)
{
    static const dw_gin_fn phase_fn[2][2] = {{dw_gin_phase_1_1, dw_gin_phase_1_2}, {dw_gin_phase_2_1, dw_gin_phase_2_2}};
    int first, end;
    rt_chunk(p->N * p->C * p->H, &first, &end);
    for (int item = first; item < end; item++) {
        const int ih = item % p->H, plane = item / p->H, c = plane % p->C;
        const float *wk = w + (size_t)c * 9;
        const float *dyp = dy + (size_t)plane * p->OH * p->OW;
        float *dxr = dx + (size_t)item * p->W;
        /* Kernel rows reaching this row: kh = r - 2*oh with 0 <= oh < OH. */
        const int r = ih + p->pad_top;
        const float *dr[2] = {dyp, dyp};
        int khs[2], nkh = 0;
        for (int kh = r % 2; kh < 3; kh += 2) {
            const int oh = (r - kh) / 2;
            if (kh <= r && oh < p->OH) {
                dr[nkh] = dyp + (size_t)oh * p->OW;
                khs[nkh++] = kh;
            }
        }
        for (int b = 0; b < 2 && b < p->W; b++) {
            const int q = b + p->pad_left, kw0 = q % 2, nkw = kw0 == 0 ? 2 : 1;
            const int M = (p->W - b + 1) / 2;
            if (nkh == 0) {
                for (int m = 0; m < M; m++) dxr[b + 2 * m] = 0.0f;
                continue;
            }
            float ws[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
            for (int i = 0; i < nkh; i++)
                for (int t = 0; t < nkw; t++) ws[i][t] = wk[khs[i] * 3 + kw0 + 2 * t];
            phase_fn[nkh - 1][nkw - 1](dr, ws, dxr + b, M, (q - kw0) / 2, p->OW);
        }
    }
}

void conv2d_grad_input(const float *dy, const float *w, float *dx, const conv2d_params_t *p)
{
    if (p->groups == p->C && p->K == p->C && p->KH == 3 && p->KW == 3 && p->stride_h == 2 && p->stride_w == 2) {
        dw_grad_input_s2(dy, w, dx, p);
        return;
    }
    if (p->groups == p->C && p->K == p->C && p->KH == 3 && p->KW == 3 && p->stride_h == 1 && p->stride_w == 1) {
        /* Depthwise stride 1: dx is the depthwise convolution of dy with the rotated kernel. */
        const conv2d_params_t q = {p->N, p->K, p->OH, p->OW, p->C, 3, 3, p->H, p->W, 1, 1,
                                   2 - p->pad_top, 2 - p->pad_left, 2 - p->pad_bottom, 2 - p->pad_right, p->C};
        if (q.pad_top >= 0 && q.pad_left >= 0) {
            dw_conv3x3_fwd(dy, w, NULL, dx, &q, 1);
            return;
        }
    }
    if (conv_is_flat(p)) {
        pw_product(w, dy, NULL, dx, p, 1);
        return;
    }
    const int G = p->groups, Cg = p->C / G, Kg = p->K / G;
    const int cblocks = (Cg + CONV_BLOCK - 1) / CONV_BLOCK;
    const int sh = p->stride_h, sw = p->stride_w, KH = p->KH, KW = p->KW;
    gin_row_t t;
    t.kout = Kg;
    t.dy_plane = p->OH * p->OW;
    t.OW = p->OW;
    t.w_c = KH * KW;
    t.w_k = Cg * t.w_c;
    t.w_kh = sh * KW;
    t.x_plane = p->H * p->W;
    t.sw = sw;
    gin_phase_t phases[MAX_PHASES];
    const int precomputed = sw <= MAX_PHASES;
    for (int phase = 0; precomputed && phase < sw; phase++) gin_phase_setup(&phases[phase], phase, p);

    int first, end;
    rt_chunk(p->N * G * cblocks * p->H, &first, &end);
    for (int item = first; item < end; item++) {
        const int ih = item % p->H;
        int rest = item / p->H;
        const int cb = rest % cblocks;
        rest /= cblocks;
        const int g = rest % G;
        const int n = rest / G;
        const int c0 = g * Cg + cb * CONV_BLOCK;
        const int nc = tk_min(CONV_BLOCK, Cg - cb * CONV_BLOCK);
        /* Valid kernel rows: kh = r - oh*sh with 0 <= kh < KH and 0 <= oh < OH. */
        const int r = ih + p->pad_top;
        const int kh_lo = tk_max(0, r - (p->OH - 1) * sh), kh_hi = tk_min(KH - 1, r);
        int kh0 = 0;
        t.nkh = 0;
        if (kh_lo <= kh_hi) {
            kh0 = kh_lo + (r - kh_lo) % sh;
            t.nkh = kh0 <= kh_hi ? (kh_hi - kh0) / sh + 1 : 0;
        }
        const int oh0 = t.nkh ? (r - kh0) / sh : 0;
        for (int phase = 0; phase < sw && phase < p->W; phase++) {
            gin_phase_t local;
            const gin_phase_t *ph = &local;
            if (precomputed)
                ph = &phases[phase];
            else
                gin_phase_setup(&local, phase, p);
            t.nkw = ph->nkw;
            t.base = ph->base;
            t.M = ph->M;
            t.m_a = ph->m_a;
            t.m_b = ph->m_b;
            t.dy = dy + ((size_t)(n * p->K + g * Kg) * p->OH + oh0) * p->OW;
            t.w = w + (((size_t)g * Kg * Cg + cb * CONV_BLOCK) * KH + kh0) * KW + (t.nkw ? ph->kw0 : 0);
            t.dx = dx + ((size_t)(n * p->C + c0) * p->H + ih) * p->W + phase;
            if (nc == CONV_BLOCK) {
                gin_row_pick(1, p, t.nkh, t.nkw)(&t);
            } else {
                const gin_row_fn row1 = gin_row_pick(0, p, t.nkh, t.nkw);
                for (int i = 0; i < nc; i++) {
                    row1(&t);
                    t.w += t.w_c;
                    t.dx += t.x_plane;
                }
            }
        }
    }
}

/* ============================= gradient w.r.t. the weights ============================= */

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
 * (fwd_row_tiles): the weight gradient walks the same tiles, each over all rows, with the 4 channels
 * x 4 kernel columns of sums in registers. */
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

/* Output rows whose input row oh*sh + kh - pt lies in [0, H): [*lo, *hi). */
static void gw_valid_rows(const conv2d_params_t *p, int kh, int *lo, int *hi)
{
    const int sh = p->stride_h;
    *lo = tk_min(tk_max(tk_ceil_div(p->pad_top - kh, sh), 0), p->OH);
    *hi = tk_min(tk_max(tk_floor_div(p->H - 1 + p->pad_top - kh, sh) + 1, *lo), p->OH);
}

static void conv2d_grad_weight_1x1(const float *x, const float *dy, float *dw, const conv2d_params_t *p)
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
    gw_valid_rows(p, 0, &oh_lo, &oh_hi);
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

void conv2d_grad_weight(const float *x, const float *dy, float *dw, const conv2d_params_t *p)
{
    if (p->KH == 1 && p->KW == 1) {
        conv2d_grad_weight_1x1(x, dy, dw, p);
        return;
    }
    if (p->groups == p->C && p->KH == 3 && p->KW == 3) {
        dw_conv3x3_grad_weight(x, dy, dw, p);
        return;
    }
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
        gw_valid_rows(p, kh, &oh_lo, &oh_hi);
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

void channel_sum(const float *dy, float *out, int N, int K, int plane)
{
    int first, end;
    rt_chunk(K, &first, &end);
    for (int k = first; k < end; k++) {
        float sum = 0.0f;
        for (int n = 0; n < N; n++) {
            const float *d = dy + ((size_t)n * K + k) * plane;
            for (int i = 0; i < plane; i++) sum += d[i];
        }
        out[k] = sum;
    }
}
