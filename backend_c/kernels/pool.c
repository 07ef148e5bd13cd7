/*
 * Pooling. Forward kernels split the output rows over the cores; backward kernels split the rows of
 * dx, each core gathering from the windows that cover its rows, so overlapping windows need neither
 * atomics nor a zeroing pass by another core.
 */
#include <math.h>
#include <stddef.h>

#include "kernels_internal.h"
#include "tinyodl_kernels.h"
#include "tinyodl_rt.h"

/* Window of output (oh, ow) clipped to the image: rows [*h0, *h1), columns [*w0, *w1). */
TK_INLINE void pool_window(const pool2d_params_t *p, int oh, int ow, int *h0, int *h1, int *w0, int *w1)
{
    const int hs = oh * p->stride_h - p->pad_top, ws = ow * p->stride_w - p->pad_left;
    *h0 = tk_max(hs, 0);
    *h1 = tk_min(hs + p->KH, p->H);
    *w0 = tk_max(ws, 0);
    *w1 = tk_min(ws + p->KW, p->W);
}

/* Output rows covering input row ih: [*oh0, *oh1). */
TK_INLINE void pool_rows_covering(const pool2d_params_t *p, int ih, int *oh0, int *oh1)
{
    const int r = ih + p->pad_top;
    *oh0 = tk_min(tk_max(tk_ceil_div(r - p->KH + 1, p->stride_h), 0), p->OH);
    *oh1 = tk_min(tk_max(tk_floor_div(r, p->stride_h) + 1, *oh0), p->OH);
}

void maxpool2d_fwd(const float *x, float *y, const pool2d_params_t *p)
{
    int first, end;
    rt_chunk(p->N * p->C * p->OH, &first, &end);
    for (int item = first; item < end; item++) {
        const int oh = item % p->OH, plane = item / p->OH;
        const float *xp = x + (size_t)plane * p->H * p->W;
        float *yp = y + (size_t)item * p->OW;
        for (int ow = 0; ow < p->OW; ow++) {
            int h0, h1, w0, w1;
            pool_window(p, oh, ow, &h0, &h1, &w0, &w1);
            float best = -INFINITY;
            for (int h = h0; h < h1; h++)
                for (int w = w0; w < w1; w++)
                    if (xp[h * p->W + w] > best) best = xp[h * p->W + w];
            yp[ow] = best;
        }
    }
}

void maxpool2d_grad(const float *dy, const float *x, float *dx, const pool2d_params_t *p)
{
    int first, end;
    rt_chunk(p->N * p->C * p->H, &first, &end);
    for (int item = first; item < end; item++) {
        const int ih = item % p->H, plane = item / p->H;
        const float *xp = x + (size_t)plane * p->H * p->W;
        const float *dyp = dy + (size_t)plane * p->OH * p->OW;
        float *dxr = dx + (size_t)item * p->W;
        for (int iw = 0; iw < p->W; iw++) dxr[iw] = 0.0f;
        int oh0, oh1;
        pool_rows_covering(p, ih, &oh0, &oh1);
        for (int oh = oh0; oh < oh1; oh++) {
            for (int ow = 0; ow < p->OW; ow++) {
                int h0, h1, w0, w1;
                pool_window(p, oh, ow, &h0, &h1, &w0, &w1);
                if (w0 >= w1) continue;
                /* First maximum in row-major window order (strict > keeps the first). */
                float best = -INFINITY;
                int best_h = -1, best_w = -1;
                for (int h = h0; h < h1; h++)
                    for (int w = w0; w < w1; w++)
                        if (xp[h * p->W + w] > best || best_h < 0) {
                            best = xp[h * p->W + w];
                            best_h = h;
                            best_w = w;
                        }
                if (best_h == ih) dxr[best_w] += dyp[oh * p->OW + ow];
            }
        }
    }
}

/* Divisor of window (oh, ow): in-image positions, or with count_include_pad the window clipped to
 * the padded input. */
TK_INLINE int avgpool_divisor(const pool2d_params_t *p, int oh, int ow)
{
    if (p->count_include_pad) {
        const int hs = oh * p->stride_h - p->pad_top, ws = ow * p->stride_w - p->pad_left;
        const int he = tk_min(hs + p->KH, p->H + p->pad_bottom), we = tk_min(ws + p->KW, p->W + p->pad_right);
        return tk_max(he - hs, 0) * tk_max(we - ws, 0);
    }
    int h0, h1, w0, w1;
    pool_window(p, oh, ow, &h0, &h1, &w0, &w1);
    return tk_max(h1 - h0, 0) * tk_max(w1 - w0, 0);
}

void avgpool2d_fwd(const float *x, float *y, const pool2d_params_t *p)
{
    int first, end;
    rt_chunk(p->N * p->C * p->OH, &first, &end);
    for (int item = first; item < end; item++) {
        const int oh = item % p->OH, plane = item / p->OH;
        const float *xp = x + (size_t)plane * p->H * p->W;
        float *yp = y + (size_t)item * p->OW;
        for (int ow = 0; ow < p->OW; ow++) {
            int h0, h1, w0, w1;
            pool_window(p, oh, ow, &h0, &h1, &w0, &w1);
            float sum = 0.0f;
            for (int h = h0; h < h1; h++)
                for (int w = w0; w < w1; w++) sum += xp[h * p->W + w];
            const int divisor = avgpool_divisor(p, oh, ow);
            yp[ow] = divisor ? sum / (float)divisor : 0.0f;
        }
    }
}

void avgpool2d_grad(const float *dy, float *dx, const pool2d_params_t *p)
{
    int first, end;
    rt_chunk(p->N * p->C * p->H, &first, &end);
    for (int item = first; item < end; item++) {
        const int ih = item % p->H, plane = item / p->H;
        const float *dyp = dy + (size_t)plane * p->OH * p->OW;
        float *dxr = dx + (size_t)item * p->W;
        for (int iw = 0; iw < p->W; iw++) dxr[iw] = 0.0f;
        int oh0, oh1;
        pool_rows_covering(p, ih, &oh0, &oh1);
        for (int oh = oh0; oh < oh1; oh++) {
            for (int ow = 0; ow < p->OW; ow++) {
                int h0, h1, w0, w1;
                pool_window(p, oh, ow, &h0, &h1, &w0, &w1);
                const int divisor = avgpool_divisor(p, oh, ow);
                if (!divisor) continue;
                const float g = dyp[oh * p->OW + ow] / (float)divisor;
                for (int w = w0; w < w1; w++) dxr[w] += g;
            }
        }
    }
}

void global_avgpool_fwd(const float *x, float *y, int N, int C, int plane)
{
    int first, end;
    rt_chunk(N * C, &first, &end);
    for (int nc = first; nc < end; nc++) {
        const float *xp = x + (size_t)nc * plane;
        float sum = 0.0f;
        for (int i = 0; i < plane; i++) sum += xp[i];
        y[nc] = sum / (float)plane;
    }
}

void global_avgpool_grad(const float *dy, float *dx, int N, int C, int plane)
{
    int first, end;
    rt_chunk(N * C * plane, &first, &end);
    for (int i = first; i < end;) {
        const int nc = i / plane, stop = tk_min(end, (nc + 1) * plane);
        const float g = dy[nc] / (float)plane;
        for (; i < stop; i++) dx[i] = g;
    }
}
