/*
 * Losses and softmax. The scalar losses are computed by core 0 alone, in row order, so the value is
 * deterministic and the same for every core count (they are tiny next to the layers). Gradients and
 * softmax split the rows over the cores.
 */
#include <math.h>
#include <stddef.h>

#include "kernels_internal.h"
#include "tinyodl_kernels.h"
#include "tinyodl_rt.h"

static float row_max(const float *x, int cols)
{
    float m = x[0];
    for (int j = 1; j < cols; j++) m = x[j] > m ? x[j] : m;
    return m;
}

/* y[j] = exp(x[j] - max) for the row; returns the sum of y. */
static float row_exp(const float *x, float *y, int cols)
{
    const float m = row_max(x, cols);
    float sum = 0.0f;
    for (int j = 0; j < cols; j++) {
        y[j] = expf(x[j] - m);
        sum += y[j];
    }
    return sum;
}

void softmax_cross_entropy(const float *logits, const int *labels, float *loss_out, int N, int C)
{
    if (rt_core_id() != 0) return;
    float total = 0.0f;
    for (int r = 0; r < N; r++) {
        const float *x = logits + (size_t)r * C;
        const float m = row_max(x, C);
        float sum = 0.0f;
        for (int j = 0; j < C; j++) sum += expf(x[j] - m);
        total += logf(sum) - (x[labels[r]] - m);
    }
    loss_out[0] = total / (float)N;
}

void softmax_cross_entropy_grad(const float *logits, const int *labels, float *dlogits, int N, int C)
{
    int first, end;
    rt_chunk(N, &first, &end);
    for (int r = first; r < end; r++) {
        float *d = dlogits + (size_t)r * C;
        const float inv = 1.0f / row_exp(logits + (size_t)r * C, d, C);
        const float inv_n = 1.0f / (float)N;
        for (int j = 0; j < C; j++) d[j] = d[j] * inv * inv_n;
        d[labels[r]] -= inv_n;
    }
}

void mse_loss(const float *pred, const float *target, float *loss_out, int n)
{
    if (rt_core_id() != 0) return;
    float total = 0.0f;
    for (int i = 0; i < n; i++) {
        const float d = pred[i] - target[i];
        TK_MAC(total, d, d);
    }
    loss_out[0] = total / (float)n;
}

void mse_loss_grad(const float *pred, const float *target, float *dpred, int n)
{
    int first, end;
    rt_chunk(n, &first, &end);
    const float s = 2.0f / (float)n;
    for (int i = first; i < end; i++) dpred[i] = s * (pred[i] - target[i]);
}

void softmax_fwd(const float *x, float *y, int rows, int cols)
{
    int first, end;
    rt_chunk(rows, &first, &end);
    for (int r = first; r < end; r++) {
        float *yr = y + (size_t)r * cols;
        const float inv = 1.0f / row_exp(x + (size_t)r * cols, yr, cols);
        for (int j = 0; j < cols; j++) yr[j] *= inv;
    }
}

void softmax_grad(const float *dy, const float *y, float *dx, int rows, int cols)
{
    int first, end;
    rt_chunk(rows, &first, &end);
    for (int r = first; r < end; r++) {
        const float *dyr = dy + (size_t)r * cols, *yr = y + (size_t)r * cols;
        float *dxr = dx + (size_t)r * cols;
        float dot = 0.0f;
        for (int j = 0; j < cols; j++) TK_MAC(dot, dyr[j], yr[j]);
        for (int j = 0; j < cols; j++) dxr[j] = yr[j] * (dyr[j] - dot);
    }
}
