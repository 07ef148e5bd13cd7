/*
 * Convolution gradient w.r.t. the input, the direct path: any kernel, strides, pads and groups.
 */
#include <stddef.h>

#include "conv_internal.h"
#include "tinyodl_rt.h"

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

/* Split over (n, group, block of input channels, input row); each row is done phase by phase. */
void conv_direct_grad_input(const float *dy, const float *w, float *dx, const conv2d_params_t *p)
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
