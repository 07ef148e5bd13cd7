/*
 * Matrix product with bias (ONNX Gemm / linear layers) and the bias-gradient reductions.
 *
 * Y is split into 4x4 blocks dealt out to the cores. A block keeps its 16 sums in registers while it
 * walks the K dimension, loading 4 values of op(A) and 4 of op(B) per step for 16 multiply-adds.
 * The four transpose combinations are separate instantiations so the unit-stride side of each
 * operand is a constant offset and only the other side costs address arithmetic.
 */
#include <stddef.h>

#include "kernels_internal.h"
#include "tinyodl_kernels.h"
#include "tinyodl_rt.h"

#define GEMM_BLOCK 4

/* acc[MR][NR] = sum over k of A[i*a_si + k*a_sk] * B[k*b_sk + j*b_sj]. */
TK_INLINE void gemm_tile(float acc[][GEMM_BLOCK], const float *restrict A, int a_si, int a_sk,
                         const float *restrict B, int b_sk, int b_sj, int K, const int MR, const int NR)
{
    TK_UNROLL for (int i = 0; i < MR; i++) {
        TK_UNROLL for (int j = 0; j < NR; j++) acc[i][j] = 0.0f;
    }
    for (int k = 0; k < K; k++) {
        float av[GEMM_BLOCK], bv[GEMM_BLOCK];
        TK_UNROLL for (int i = 0; i < MR; i++) av[i] = A[i * a_si];
        TK_UNROLL for (int j = 0; j < NR; j++) bv[j] = B[j * b_sj];
        TK_UNROLL for (int i = 0; i < MR; i++) {
            TK_UNROLL for (int j = 0; j < NR; j++) TK_MAC(acc[i][j], av[i], bv[j]);
        }
        A += a_sk;
        B += b_sk;
    }
}

typedef struct {
    const float *A, *B;
    const float *bias; /* bias(i, j) = bias[i * bias_si + j * bias_sj]; a zero when there is none */
    float *Y;
    int M, N, K, lda, ldb, ldy;
    int bias_si, bias_sj;
    float alpha, beta;
} gemm_ctx_t;

/* Computes and stores the MR x NR block of Y at (i0, j0). TA / TB are the transpose flags. */
TK_INLINE void gemm_block(const gemm_ctx_t *t, int i0, int j0, const int MR, const int NR, const int TA,
                          const int TB)
{
    const int lda = t->lda, ldb = t->ldb;
    const float *A = TA ? t->A + i0 : t->A + (size_t)i0 * lda;
    const float *B = TB ? t->B + (size_t)j0 * ldb : t->B + j0;
    float acc[GEMM_BLOCK][GEMM_BLOCK];
    gemm_tile(acc, A, TA ? 1 : lda, TA ? lda : 1, B, TB ? 1 : ldb, TB ? ldb : 1, t->K, MR, NR);
    float *Y = t->Y + (size_t)i0 * t->ldy + j0;
    const float *bias = t->bias + i0 * t->bias_si + j0 * t->bias_sj;
    TK_UNROLL for (int i = 0; i < MR; i++) {
        TK_UNROLL for (int j = 0; j < NR; j++) {
            float v = t->alpha * acc[i][j];
            TK_MAC(v, t->beta, bias[i * t->bias_si + j * t->bias_sj]);
            Y[(size_t)i * t->ldy + j] = v;
        }
    }
}

/* The columns [j0, j0 + cols) of an MR-row strip, in pieces of 4, 2 and 1 columns. */
TK_INLINE void gemm_strip(const gemm_ctx_t *t, int i0, int j0, int cols, const int MR, const int TA, const int TB)
{
    int j = 0;
    if (cols == GEMM_BLOCK) {
        gemm_block(t, i0, j0, MR, 4, TA, TB);
        return;
    }
    if (cols >= 2) {
        gemm_block(t, i0, j0, MR, 2, TA, TB);
        j = 2;
    }
    if (j < cols) gemm_block(t, i0, j0 + j, MR, 1, TA, TB);
}

/* One 4x4 block position of Y, possibly cut by the matrix edge into 4/2/1-row and -column pieces. */
TK_INLINE void gemm_block_at(const gemm_ctx_t *t, int i0, int j0, int width, const int TA, const int TB)
{
    const int rows = tk_min(GEMM_BLOCK, t->M - i0), cols = tk_min(width, t->N - j0);
    if (rows == GEMM_BLOCK) {
        gemm_strip(t, i0, j0, cols, 4, TA, TB);
        return;
    }
    int i = 0;
    if (rows >= 2) {
        gemm_strip(t, i0, j0, cols, 2, TA, TB);
        i = 2;
    }
    if (i < rows) gemm_strip(t, i0 + i, j0, cols, 1, TA, TB);
}

#define GEMM_VARIANT(TA, TB)                                                                            \
    static void gemm_blocks_##TA##TB(const gemm_ctx_t *t, int first, int end, int col_blocks, int width)  \
    {                                                                                                   \
        for (int b = first; b < end; b++)                                                               \
            gemm_block_at(t, b / col_blocks * GEMM_BLOCK, b % col_blocks * width, width, TA, TB);       \
    }
GEMM_VARIANT(0, 0)
GEMM_VARIANT(0, 1)
GEMM_VARIANT(1, 0)
GEMM_VARIANT(1, 1)

void gemm(const float *A, const float *B, const float *bias, float *Y, const gemm_params_t *p)
{
    static const float no_bias = 0.0f;
    gemm_ctx_t t;
    t.A = A;
    t.B = B;
    t.Y = Y;
    t.M = p->M;
    t.N = p->N;
    t.K = p->K;
    t.lda = p->lda ? p->lda : (p->trans_a ? p->M : p->K);
    t.ldb = p->ldb ? p->ldb : (p->trans_b ? p->K : p->N);
    t.ldy = p->ldy ? p->ldy : p->N;
    t.alpha = p->alpha;
    t.beta = p->beta;
    t.bias = bias;
    t.bias_si = t.bias_sj = 0;
    switch (bias ? p->bias_kind : GEMM_BIAS_NONE) {
    case GEMM_BIAS_COL: t.bias_sj = 1; break;
    case GEMM_BIAS_ROW: t.bias_si = 1; break;
    case GEMM_BIAS_FULL: t.bias_si = p->N; t.bias_sj = 1; break;
    case GEMM_BIAS_SCALAR: break;
    default: t.bias = &no_bias; t.beta = 0.0f; break;
    }
    const int row_blocks = (p->M + GEMM_BLOCK - 1) / GEMM_BLOCK;
    /* Small products: blocks 2 columns wide, so that more cores get a share. */
    int width = GEMM_BLOCK;
    if (row_blocks * ((p->N + GEMM_BLOCK - 1) / GEMM_BLOCK) < 2 * rt_num_cores()) width = 2;
    const int col_blocks = (p->N + width - 1) / width;
    int first, end;
    rt_chunk(row_blocks * col_blocks, &first, &end);
    if (p->trans_a)
        (p->trans_b ? gemm_blocks_11 : gemm_blocks_10)(&t, first, end, col_blocks, width);
    else
        (p->trans_b ? gemm_blocks_01 : gemm_blocks_00)(&t, first, end, col_blocks, width);
}

void col_sum(const float *dy, float *out, int M, int N, float scale)
{
    int first, end;
    rt_chunk(N, &first, &end);
    for (int j = first; j < end; j++) out[j] = 0.0f;
    for (int i = 0; i < M; i++) {
        const float *row = dy + (size_t)i * N;
        for (int j = first; j < end; j++) out[j] += row[j];
    }
    for (int j = first; j < end; j++) out[j] *= scale;
}

void row_sum(const float *dy, float *out, int M, int N, float scale)
{
    int first, end;
    rt_chunk(M, &first, &end);
    for (int i = first; i < end; i++) {
        const float *row = dy + (size_t)i * N;
        float sum = 0.0f;
        for (int j = 0; j < N; j++) sum += row[j];
        out[i] = scale * sum;
    }
}
