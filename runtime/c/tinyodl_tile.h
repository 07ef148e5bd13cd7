/*
 * tinyodl tile loops: a kernel computed tile by tile in L1, its operands moved by the DMA engine and
 * double-buffered.
 *
 * The compiler (ir/tiling.py) describes a loop as data: axes, each a table of entries (one row of ints
 * per tile along that axis: the ranges the tile covers), and operands, each a 4-D view of its L2 tensor
 * whose box in a tile takes every dimension either whole or from an entry's (start, size) columns.
 * Tiles run in row-major order over the axes (the last axis fastest); axes marked `reduction` come last,
 * and their partial results are summed in L1 before the tile is stored.
 *
 * All cores call rt_tile_loop with the same arguments. Core 0 drives the DMA: while the team computes
 * tile t, the transfers of tile t+1's operands (those whose box changes) are already running into the
 * other slot, and tile t-1's results are on their way out. An operand that never changes is loaded once.
 * Before the team computes into an output slot, core 0 waits for the transfer that was still reading
 * that slot; the DMA engine runs transfers in order, so loading into a slot after storing from it needs
 * no wait. The loop ends when all of its transfers have completed.
 */
#ifndef TINYODL_TILE_H
#define TINYODL_TILE_H

#define RT_TILE_MAX_AXES 4
#define RT_TILE_MAX_OPERANDS 8

typedef struct {
    const int *entries; /* count rows of `columns` ints */
    int count, columns;
    int reduction;      /* 1: partial results over this axis are summed in L1 */
} rt_tile_axis_t;

typedef struct {
    signed char axis;   /* -1: the whole dimension */
    unsigned char start, size; /* columns of that axis's entry holding the range */
} rt_tile_dim_t;

enum { RT_TILE_IN = 0, RT_TILE_OUT = 1, RT_TILE_INOUT = 2 };

typedef struct {
    int dims[4];             /* the 4-D view of the L2 tensor (elements of 4 bytes) */
    rt_tile_dim_t box[4];    /* loaded (in, inout) or computed (out) */
    rt_tile_dim_t store[4];  /* stored to L2 (out, inout): inside the box */
    unsigned slot[2];        /* L1 offsets of the two slots (equal when the box never changes) */
    int scratch;             /* L1 offset of the partial tile of a split reduction, -1 if none */
    unsigned char mode;      /* RT_TILE_IN, RT_TILE_OUT, RT_TILE_INOUT */
    unsigned char axes_mask; /* bit a: the box depends on axis a */
} rt_tile_operand_t;

/* What the kernel of a tile sees. */
typedef struct {
    const int *e[RT_TILE_MAX_AXES];  /* the tile's entry of every axis */
    void *p[RT_TILE_MAX_OPERANDS];   /* L1 address of every operand's tile (the partial tile of an output
                                        whose reduction is split, except in the first tile) */
    int first;                       /* the first tile of its reduction: bias and initial terms go here */
} rt_tile_t;

typedef struct {
    int num_axes, num_operands;
    const rt_tile_axis_t *axes;
    const rt_tile_operand_t *operands;
    void (*kernel)(const rt_tile_t *tile);  /* called on all cores; splits its work like any kernel */
} rt_tile_loop_t;

/* Runs the loop; l2[i] is operand i's tensor, l1 the base of the L1 scratchpad area. Ends with a
 * barrier, all results stored. */
void rt_tile_loop(const rt_tile_loop_t *loop, void *const *l2, unsigned char *l1);

#endif /* TINYODL_TILE_H */
