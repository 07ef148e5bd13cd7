/*
 * tinyodl FP32 kernel library: the compute kernels of a training step (forward, loss, backward,
 * optimizer update) for a PULP-style cluster of cores sharing memory.
 *
 * Execution model (contract with the runtime, tinyodl_rt.h):
 *   - Generated code calls every kernel on ALL cores of the team at once with the same arguments.
 *     Each core computes its own share, chosen from rt_core_id() / rt_num_cores() via rt_chunk().
 *   - The caller puts rt_barrier() after each kernel; kernels do not end with one. A kernel that needs
 *     a barrier inside says so below (none of the compute kernels does).
 *   - Outputs are overwritten, never accumulated into, except the in-place optimizer updates.
 *   - Correct for any core count 1..8 and any shape, including shapes with fewer items than cores.
 *   - Each output element is computed by exactly one core in an order that does not depend on the
 *     core count, so results are bitwise identical for every core count.
 *
 * Layouts: float32, row-major, activations NCHW, conv weights [K, C/groups, KH, KW].
 * Pointers of one call must not alias, except where a kernel is documented as in-place safe.
 */
#ifndef TINYODL_KERNELS_H
#define TINYODL_KERNELS_H

/* ---- convolution (conv.c) --------------------------------------------------------------------- */

/* 2-D convolution, dilation 1. groups divides C and K: groups == 1 (dense) and groups == C
 * (depthwise, K = C * multiplier) are the cases the compiler emits; any other divisor works too.
 * OH and OW are given (not derived), so a tile of a larger convolution is itself a convolution:
 * a band of output rows is a call with fewer OH, x pointing at its first input row, and pad_top /
 * pad_bottom set to the zero rows the band really has. Pads may be asymmetric and the output may end
 * before the padded input does (ONNX/PyTorch floor mode); windows reading outside [0,H) x [0,W) see
 * zeros. */
typedef struct {
    int N, C, H, W;      /* input x [N, C, H, W] */
    int K, KH, KW;       /* weights w [K, C / groups, KH, KW] */
    int OH, OW;          /* output y [N, K, OH, OW] */
    int stride_h, stride_w;
    int pad_top, pad_left, pad_bottom, pad_right;
    int groups;
} conv2d_params_t;

/* y = conv(x, w) + bias (bias [K] or NULL). Split over (n, group, 4-channel block, output row);
 * depthwise 3x3: over (n, channel, output row), a core's consecutive rows of a channel as one band. */
void conv2d_fwd(const float *x, const float *w, const float *bias, float *y, const conv2d_params_t *p);
/* dx [N, C, H, W] = gradient of the convolution w.r.t. x given dy [N, K, OH, OW].
 * Split over (n, group, 4-channel block, input row); depthwise 3x3: over (n, channel, input row). */
void conv2d_grad_input(const float *dy, const float *w, float *dx, const conv2d_params_t *p);
/* dw [K, C/groups, KH, KW] = gradient w.r.t. w, summed over the batch.
 * Split over (group, 4-output-channel block, input channel, kernel row), for 1x1 kernels over
 * (group, 4-output-channel block, 4-input-channel block); each core reduces over the batch and all
 * output pixels itself (no atomics, no barrier). */
void conv2d_grad_weight(const float *x, const float *dy, float *dw, const conv2d_params_t *p);
/* out[k] = sum over n and the plane of dy[n, k, :] (bias gradient of conv, batch norm beta).
 * Split over k. */
void channel_sum(const float *dy, float *out, int N, int K, int plane);

/* ---- matrix product (linear.c) ---------------------------------------------------------------- */

typedef enum {
    GEMM_BIAS_NONE = 0,
    GEMM_BIAS_COL = 1,    /* bias [N], added to every row (ONNX Gemm C of shape [N] or [1, N]) */
    GEMM_BIAS_ROW = 2,    /* bias [M], added to every column (C of shape [M, 1]) */
    GEMM_BIAS_FULL = 3,   /* bias [M, N], dense */
    GEMM_BIAS_SCALAR = 4  /* bias [1] */
} gemm_bias_kind_t;

/* Y[M, N] = alpha * op(A) @ op(B) + beta * bias.
 * op(A) is [M, K]: A is stored [M, K] (row stride lda) or, with trans_a, [K, M] (row stride lda).
 * op(B) is [K, N]: B is stored [K, N] (row stride ldb) or, with trans_b, [N, K] (row stride ldb).
 * Y has row stride ldy. A leading dimension of 0 means the dense one (the stored row length), so a
 * sub-matrix of a larger one is a call with explicit strides. */
typedef struct {
    int M, N, K;
    int trans_a, trans_b;
    float alpha, beta;
    int bias_kind; /* gemm_bias_kind_t */
    int lda, ldb, ldy;
} gemm_params_t;

/* Split over 4x4 blocks of Y. */
void gemm(const float *A, const float *B, const float *bias, float *Y, const gemm_params_t *p);
/* out[n] = scale * sum_m dy[m, n] for dy [M, N] (gradient of a per-column bias). Split over n. */
void col_sum(const float *dy, float *out, int M, int N, float scale);
/* out[m] = scale * sum_n dy[m, n] (gradient of a per-row bias). Split over m. */
void row_sum(const float *dy, float *out, int M, int N, float scale);

/* ---- element-wise (elementwise.c); all split over the elements -------------------------------
 * All in-place safe: the result may be any operand of the same size (y == a or y == b, y == x,
 * dx == dy or dx == x), because element i of the result is computed from element i of each
 * full-size operand only, by the core that writes it, after reading them. The memory pass relies on
 * this to let a result take over the storage of an operand that dies at the call. */

void add(const float *a, const float *b, float *y, int n);
/* y[i0,i1,i2,i3] = a[sum i_d * a_strides[d]] + b[sum i_d * b_strides[d]] for y dense of `shape`.
 * Strides are in elements; a stride of 0 broadcasts that dimension. Lower-rank tensors are
 * expressed with leading dimensions of size 1. */
void add_broadcast(const float *a, const float *b, float *y, const int shape[4], const int a_strides[4],
                   const int b_strides[4]);
void scale(const float *x, float *y, int n, float s);
void relu(const float *x, float *y, int n);
void relu_grad(const float *dy, const float *x, float *dx, int n);              /* dy where x > 0 */
void leaky_relu(const float *x, float *y, int n, float alpha);
void leaky_relu_grad(const float *dy, const float *x, float *dx, int n, float alpha);
void sigmoid(const float *x, float *y, int n);
void sigmoid_grad(const float *dy, const float *y, float *dx, int n);           /* dy * y * (1 - y) */
/* Named tanh_fwd because <math.h> owns tanh. */
void tanh_fwd(const float *x, float *y, int n);
void tanh_grad(const float *dy, const float *y, float *dx, int n);              /* dy * (1 - y^2) */
void clip(const float *x, float *y, int n, float min, float max);
void clip_grad(const float *dy, const float *x, float *dx, int n, float min, float max);

/* ---- pooling (pool.c) ------------------------------------------------------------------------- */

/* x [N, C, H, W] -> y [N, C, OH, OW]. Window (oh, ow) covers rows oh*stride_h - pad_top + [0, KH)
 * and likewise for columns; OH/OW are given, so ceil mode is just a larger OH/OW. */
typedef struct {
    int N, C, H, W;
    int OH, OW;
    int KH, KW;
    int stride_h, stride_w;
    int pad_top, pad_left, pad_bottom, pad_right;
    int count_include_pad; /* avgpool: 1 = divide by the window clipped to the padded input
                              (rows [-pad_top, H + pad_bottom)), 0 = by its in-image positions */
} pool2d_params_t;

/* Padded positions are -inf; a window with no in-image position gives -inf. Split over output rows. */
void maxpool2d_fwd(const float *x, float *y, const pool2d_params_t *p);
/* dx[n,c,i,j] = sum of dy over the windows whose first maximum (row-major window order, recomputed
 * from x) is at (i, j). dx is fully overwritten. Split over rows of dx (no atomics). */
void maxpool2d_grad(const float *dy, const float *x, float *dx, const pool2d_params_t *p);
/* Average over the window; a window with a zero divisor gives 0. Split over output rows. */
void avgpool2d_fwd(const float *x, float *y, const pool2d_params_t *p);
/* Gradient of avgpool2d_fwd. Split over rows of dx. */
void avgpool2d_grad(const float *dy, float *dx, const pool2d_params_t *p);
/* y[n, c] = mean of the plane x[n, c, :]. Split over (n, c). */
void global_avgpool_fwd(const float *x, float *y, int N, int C, int plane);
/* dx[n, c, :] = dy[n, c] / plane. Split over the elements of dx. */
void global_avgpool_grad(const float *dy, float *dx, int N, int C, int plane);

/* ---- batch norm with fixed statistics (norm.c) ------------------------------------------------ */

/* y = (x - mean[c]) / sqrt(var[c] + eps) * gamma[c] + beta[c] over x [N, C, plane].
 * Split over the elements. In-place safe (y == x). */
void batchnorm_fwd(const float *x, const float *gamma, const float *beta, const float *mean,
                   const float *var, float *y, int N, int C, int plane, float eps);
/* dx = dy * gamma[c] / sqrt(var[c] + eps). Split over the elements. In-place safe (dx == dy). */
void batchnorm_grad_input(const float *dy, const float *gamma, const float *var, float *dx, int N, int C,
                          int plane, float eps);
/* dgamma[c] = sum dy * (x - mean[c]) / sqrt(var[c] + eps); dbeta[c] = sum dy (over n and the plane).
 * Either output may be NULL. Split over c. */
void batchnorm_grad_params(const float *dy, const float *x, const float *mean, const float *var,
                           float *dgamma, float *dbeta, int N, int C, int plane, float eps);

/* ---- losses and softmax (loss.c) -------------------------------------------------------------- */

/* loss_out[0] = mean over the N rows of -log softmax(logits[row])[labels[row]] (max-subtracted).
 * Computed entirely by core 0 in a fixed order: deterministic and independent of the core count. */
void softmax_cross_entropy(const float *logits, const int *labels, float *loss_out, int N, int C);
/* dlogits = (softmax(logits) - onehot(labels)) / N. Split over rows. */
void softmax_cross_entropy_grad(const float *logits, const int *labels, float *dlogits, int N, int C);
/* loss_out[0] = mean((pred - target)^2) over n elements; computed by core 0 like the above. */
void mse_loss(const float *pred, const float *target, float *loss_out, int n);
/* dpred = 2 * (pred - target) / n. Split over the elements. */
void mse_loss_grad(const float *pred, const float *target, float *dpred, int n);
/* Row-wise softmax of x [rows, cols] (max-subtracted). Split over rows. */
void softmax_fwd(const float *x, float *y, int rows, int cols);
/* dx = y * (dy - sum_row(dy * y)), y the softmax output. Split over rows. */
void softmax_grad(const float *dy, const float *y, float *dx, int rows, int cols);

/* ---- optimizers, in place, PyTorch semantics (optim.c); split over the elements --------------- */

/* g' = g + weight_decay * w; with momentum: buf = momentum * buf + g' (buf starts at zero, so the
 * first step gives buf = g' as in PyTorch), step = nesterov ? g' + momentum * buf : buf; without
 * momentum (momentum_buf may be NULL): step = g'. Then w -= lr * step. g is not modified. */
void sgd_update(float *w, const float *g, float *momentum_buf, int n, float lr, float momentum,
                float weight_decay, int nesterov);
/* Adam (decoupled == 0: g' = g + weight_decay * w) or AdamW (decoupled == 1: w *= 1 - lr * wd first).
 * m = beta1 * m + (1 - beta1) * g'; v = beta2 * v + (1 - beta2) * g'^2;
 * w -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps), t = step >= 1. m, v start at 0. */
void adam_update(float *w, const float *g, float *m, float *v, int n, float lr, float beta1, float beta2,
                 float eps, float weight_decay, int decoupled, int step);

#endif /* TINYODL_KERNELS_H */
