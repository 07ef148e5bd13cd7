/*
 * Element-wise kernels: every core takes a contiguous slice of the elements (rt_chunk).
 * The loops are one statement each so that an fp16 build can re-instantiate them unchanged.
 */
#include <math.h>

#include "kernels_internal.h"
#include "tinyodl_kernels.h"
#include "tinyodl_rt.h"

void add(const float *a, const float *b, float *y, int n)
{
    int first, end;
    rt_chunk(n, &first, &end);
    for (int i = first; i < end; i++) y[i] = a[i] + b[i];
}

void add_broadcast(const float *a, const float *b, float *y, const int shape[4], const int a_strides[4],
                   const int b_strides[4])
{
    const int rows = shape[0] * shape[1] * shape[2], cols = shape[3];
    int first, end;
    rt_chunk(rows * cols, &first, &end);
    if (first >= end) return;
    /* Walk the slice row by row; the multi-index of the first row is decoded once. */
    int row = first / cols, col = first % cols;
    int i2 = row % shape[2], i1 = row / shape[2] % shape[1], i0 = row / shape[2] / shape[1];
    const int as3 = a_strides[3], bs3 = b_strides[3];
    for (int pos = first; pos < end; pos += cols - col, col = 0) {
        const int len = tk_min(cols - col, end - pos);
        const float *ap = a + i0 * a_strides[0] + i1 * a_strides[1] + i2 * a_strides[2] + col * as3;
        const float *bp = b + i0 * b_strides[0] + i1 * b_strides[1] + i2 * b_strides[2] + col * bs3;
        float *yp = y + pos;
        for (int j = 0; j < len; j++) yp[j] = ap[j * as3] + bp[j * bs3];
        if (++i2 == shape[2]) {
            i2 = 0;
            if (++i1 == shape[1]) {
                i1 = 0;
                i0++;
            }
        }
    }
}

void scale(const float *x, float *y, int n, float s)
{
    int first, end;
    rt_chunk(n, &first, &end);
    for (int i = first; i < end; i++) y[i] = x[i] * s;
}

void relu(const float *x, float *y, int n)
{
    int first, end;
    rt_chunk(n, &first, &end);
    for (int i = first; i < end; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void relu_grad(const float *dy, const float *x, float *dx, int n)
{
    int first, end;
    rt_chunk(n, &first, &end);
    for (int i = first; i < end; i++) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}

void leaky_relu(const float *x, float *y, int n, float alpha)
{
    int first, end;
    rt_chunk(n, &first, &end);
    for (int i = first; i < end; i++) y[i] = x[i] > 0.0f ? x[i] : alpha * x[i];
}

void leaky_relu_grad(const float *dy, const float *x, float *dx, int n, float alpha)
{
    int first, end;
    rt_chunk(n, &first, &end);
    for (int i = first; i < end; i++) dx[i] = x[i] > 0.0f ? dy[i] : alpha * dy[i];
}

void sigmoid(const float *x, float *y, int n)
{
    int first, end;
    rt_chunk(n, &first, &end);
    /* expf(-x) overflows to inf for very negative x, giving exactly 0. */
    for (int i = first; i < end; i++) y[i] = 1.0f / (1.0f + expf(-x[i]));
}

void sigmoid_grad(const float *dy, const float *y, float *dx, int n)
{
    int first, end;
    rt_chunk(n, &first, &end);
    for (int i = first; i < end; i++) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

/* exp(v) - 1 without the cancellation of expf(v) - 1 near 0 (Kahan's trick: the rounding error of
 * u = expf(v) cancels in (u - 1) * v / log(u)). */
static float expm1_accurate(float v)
{
    const float u = expf(v);
    if (u == 1.0f) return v;
    const float um1 = u - 1.0f;
    if (um1 == -1.0f) return -1.0f;
    return um1 * v / logf(u);
}

/* tanh(x) = -expm1(-2|x|) / (2 + expm1(-2|x|)) with the sign of x; exact to a few ulps everywhere and
 * free of overflow (the argument of expf is never positive). */
static float tanh_accurate(float x)
{
    const float e = expm1_accurate(-2.0f * fabsf(x));
    const float t = -e / (2.0f + e);
    return x < 0.0f ? -t : t;
}

void tanh_fwd(const float *x, float *y, int n)
{
    int first, end;
    rt_chunk(n, &first, &end);
    for (int i = first; i < end; i++) y[i] = tanh_accurate(x[i]);
}

void tanh_grad(const float *dy, const float *y, float *dx, int n)
{
    int first, end;
    rt_chunk(n, &first, &end);
    for (int i = first; i < end; i++) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}

void clip(const float *x, float *y, int n, float min, float max)
{
    int first, end;
    rt_chunk(n, &first, &end);
    for (int i = first; i < end; i++) y[i] = x[i] < min ? min : (x[i] > max ? max : x[i]);
}

void clip_grad(const float *dy, const float *x, float *dx, int n, float min, float max)
{
    int first, end;
    rt_chunk(n, &first, &end);
    for (int i = first; i < end; i++) dx[i] = (x[i] >= min && x[i] <= max) ? dy[i] : 0.0f;
}
