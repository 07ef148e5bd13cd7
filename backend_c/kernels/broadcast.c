/* Broadcast with scaling: the gradient of a sum reduction (and of global average pooling). */
#include "broadcast.h"

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
