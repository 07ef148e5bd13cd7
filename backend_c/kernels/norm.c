/*
 * Batch norm with fixed statistics (the affine map of inference mode, trained through gamma/beta).
 * The element-wise kernels split all N*C*plane elements over the cores and walk their slice plane
 * segment by plane segment, so small channel counts still use every core.
 */
#include <math.h>
#include <stddef.h>

#include "kernels_internal.h"
#include "tinyodl_kernels.h"
#include "tinyodl_rt.h"

/* y = x * scale[c] + shift[c] on this core's slice of the N*C*plane elements. */
static void channel_affine(const float *x, float *y, const float *gamma, const float *beta, const float *mean,
                           const float *var, int C, int total, int plane, float eps)
{
    int first, end;
    rt_chunk(total, &first, &end);
    for (int i = first; i < end;) {
        const int nc = i / plane, c = nc % C, stop = tk_min(end, (nc + 1) * plane);
        const float a = gamma[c] / sqrtf(var[c] + eps);
        const float b = beta ? beta[c] - mean[c] * a : 0.0f;
        for (; i < stop; i++) y[i] = x[i] * a + b;
    }
}

void batchnorm_fwd(const float *x, const float *gamma, const float *beta, const float *mean,
                   const float *var, float *y, int N, int C, int plane, float eps)
{
    channel_affine(x, y, gamma, beta, mean, var, C, N * C * plane, plane, eps);
}

void batchnorm_grad_input(const float *dy, const float *gamma, const float *var, float *dx, int N, int C,
                          int plane, float eps)
{
    channel_affine(dy, dx, gamma, NULL, NULL, var, C, N * C * plane, plane, eps);
}

void batchnorm_grad_params(const float *dy, const float *x, const float *mean, const float *var,
                           float *dgamma, float *dbeta, int N, int C, int plane, float eps)
{
    int first, end;
    rt_chunk(C, &first, &end);
    for (int c = first; c < end; c++) {
        const float m = mean[c];
        float sum_dy = 0.0f, sum_dy_xc = 0.0f;
        for (int n = 0; n < N; n++) {
            const float *dyp = dy + ((size_t)n * C + c) * plane;
            const float *xp = x + ((size_t)n * C + c) * plane;
            for (int i = 0; i < plane; i++) {
                sum_dy += dyp[i];
                sum_dy_xc += dyp[i] * (xp[i] - m);
            }
        }
        if (dgamma) dgamma[c] = sum_dy_xc / sqrtf(var[c] + eps);
        if (dbeta) dbeta[c] = sum_dy;
    }
}
