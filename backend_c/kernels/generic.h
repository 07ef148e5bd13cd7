#ifndef TINYODL_GENERIC_H
#define TINYODL_GENERIC_H

/* y[i0,i1,i2,i3] = s * x[sum i_d * x_strides[d]] for y dense of `shape` (a stride of 0 repeats x along
 * that axis). Split over the elements of y. */
void broadcast_nd(const float *x, float *y, const int shape[4], const int x_strides[4], float s);

/* y = s * the sum of x (dense, `shape`) over the axes with reduce[d] != 0; y holds the kept axes in order.
 * A general fallback for reductions the specialised kernels (channel_sum, col_sum, row_sum) do not cover.
 * Split over the elements of y; each is summed in a fixed order, independent of the core count. */
void reduce_sum_nd(const float *x, float *y, const int shape[4], const int reduce[4], float s);

/* Softmax of x viewed as [outer, len, inner] along its middle axis, and its gradient (y the softmax output).
 * Split over the outer x inner lines. */
void softmax_axis_fwd(const float *x, float *y, int outer, int len, int inner);
void softmax_axis_grad(const float *dy, const float *y, float *dx, int outer, int len, int inner);

#endif
