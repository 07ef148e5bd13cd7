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
    const float *A, *B, *bias;
    float *Y;
    int M, N, K, lda, ldb, ldy;
    float alpha, beta;
    int bias_kind;
} gemm_ctx_t;

TK_INLINE float gemm_bias_at(const gemm_ctx_t *t, int i, int j)
{
    switch (t->bias_kind) {
    case GEMM_BIAS_COL: return t->bias[j];
    case GEMM_BIAS_ROW: return t->bias[i];
    case GEMM_BIAS_FULL: return t->bias[(size_t)i * t->N + j];
    case GEMM_BIAS_SCALAR: return t->bias[0];
    default: return 0.0f;
    }
}

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
    TK_UNROLL for (int i = 0; i < MR; i++) {
        TK_UNROLL for (int j = 0; j < NR; j++) {
            float v = t->alpha * acc[i][j];
            if (t->bias_kind != GEMM_BIAS_NONE) TK_MAC(v, t->beta, gemm_bias_at(t, i0 + i, j0 + j));
            Y[(size_t)i * t->ldy + j] = v;
        }
    }
}

/* One 4x4 block position of Y, possibly cut by the matrix edge. */
TK_INLINE void gemm_block_at(const gemm_ctx_t *t, int i0, int j0, const int TA, const int TB)
{
    const int rows = tk_min(GEMM_BLOCK, t->M - i0), cols = tk_min(GEMM_BLOCK, t->N - j0);
    if (rows == GEMM_BLOCK) {
        if (cols == GEMM_BLOCK)
            gemm_block(t, i0, j0, 4, 4, TA, TB);
        else
            for (int j = 0; j < cols; j++) gemm_block(t, i0, j0 + j, 4, 1, TA, TB);
    } else {
        for (int i = 0; i < rows; i++) {
            if (cols == GEMM_BLOCK)
                gemm_block(t, i0 + i, j0, 1, 4, TA, TB);
            else
                for (int j = 0; j < cols; j++) gemm_block(t, i0 + i, j0 + j, 1, 1, TA, TB);
        }
    }
}

#define GEMM_VARIANT(TA, TB)                                                                            \
    static void gemm_blocks_##TA##TB(const gemm_ctx_t *t, int first, int end, int nblocks)             \
    {                                                                                                   \
        for (int b = first; b < end; b++)                                                               \
            gemm_block_at(t, b / nblocks * GEMM_BLOCK, b % nblocks * GEMM_BLOCK, TA, TB);               \
    }
GEMM_VARIANT(0, 0)
GEMM_VARIANT(0, 1)
GEMM_VARIANT(1, 0)
GEMM_VARIANT(1, 1)

void gemm(const float *A, const float *B, const float *bias, float *Y, const gemm_params_t *p)
{
    gemm_ctx_t t;
    t.A = A;
    t.B = B;
    t.bias = bias;
    t.Y = Y;
    t.M = p->M;
    t.N = p->N;
    t.K = p->K;
    t.lda = p->lda ? p->lda : (p->trans_a ? p->M : p->K);
    t.ldb = p->ldb ? p->ldb : (p->trans_b ? p->K : p->N);
    t.ldy = p->ldy ? p->ldy : p->N;
    t.alpha = p->alpha;
    t.beta = p->beta;
    t.bias_kind = bias ? p->bias_kind : GEMM_BIAS_NONE;
    const int col_blocks = (p->N + GEMM_BLOCK - 1) / GEMM_BLOCK;
    const int row_blocks = (p->M + GEMM_BLOCK - 1) / GEMM_BLOCK;
    int first, end;
    rt_chunk(row_blocks * col_blocks, &first, &end);
    if (p->trans_a)
        (p->trans_b ? gemm_blocks_11 : gemm_blocks_10)(&t, first, end, col_blocks);
    else
        (p->trans_b ? gemm_blocks_01 : gemm_blocks_00)(&t, first, end, col_blocks);
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
