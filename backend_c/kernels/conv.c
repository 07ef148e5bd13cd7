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
 */
#include <stddef.h>

#include "kernels_internal.h"
#include "tinyodl_kernels.h"
#include "tinyodl_rt.h"

/* Channels of a register block. */
#define CONV_BLOCK 4

/* ================================ forward ================================ */

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

/* One kernel tap for the register block: NP input values (stride sw) times NK weights (stride w_k). */
TK_INLINE void fwd_tap(float acc[][4], const float *restrict xr, const float *restrict wr, int w_k, int sw,
                       const int NK, const int NP)
{
    float xv[4];
    TK_UNROLL for (int j = 0; j < NP; j++) xv[j] = xr[j * sw];
    TK_UNROLL for (int i = 0; i < NK; i++) {
        const float wv = wr[i * w_k];
        TK_UNROLL for (int j = 0; j < NP; j++) TK_MAC(acc[i][j], wv, xv[j]);
    }
}

/* NP neighbouring output pixels from ow on (all interior) for NK output channels. */
TK_INLINE void fwd_pixels(const fwd_row_t *t, int ow, const int NK, const int NP, const int KWC, const int SWC)
{
    const int KW = KWC ? KWC : t->KW;
    const int sw = SWC ? SWC : t->sw;
    const int cin = t->cin, nkh = t->nkh, x_plane = t->x_plane, W = t->W;
    const int w_k = t->w_k, w_c = t->w_c;
    float acc[CONV_BLOCK][4];
    TK_UNROLL for (int i = 0; i < NK; i++) {
        const float b = t->bias ? t->bias[i] : 0.0f;
        TK_UNROLL for (int j = 0; j < NP; j++) acc[i][j] = b;
    }
    const float *restrict xc = t->x + ow * sw - t->pl;
    const float *restrict wc = t->w;
    if (KWC && nkh == KWC) {
        /* Square kernel with every row inside the image: the whole window is unrolled. */
        for (int c = 0; c < cin; c++) {
            TK_UNROLL for (int kh = 0; kh < KWC; kh++) {
                TK_UNROLL for (int kw = 0; kw < KWC; kw++)
                    fwd_tap(acc, xc + kh * W + kw, wc + kh * KWC + kw, w_k, sw, NK, NP);
            }
            xc += x_plane;
            wc += w_c;
        }
    }
    for (int c = 0; c < cin && !(KWC && nkh == KWC); c++) {
        const float *restrict xr = xc;
        const float *restrict wr = wc;
        for (int kh = 0; kh < nkh; kh++) {
            if (KWC) {
                TK_UNROLL for (int kw = 0; kw < KWC; kw++) fwd_tap(acc, xr + kw, wr + kw, w_k, sw, NK, NP);
            } else {
                for (int kw = 0; kw < KW; kw++) fwd_tap(acc, xr + kw, wr + kw, w_k, sw, NK, NP);
            }
            xr += W;
            wr += KW;
        }
        xc += x_plane;
        wc += w_c;
    }
    float *restrict y = t->y + ow;
    TK_UNROLL for (int i = 0; i < NK; i++) {
        TK_UNROLL for (int j = 0; j < NP; j++) y[i * t->y_plane + j] = acc[i][j];
    }
}

/* One output pixel whose window crosses the left or right image border. */
TK_INLINE void fwd_border_pixel(const fwd_row_t *t, int ow, const int NK)
{
    const int iw0 = ow * t->sw - t->pl;
    const int kw_lo = tk_max(0, -iw0), kw_hi = tk_min(t->KW, t->W - iw0);
    float acc[CONV_BLOCK];
    TK_UNROLL for (int i = 0; i < NK; i++) acc[i] = t->bias ? t->bias[i] : 0.0f;
    const float *xc = t->x + iw0;
    const float *wc = t->w;
    for (int c = 0; c < t->cin; c++) {
        const float *xr = xc;
        const float *wr = wc;
        for (int kh = 0; kh < t->nkh; kh++) {
            for (int kw = kw_lo; kw < kw_hi; kw++) {
                const float xv = xr[kw];
                TK_UNROLL for (int i = 0; i < NK; i++) TK_MAC(acc[i], wr[i * t->w_k + kw], xv);
            }
            xr += t->W;
            wr += t->KW;
        }
        xc += t->x_plane;
        wc += t->w_c;
    }
    TK_UNROLL for (int i = 0; i < NK; i++) t->y[i * t->y_plane + ow] = acc[i];
}

TK_INLINE void fwd_row(const fwd_row_t *t, const int NK, const int KWC, const int SWC)
{
    const int a = t->ow_a, b = t->ow_b;
    for (int ow = 0; ow < a; ow++) fwd_border_pixel(t, ow, NK);
    int ow = a;
    for (; ow + 4 <= b; ow += 4) fwd_pixels(t, ow, NK, 4, KWC, SWC);
    if (ow + 2 <= b) {
        fwd_pixels(t, ow, NK, 2, KWC, SWC);
        ow += 2;
    }
    if (ow < b) fwd_pixels(t, ow, NK, 1, KWC, SWC);
    for (ow = b; ow < t->OW; ow++) fwd_border_pixel(t, ow, NK);
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
FWD_ROW_VARIANT(1, 1, 1)
FWD_ROW_VARIANT(1, 1, 2)
FWD_ROW_VARIANT(1, 0, 0)

static fwd_row_fn fwd_row_pick(int four_channels, int KW, int sw)
{
    if (four_channels) {
        if (KW == 3 && sw == 1) return fwd_row_4_3_1;
        if (KW == 3 && sw == 2) return fwd_row_4_3_2;
        if (KW == 1 && sw == 1) return fwd_row_4_1_1;
        if (KW == 1 && sw == 2) return fwd_row_4_1_2;
        return fwd_row_4_0_0;
    }
    if (KW == 3 && sw == 1) return fwd_row_1_3_1;
    if (KW == 3 && sw == 2) return fwd_row_1_3_2;
    if (KW == 1 && sw == 1) return fwd_row_1_1_1;
    if (KW == 1 && sw == 2) return fwd_row_1_1_2;
    return fwd_row_1_0_0;
}

void conv2d_fwd(const float *x, const float *w, const float *bias, float *y, const conv2d_params_t *p)
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

/* ============================= gradient w.r.t. the input ============================= */

/* dx[c, ih, iw] = sum over k, kh, kw of dy[k, oh, ow] * w[k, c, kh, kw] where ih = oh*sh + kh - pt and
 * iw = ow*sw + kw - pl. For one input row the valid kh are every sh-th from kh0; for input columns of
 * one phase (iw = phase + m*sw) the valid kw are every sw-th from kw0, and pixel m of the phase meets
 * dy column ow = m + base - t for its t-th valid kw. Neighbouring pixels of a phase therefore read
 * neighbouring dy values, which is what the register block exploits. */
typedef struct {
    const float *dy; /* dy at (n, first output channel of the group, oh of the first valid kh, 0) */
    const float *w;  /* w at (first output channel of the group, first input channel, first valid kh, kw0) */
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

/* One kernel tap: NP neighbouring dy values times NC weights (stride w_c). */
TK_INLINE void gin_tap(float acc[][4], const float *restrict dyr, const float *restrict wr, int w_c, const int NC,
                       const int NP)
{
    float dv[4];
    TK_UNROLL for (int j = 0; j < NP; j++) dv[j] = dyr[j];
    TK_UNROLL for (int i = 0; i < NC; i++) {
        const float wv = wr[i * w_c];
        TK_UNROLL for (int j = 0; j < NP; j++) TK_MAC(acc[i][j], wv, dv[j]);
    }
}

TK_INLINE void gin_pixels(const gin_row_t *t, int m, const int NC, const int NP, const int NKWC, const int SWC)
{
    const int nkw = NKWC ? NKWC : t->nkw;
    const int sw = SWC ? SWC : t->sw;
    const int kout = t->kout, nkh = t->nkh, OW = t->OW, w_c = t->w_c, w_kh = t->w_kh;
    float acc[CONV_BLOCK][4];
    TK_UNROLL for (int i = 0; i < NC; i++) {
        TK_UNROLL for (int j = 0; j < NP; j++) acc[i][j] = 0.0f;
    }
    const float *restrict dyc = t->dy + m + t->base;
    const float *restrict wc = t->w;
    if (NKWC && nkh == NKWC) {
        /* As many valid kernel rows as columns (3x3 stride 1, 1x1, most rows of 3x3 stride 2):
         * the whole set of taps is unrolled. */
        for (int k = 0; k < kout; k++) {
            TK_UNROLL for (int kh = 0; kh < NKWC; kh++) {
                TK_UNROLL for (int tk = 0; tk < NKWC; tk++)
                    gin_tap(acc, dyc - kh * OW - tk, wc + kh * w_kh + tk * sw, w_c, NC, NP);
            }
            dyc += t->dy_plane;
            wc += t->w_k;
        }
    }
    for (int k = 0; k < kout && !(NKWC && nkh == NKWC); k++) {
        const float *restrict dyr = dyc;
        const float *restrict wr = wc;
        for (int kh = 0; kh < nkh; kh++) {
            if (NKWC) {
                TK_UNROLL for (int tk = 0; tk < NKWC; tk++) gin_tap(acc, dyr - tk, wr + tk * sw, w_c, NC, NP);
            } else {
                for (int tk = 0; tk < nkw; tk++) gin_tap(acc, dyr - tk, wr + tk * sw, w_c, NC, NP);
            }
            dyr -= OW;
            wr += w_kh;
        }
        dyc += t->dy_plane;
        wc += t->w_k;
    }
    float *restrict dx = t->dx + m * sw;
    TK_UNROLL for (int i = 0; i < NC; i++) {
        TK_UNROLL for (int j = 0; j < NP; j++) dx[i * t->x_plane + j * sw] = acc[i][j];
    }
}

TK_INLINE void gin_border_pixel(const gin_row_t *t, int m, const int NC)
{
    const int col = m + t->base;
    const int t_lo = tk_max(0, col - t->OW + 1), t_hi = tk_min(t->nkw, col + 1);
    float acc[CONV_BLOCK];
    TK_UNROLL for (int i = 0; i < NC; i++) acc[i] = 0.0f;
    const float *dyc = t->dy + col;
    const float *wc = t->w;
    for (int k = 0; k < t->kout; k++) {
        const float *dyr = dyc;
        const float *wr = wc;
        for (int kh = 0; kh < t->nkh; kh++) {
            for (int tk = t_lo; tk < t_hi; tk++) {
                const float dv = dyr[-tk];
                TK_UNROLL for (int i = 0; i < NC; i++) TK_MAC(acc[i], wr[i * t->w_c + tk * t->sw], dv);
            }
            dyr -= t->OW;
            wr += t->w_kh;
        }
        dyc += t->dy_plane;
        wc += t->w_k;
    }
    TK_UNROLL for (int i = 0; i < NC; i++) t->dx[i * t->x_plane + m * t->sw] = acc[i];
}

TK_INLINE void gin_row(const gin_row_t *t, const int NC, const int NKWC, const int SWC)
{
    const int a = t->m_a, b = t->m_b;
    for (int m = 0; m < a; m++) gin_border_pixel(t, m, NC);
    int m = a;
    for (; m + 4 <= b; m += 4) gin_pixels(t, m, NC, 4, NKWC, SWC);
    if (m + 2 <= b) {
        gin_pixels(t, m, NC, 2, NKWC, SWC);
        m += 2;
    }
    if (m < b) gin_pixels(t, m, NC, 1, NKWC, SWC);
    for (m = b; m < t->M; m++) gin_border_pixel(t, m, NC);
}

typedef void (*gin_row_fn)(const gin_row_t *t);

#define GIN_ROW_VARIANT(NC, NKWC, SWC)                                                                  \
    static void gin_row_##NC##_##NKWC##_##SWC(const gin_row_t *t) { gin_row(t, NC, NKWC, SWC); }
GIN_ROW_VARIANT(4, 3, 1)
GIN_ROW_VARIANT(4, 1, 1)
GIN_ROW_VARIANT(4, 1, 2)
GIN_ROW_VARIANT(4, 2, 2)
GIN_ROW_VARIANT(4, 0, 0)
GIN_ROW_VARIANT(1, 3, 1)
GIN_ROW_VARIANT(1, 1, 1)
GIN_ROW_VARIANT(1, 1, 2)
GIN_ROW_VARIANT(1, 2, 2)
GIN_ROW_VARIANT(1, 0, 0)

static gin_row_fn gin_row_pick(int four_channels, int nkw, int sw)
{
    if (four_channels) {
        if (nkw == 3 && sw == 1) return gin_row_4_3_1;
        if (nkw == 1 && sw == 1) return gin_row_4_1_1;
        if (nkw == 1 && sw == 2) return gin_row_4_1_2;
        if (nkw == 2 && sw == 2) return gin_row_4_2_2;
        return gin_row_4_0_0;
    }
    if (nkw == 3 && sw == 1) return gin_row_1_3_1;
    if (nkw == 1 && sw == 1) return gin_row_1_1_1;
    if (nkw == 1 && sw == 2) return gin_row_1_1_2;
    if (nkw == 2 && sw == 2) return gin_row_1_2_2;
    return gin_row_1_0_0;
}

/* Column phases of a row: at most MAX_PHASES distinct strides are precomputed; wider strides are
 * computed per row. */
#define MAX_PHASES 4

typedef struct {
    int nkw, base, M, m_a, m_b;
    gin_row_fn row4, row1;
} gin_phase_t;

static void gin_phase_setup(gin_phase_t *ph, int phase, const conv2d_params_t *p)
{
    const int sw = p->stride_w;
    const int q = phase + p->pad_left;
    const int kw0 = q % sw;
    ph->nkw = kw0 < p->KW ? (p->KW - 1 - kw0) / sw + 1 : 0;
    ph->base = (q - kw0) / sw;
    ph->M = phase < p->W ? (p->W - phase + sw - 1) / sw : 0;
    ph->m_a = tk_min(tk_max(0, ph->nkw - 1 - ph->base), ph->M);
    ph->m_b = tk_min(tk_max(p->OW - ph->base, ph->m_a), ph->M);
    ph->row4 = gin_row_pick(1, ph->nkw, sw);
    ph->row1 = gin_row_pick(0, ph->nkw, sw);
}

void conv2d_grad_input(const float *dy, const float *w, float *dx, const conv2d_params_t *p)
{
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
            const int kw0 = (phase + p->pad_left) % sw;
            t.nkw = t.nkh ? ph->nkw : 0;
            t.base = ph->base;
            t.M = ph->M;
            t.m_a = ph->m_a;
            t.m_b = ph->m_b;
            if (t.nkw == 0) {
                /* Nothing reaches these pixels (kernel rows or columns all skipped by the stride). */
                t.m_a = t.m_b = t.M;
            }
            t.dy = dy + ((size_t)(n * p->K + g * Kg) * p->OH + oh0) * p->OW;
            t.w = w + (((size_t)g * Kg * Cg + cb * CONV_BLOCK) * KH + kh0) * KW + (t.nkw ? kw0 : 0);
            t.dx = dx + ((size_t)(n * p->C + c0) * p->H + ih) * p->W + phase;
            if (nc == CONV_BLOCK) {
                ph->row4(&t);
            } else {
                for (int i = 0; i < nc; i++) {
                    ph->row1(&t);
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
 * wider kernels are covered by several column groups. */
typedef struct {
    const float *x;  /* x at (0, c, input row of the first valid output row, 0) */
    const float *dy; /* dy at (0, first output channel, first valid output row, 0) */
    int N, x_batch, dy_batch, dy_plane;
    int rows;        /* valid output rows for this kernel row */
    int x_row_step;  /* sh * W */
    int W, OW, sw, pl;
    int kw0;
} gw_rows_t;

TK_INLINE void gw_block(const gw_rows_t *t, float *dw, int dw_k, const int NK, const int KWC, const int SWC)
{
    const int sw = SWC ? SWC : t->sw;
    const int W = t->W, OW = t->OW, dy_plane = t->dy_plane;
    const int col0 = t->kw0 - t->pl; /* x column of ow = 0, kw = kw0 */
    /* Interior: ow*sw + col0 >= 0 and ow*sw + col0 + KWC <= W. */
    const int a = tk_min(tk_max(tk_ceil_div(-col0, sw), 0), OW);
    const int b = tk_min(tk_max(tk_floor_div(W - KWC - col0, sw) + 1, a), OW);
    float acc[CONV_BLOCK][3];
    TK_UNROLL for (int i = 0; i < NK; i++) {
        TK_UNROLL for (int kw = 0; kw < KWC; kw++) acc[i][kw] = 0.0f;
    }
    for (int n = 0; n < t->N; n++) {
        const float *xr = t->x + (size_t)n * t->x_batch + col0;
        const float *dyr = t->dy + (size_t)n * t->dy_batch;
        for (int row = 0; row < t->rows; row++) {
            const float *restrict xp = xr + a * sw;
            const float *restrict dp = dyr + a;
            int ow = a;
            for (; ow + 2 <= b; ow += 2) {
                float dv[CONV_BLOCK][2];
                TK_UNROLL for (int i = 0; i < NK; i++) {
                    dv[i][0] = dp[i * dy_plane];
                    dv[i][1] = dp[i * dy_plane + 1];
                }
                TK_UNROLL for (int j = 0; j < 2; j++) {
                    TK_UNROLL for (int kw = 0; kw < KWC; kw++) {
                        const float xv = xp[j * sw + kw];
                        TK_UNROLL for (int i = 0; i < NK; i++) TK_MAC(acc[i][kw], dv[i][j], xv);
                    }
                }
                xp += 2 * sw;
                dp += 2;
            }
            if (ow < b) {
                TK_UNROLL for (int kw = 0; kw < KWC; kw++) {
                    const float xv = xp[kw];
                    TK_UNROLL for (int i = 0; i < NK; i++) TK_MAC(acc[i][kw], dp[i * dy_plane], xv);
                }
            }
            for (int pass = 0; pass < 2; pass++) {
                const int lo = pass ? b : 0, hi = pass ? OW : a;
                for (ow = lo; ow < hi; ow++) {
                    const int col = ow * sw + col0;
                    TK_UNROLL for (int kw = 0; kw < KWC; kw++) {
                        if (col + kw >= 0 && col + kw < W) {
                            const float xv = xr[ow * sw + kw];
                            TK_UNROLL for (int i = 0; i < NK; i++)
                                TK_MAC(acc[i][kw], dyr[i * dy_plane + ow], xv);
                        }
                    }
                }
            }
            xr += t->x_row_step;
            dyr += OW;
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
GW_VARIANT(4, 1, 1)
GW_VARIANT(4, 1, 2)
GW_VARIANT(4, 1, 0)
GW_VARIANT(1, 3, 1)
GW_VARIANT(1, 3, 2)
GW_VARIANT(1, 3, 0)
GW_VARIANT(1, 1, 1)
GW_VARIANT(1, 1, 2)
GW_VARIANT(1, 1, 0)

static gw_block_fn gw_block_pick(int four_channels, int three_columns, int sw)
{
    static const gw_block_fn table[2][2][3] = {
        {{gw_block_1_1_0, gw_block_1_1_1, gw_block_1_1_2}, {gw_block_1_3_0, gw_block_1_3_1, gw_block_1_3_2}},
        {{gw_block_4_1_0, gw_block_4_1_1, gw_block_4_1_2}, {gw_block_4_3_0, gw_block_4_3_1, gw_block_4_3_2}},
    };
    return table[four_channels][three_columns][sw == 1 || sw == 2 ? sw : 0];
}

void conv2d_grad_weight(const float *x, const float *dy, float *dw, const conv2d_params_t *p)
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
        /* Output rows whose input row oh*sh + kh - pt lies in [0, H). */
        const int oh_lo = tk_min(tk_max(tk_ceil_div(p->pad_top - kh, sh), 0), p->OH);
        const int oh_hi = tk_min(tk_max(tk_floor_div(p->H - 1 + p->pad_top - kh, sh) + 1, oh_lo), p->OH);
        t.rows = oh_hi - oh_lo;
        const int ih_lo = oh_lo * sh + kh - p->pad_top;
        t.x = x + ((size_t)(g * Cg + cl) * p->H + (t.rows ? ih_lo : 0)) * p->W;
        t.dy = dy + ((size_t)k0 * p->OH + oh_lo) * p->OW;
        float *dwp = dw + ((size_t)k0 * Cg + cl) * KH * KW + kh * KW;
        for (int done = 0; done < nk;) {
            const int block = nk - done >= CONV_BLOCK ? CONV_BLOCK : 1;
            for (int kw0 = 0; kw0 < KW;) {
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
