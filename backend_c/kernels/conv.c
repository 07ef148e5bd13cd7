/*
 * 2-D convolution: forward, gradient w.r.t. the input, gradient w.r.t. the weights, bias gradient.
 *
 * All three are direct loops (no im2col buffer) built from one idea: a micro-kernel keeps a block of
 * outputs in registers (up to 4 channels x 4 pixels of one row) so that every loaded input value feeds
 * several multiply-accumulates, and runs only where no window crosses the image border, so its loops
 * carry no bounds checks. The few border pixels of a row go through a per-pixel path with clipped
 * kernel ranges. Kernel rows outside the image are clipped once per output row.
 *
 * The micro-kernels are written once with `const int` shape parameters (channels per block, pixels per
 * block, kernel width, stride) and instantiated for the common cases (3x3 and 1x1 kernels, stride 1
 * and 2) plus a generic case where the width and stride are runtime values.
 *
 * Narrow images (DS-CNN: 25x5) leave row-sized blocks little to do, so three shapes have their own
 * paths: depthwise 3x3 walks vertical strips of a channel plane with the kernel in registers;
 * width-4 stride-2 kernels (keyword-spotting stems) cover a row with tiles whose end pixels may lose
 * one kernel column at compile time; 1x1 stride-1 convolutions are matrix products over whole planes.
 *
 * This file holds the entry points, which pick a path by shape; conv_internal.h says which file
 * holds each path.
 */
#include <stddef.h>

#include "conv_internal.h"
#include "tinyodl_rt.h"

int conv_is_flat(const conv2d_params_t *p)
{
    return p->KH == 1 && p->KW == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_top == 0 &&
           p->pad_left == 0 && p->OH == p->H && p->OW == p->W;
}

void conv_gw_valid_rows(const conv2d_params_t *p, int kh, int *lo, int *hi)
{
    const int sh = p->stride_h;
    *lo = tk_min(tk_max(tk_ceil_div(p->pad_top - kh, sh), 0), p->OH);
    *hi = tk_min(tk_max(tk_floor_div(p->H - 1 + p->pad_top - kh, sh) + 1, *lo), p->OH);
}

void conv2d_fwd(const float *x, const float *w, const float *bias, float *y, const conv2d_params_t *p)
{
    if (p->C / p->groups == 1 && p->KH == 3 && p->KW == 3) {
        conv_dw3x3_fwd(x, w, bias, y, p, 0);
        return;
    }
    if (conv_is_flat(p)) {
        conv_pw_product(w, x, bias, y, p, 0);
        return;
    }
    conv_direct_fwd(x, w, bias, y, p);
}

void conv2d_grad_input(const float *dy, const float *w, float *dx, const conv2d_params_t *p)
{
    if (p->groups == p->C && p->K == p->C && p->KH == 3 && p->KW == 3 && p->stride_h == 2 && p->stride_w == 2) {
        conv_dw3x3_grad_input_s2(dy, w, dx, p);
        return;
    }
    if (p->groups == p->C && p->K == p->C && p->KH == 3 && p->KW == 3 && p->stride_h == 1 && p->stride_w == 1) {
        /* Depthwise stride 1: dx is the depthwise convolution of dy with the rotated kernel. */
        const conv2d_params_t q = {p->N, p->K, p->OH, p->OW, p->C, 3, 3, p->H, p->W, 1, 1,
                                   2 - p->pad_top, 2 - p->pad_left, 2 - p->pad_bottom, 2 - p->pad_right, p->C};
        if (q.pad_top >= 0 && q.pad_left >= 0) {
            conv_dw3x3_fwd(dy, w, NULL, dx, &q, 1);
            return;
        }
    }
    if (conv_is_flat(p)) {
        conv_pw_product(w, dy, NULL, dx, p, 1);
        return;
    }
    conv_direct_grad_input(dy, w, dx, p);
}

void conv2d_grad_weight(const float *x, const float *dy, float *dw, const conv2d_params_t *p)
{
    if (p->KH == 1 && p->KW == 1) {
        conv_pw_grad_weight(x, dy, dw, p);
        return;
    }
    if (p->groups == p->C && p->KH == 3 && p->KW == 3) {
        conv_dw3x3_grad_weight(x, dy, dw, p);
        return;
    }
    conv_direct_grad_weight(x, dy, dw, p);
}

/* ================================ bias gradient ================================ */

void channel_sum(const float *dy, float *out, int N, int K, int plane)
{
    int first, end;
    rt_chunk(K, &first, &end);
    for (int k = first; k < end; k++) {
        float sum = 0.0f;
        for (int n = 0; n < N; n++) {
            const float *d = dy + ((size_t)n * K + k) * plane;
            for (int i = 0; i < plane; i++) sum += d[i];
        }
        out[k] = sum;
    }
}
