/*
 * Depthwise 3x3 convolution: forward and weight gradient by vertical strips, input gradient of
 * stride 2 by column phases (stride 1 is the forward with the rotated kernel, see conv.c).
 */
#include <stddef.h>

#include "conv_internal.h"
#include "tinyodl_rt.h"

/* Depthwise 3x3 (one input channel per output channel) has too little work per pixel for the block
 * machinery of the direct paths, and its planes are often narrow (DS-CNN: 25x5), where per-row
 * overhead dominates. The output columns are cut into vertical strips of up to 5 pixels (a whole row
 * of a narrow plane), each one function call that keeps the 9 weights (or the 9 weight-gradient sums)
 * in registers and walks every row the core owns, so dispatch and weight loads are paid per strip, not
 * per row. A strip's first pixel may lose kernel column 0 and its last kernel column 2 to the image
 * border (padding 1): that is fixed at compile time, so the pixels next to the border need no checks;
 * other border pixels are strips of one pixel with their kernel columns fixed likewise. Rows whose
 * window crosses the top or bottom edge (after the others, in one shared loop) test each kernel row
 * once. An output pixel sums bias, kernel rows, kernel columns in order; a weight-gradient sum is
 * reduced by one core over strips, batch, rows, pixels in an order that depends on the shape alone. */
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
void conv_dw3x3_fwd(const float *x, const float *w, const float *bias, float *y, const conv2d_params_t *p,
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
void conv_dw3x3_grad_weight(const float *x, const float *dy, float *dw, const conv2d_params_t *p)
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

void conv_dw3x3_grad_input_s2(const float *dy, const float *w, float *dx, const conv2d_params_t *p)
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
