/* Shared by the convolution sources; not part of the public API.
 *   conv.c                      public entry points: dispatch to the variants below, bias gradient
 *   conv_direct_fwd.c           forward register-block rows; width-4 stride-2 stem tiles
 *   conv_direct_grad_input.c    input gradient register-block rows over column phases
 *   conv_direct_grad_weight.c   weight gradient register blocks; width-4 stride-2 stem tiles
 *   conv_depthwise.c            depthwise 3x3: strips (forward, weight gradient), stride-2 input gradient
 *   conv_pointwise.c            1x1 kernels: matrix products over whole planes, weight gradient blocks
 */
#ifndef TINYODL_CONV_INTERNAL_H
#define TINYODL_CONV_INTERNAL_H

#include "kernels_internal.h"
#include "tinyodl_kernels.h"

/* Channels of a register block. */
#define CONV_BLOCK 4

/* Pixels per register block: 4 with 4 channels (16 sums), 8 with 1 channel (depthwise). */
#define FWD_PIXELS(NK) ((NK) == 1 ? 8 : 4)

/* Pixels of a width-4 stride-2 stem tile at most (see fwd_tile in conv_direct_fwd.c); the weight
 * gradient walks the same tiles as the forward. */
#define TILE_PIXELS 5

/* The tiles of a row: [a, b) are the pixels whose window lies inside the image columns; the pixel
 * left of them joins the first tile if the border takes only its kernel column 0 (*left), the pixel
 * right of them joins the last tile if it loses only its last column (*right). */
TK_INLINE void tile_span(int a, int b, int OW, int W, int pl, const int KWC, const int SWC, int *left, int *right)
{
    *left = a >= 1 && (a - 1) * SWC - pl == -1 && W >= KWC - 1;
    *right = b < OW && b * SWC - pl >= 0 && W - (b * SWC - pl) == KWC - 1;
}

/* Pixels of the tile starting at ow of the span [m0, m1): all if they fit, else 4. */
TK_INLINE int tile_pixels(int ow, int m1) { return m1 - ow <= TILE_PIXELS ? m1 - ow : 4; }

/* Expands CASE(NP, LO, HI) for every tile shape. A one-pixel tile never has both LO and HI: the
 * pixels left and right of [a, b) differ. */
#define TILE_CASES(CASE)                                                                                \
    CASE(1, 0, 0) CASE(1, 0, 1) CASE(1, 1, 0)                                                          \
    CASE(2, 0, 0) CASE(2, 0, 1) CASE(2, 1, 0) CASE(2, 1, 1)                                            \
    CASE(3, 0, 0) CASE(3, 0, 1) CASE(3, 1, 0) CASE(3, 1, 1)                                            \
    CASE(4, 0, 0) CASE(4, 0, 1) CASE(4, 1, 0) CASE(4, 1, 1)                                            \
    CASE(5, 0, 0) CASE(5, 0, 1) CASE(5, 1, 0) CASE(5, 1, 1)
#define TILE_SHAPE(NP, LO, HI) ((NP) * 4 + (LO) * 2 + (HI))

/* A 1x1 stride-1 convolution without padding: a matrix product over the flat plane. */
int conv_is_flat(const conv2d_params_t *p);
/* Output rows whose input row oh*sh + kh - pt lies in [0, H): [*lo, *hi). */
void conv_gw_valid_rows(const conv2d_params_t *p, int kh, int *lo, int *hi);

/* The variants behind the entry points of conv.c, each split over the cores on its own. */
void conv_direct_fwd(const float *x, const float *w, const float *bias, float *y, const conv2d_params_t *p);
void conv_direct_grad_input(const float *dy, const float *w, float *dx, const conv2d_params_t *p);
void conv_direct_grad_weight(const float *x, const float *dy, float *dw, const conv2d_params_t *p);
void conv_dw3x3_fwd(const float *x, const float *w, const float *bias, float *y, const conv2d_params_t *p,
                    int flip);
void conv_dw3x3_grad_input_s2(const float *dy, const float *w, float *dx, const conv2d_params_t *p);
void conv_dw3x3_grad_weight(const float *x, const float *dy, float *dw, const conv2d_params_t *p);
void conv_pw_product(const float *w, const float *b, const float *bias, float *out, const conv2d_params_t *p,
                     int transposed);
void conv_pw_grad_weight(const float *x, const float *dy, float *dw, const conv2d_params_t *p);

#endif /* TINYODL_CONV_INTERNAL_H */
