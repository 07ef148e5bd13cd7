/* Generic strided kernels: broadcast, reductions and softmax along any axis. They cover the shapes the
 * specialised kernels do not; simple loops, split over output elements or rows. */
#include "generic.h"

#include <math.h>

#include "tinyodl_rt.h"

void broadcast_nd(const float *x, float *y, const int shape[4], const int x_strides[4], float s)
{
    int total = shape[0] * shape[1] * shape[2] * shape[3];
    int start, end;
    rt_chunk(total, &start, &end);
    for (int index = start; index < end; ++index) {
        int rest = index;
        int i3 = rest % shape[3];
        rest /= shape[3];
        int i2 = rest % shape[2];
        rest /= shape[2];
        int i1 = rest % shape[1];
        int i0 = rest / shape[1];
        y[index] = s * x[i0 * x_strides[0] + i1 * x_strides[1] + i2 * x_strides[2] + i3 * x_strides[3]];
    }
}

void reduce_sum_nd(const float *x, float *y, const int shape[4], const int reduce[4], float s)
{
    /* Output dims are the kept dims in order; strides of x are dense row-major over `shape`. */
    int strides[4];
    strides[3] = 1;
    for (int axis = 2; axis >= 0; --axis)
        strides[axis] = strides[axis + 1] * shape[axis + 1];
    int kept = 1, reduced = 1;
    for (int axis = 0; axis < 4; ++axis) {
        if (reduce[axis])
            reduced *= shape[axis];
        else
            kept *= shape[axis];
    }
    int start, end;
    rt_chunk(kept, &start, &end);
    for (int out = start; out < end; ++out) {
        int base = 0, rest = out;
        for (int axis = 3; axis >= 0; --axis) {
            if (!reduce[axis]) {
                base += (rest % shape[axis]) * strides[axis];
                rest /= shape[axis];
            }
        }
        float total = 0.0f;
        for (int r = 0; r < reduced; ++r) {
            int offset = 0, left = r;
            for (int axis = 3; axis >= 0; --axis) {
                if (reduce[axis]) {
                    offset += (left % shape[axis]) * strides[axis];
                    left /= shape[axis];
                }
            }
            total += x[base + offset];
        }
        y[out] = s * total;
    }
}

/* x viewed as [outer, len, inner]: softmax along the middle axis. Split over the outer x inner lines. */
void softmax_axis_fwd(const float *x, float *y, int outer, int len, int inner)
{
    int start, end;
    rt_chunk(outer * inner, &start, &end);
    for (int line = start; line < end; ++line) {
        const float *src = x + (line / inner) * len * inner + line % inner;
        float *dst = y + (line / inner) * len * inner + line % inner;
        float peak = src[0];
        for (int i = 1; i < len; ++i)
            peak = src[i * inner] > peak ? src[i * inner] : peak;
        float total = 0.0f;
        for (int i = 0; i < len; ++i) {
            dst[i * inner] = expf(src[i * inner] - peak);
            total += dst[i * inner];
        }
        float inverse = 1.0f / total;
        for (int i = 0; i < len; ++i)
            dst[i * inner] *= inverse;
    }
}

/* dx = y * (dy - sum(dy * y)) along the middle axis of [outer, len, inner]. */
void softmax_axis_grad(const float *dy, const float *y, float *dx, int outer, int len, int inner)
{
    int start, end;
    rt_chunk(outer * inner, &start, &end);
    for (int line = start; line < end; ++line) {
        int base = (line / inner) * len * inner + line % inner;
        float dot = 0.0f;
        for (int i = 0; i < len; ++i)
            dot = __builtin_fmaf(dy[base + i * inner], y[base + i * inner], dot);
        for (int i = 0; i < len; ++i)
            dx[base + i * inner] = y[base + i * inner] * (dy[base + i * inner] - dot);
    }
}
