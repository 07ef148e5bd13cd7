/*
 * Optimizer updates, in place, with PyTorch's semantics (torch.optim.SGD / Adam / AdamW, default
 * dampening 0, no amsgrad). Every core updates its own slice of the parameters.
 */
#include <math.h>

#include "tinyodl_kernels.h"
#include "tinyodl_rt.h"

void sgd_update(float *w, const float *g, float *momentum_buf, int n, float lr, float momentum,
                float weight_decay, int nesterov)
{
    int first, end;
    rt_chunk(n, &first, &end);
    if (momentum == 0.0f || !momentum_buf) {
        for (int i = first; i < end; i++) w[i] -= lr * (g[i] + weight_decay * w[i]);
        return;
    }
    for (int i = first; i < end; i++) {
        const float gi = g[i] + weight_decay * w[i];
        const float buf = momentum * momentum_buf[i] + gi;
        momentum_buf[i] = buf;
        w[i] -= lr * (nesterov ? gi + momentum * buf : buf);
    }
}

/* b^t by binary powering: log2(t) float multiplies, no powf. */
static float power(float b, int t)
{
    float result = 1.0f;
    for (; t > 0; t >>= 1) {
        if (t & 1) result *= b;
        b *= b;
    }
    return result;
}

void adam_update(float *w, const float *g, float *m, float *v, int n, float lr, float beta1, float beta2,
                 float eps, float weight_decay, int decoupled, int step)
{
    int first, end;
    rt_chunk(n, &first, &end);
    const float step_size = lr / (1.0f - power(beta1, step));
    const float inv_sqrt_bc2 = 1.0f / sqrtf(1.0f - power(beta2, step));
    const float shrink = 1.0f - lr * weight_decay;
    for (int i = first; i < end; i++) {
        float wi = w[i], gi = g[i];
        if (decoupled)
            wi *= shrink;
        else
            gi += weight_decay * wi;
        const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] = wi - step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
    }
}
