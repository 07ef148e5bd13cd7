/* tinyodl tile loops: see tinyodl_tile.h. */
#include "tinyodl_tile.h"

#include <stddef.h>

#include "tinyodl_rt.h"

typedef struct {
    int start[4], size[4];
} box_t;

static void box_of(const rt_tile_operand_t *op, const rt_tile_dim_t *dims, const int *const *e, box_t *box)
{
    for (int d = 0; d < 4; ++d) {
        if (dims[d].axis < 0) {
            box->start[d] = 0;
            box->size[d] = op->dims[d];
        } else {
            box->start[d] = e[(int)dims[d].axis][dims[d].start];
            box->size[d] = e[(int)dims[d].axis][dims[d].size];
        }
    }
}

static int volume(const box_t *box)
{
    return box->size[0] * box->size[1] * box->size[2] * box->size[3];
}

/* Moves the box `part` of an L2 tensor (4-D view `dims`) to or from an L1 tile holding the box `tile`
 * densely (part lies inside tile). Dimensions that are whole on both sides merge into one contiguous
 * run; the next one becomes the rows of a 2-D transfer; any outer ones become separate transfers. */
static rt_dma_id_t transfer(int to_l1, char *l2, char *l1, const int dims[4], const box_t *part, const box_t *tile)
{
    unsigned l2_stride[4], l1_stride[4];
    l2_stride[3] = l1_stride[3] = 4u;
    for (int d = 2; d >= 0; --d) {
        l2_stride[d] = l2_stride[d + 1] * (unsigned)dims[d + 1];
        l1_stride[d] = l1_stride[d + 1] * (unsigned)tile->size[d + 1];
    }
    int run_dim = 3;
    unsigned run = (unsigned)part->size[3] * 4u;
    while (run_dim > 0 && part->size[run_dim] == dims[run_dim] && part->size[run_dim] == tile->size[run_dim]) {
        --run_dim;
        run *= (unsigned)part->size[run_dim];
    }
    char *l2_base = l2, *l1_base = l1;
    for (int d = 0; d < 4; ++d) {
        l2_base += (unsigned)part->start[d] * l2_stride[d];
        l1_base += (unsigned)(part->start[d] - tile->start[d]) * l1_stride[d];
    }
    if (run_dim == 0)
        return to_l1 ? rt_dma_start_1d(l1_base, l2_base, run) : rt_dma_start_1d(l2_base, l1_base, run);
    int row_dim = run_dim - 1;
    unsigned rows = (unsigned)part->size[row_dim];
    int outer[2] = {1, 1};
    for (int d = 0; d < row_dim; ++d)
        outer[d] = part->size[d];
    rt_dma_id_t id = 0;
    for (int i = 0; i < outer[0]; ++i) {
        for (int j = 0; j < outer[1]; ++j) {
            char *l2_at = l2_base + (unsigned)i * l2_stride[0] + (row_dim > 1 ? (unsigned)j * l2_stride[1] : 0u);
            char *l1_at = l1_base + (unsigned)i * l1_stride[0] + (row_dim > 1 ? (unsigned)j * l1_stride[1] : 0u);
            if (to_l1)
                id = rt_dma_start_2d(l1_at, l2_at, run, rows, l1_stride[row_dim], l2_stride[row_dim]);
            else
                id = rt_dma_start_2d(l2_at, l1_at, run, rows, l2_stride[row_dim], l1_stride[row_dim]);
        }
    }
    return id;
}

/* The mixed-radix index of tile t. */
static void tile_index(const rt_tile_loop_t *loop, int t, int *index)
{
    for (int a = loop->num_axes - 1; a >= 0; --a) {
        index[a] = t % loop->axes[a].count;
        t /= loop->axes[a].count;
    }
}

static void entries(const rt_tile_loop_t *loop, const int *index, const int **e)
{
    for (int a = 0; a < loop->num_axes; ++a)
        e[a] = loop->axes[a].entries + index[a] * loop->axes[a].columns;
}

/* Whether operand i's box differs between the tiles at `index` and `prev`. */
static int changes(const rt_tile_operand_t *op, const rt_tile_loop_t *loop, const int *index, const int *prev)
{
    for (int a = 0; a < loop->num_axes; ++a)
        if ((op->axes_mask >> a & 1u) && index[a] != prev[a])
            return 1;
    return 0;
}

static int reduction_edge(const rt_tile_loop_t *loop, const int *index, int last)
{
    for (int a = 0; a < loop->num_axes; ++a)
        if (loop->axes[a].reduction && index[a] != (last ? loop->axes[a].count - 1 : 0))
            return 0;
    return 1;
}

static rt_dma_id_t load(const rt_tile_loop_t *loop, void *const *l2, unsigned char *l1, int i, const int **e,
                        unsigned slot)
{
    const rt_tile_operand_t *op = &loop->operands[i];
    box_t box;
    box_of(op, op->box, e, &box);
    return transfer(1, (char *)l2[i], (char *)l1 + slot, op->dims, &box, &box);
}

#define RT_TILE_MAX_COLUMNS 8

/* The descriptor lives with the program's constants in L2; the loop works from a copy on the stack (L1
 * on a PULP cluster), so its bookkeeping does not pay L2 latency on every tile. */
typedef struct {
    rt_tile_loop_t loop;
    rt_tile_axis_t axes[RT_TILE_MAX_AXES];
    rt_tile_operand_t operands[RT_TILE_MAX_OPERANDS];
    int rows[RT_TILE_MAX_AXES][RT_TILE_MAX_COLUMNS];  /* the current tile's entries */
} local_loop_t;

static void copy_entries(local_loop_t *local, const int *index, const int **e)
{
    for (int a = 0; a < local->loop.num_axes; ++a) {
        const int *row = local->axes[a].entries + index[a] * local->axes[a].columns;
        for (int c = 0; c < local->axes[a].columns; ++c)
            local->rows[a][c] = row[c];
        e[a] = local->rows[a];
    }
}

void rt_tile_loop(const rt_tile_loop_t *shared, void *const *l2, unsigned char *l1)
{
    local_loop_t local;
    local.loop = *shared;
    for (int a = 0; a < shared->num_axes; ++a)
        local.axes[a] = shared->axes[a];
    for (int i = 0; i < shared->num_operands; ++i)
        local.operands[i] = shared->operands[i];
    local.loop.axes = local.axes;
    local.loop.operands = local.operands;
    const rt_tile_loop_t *loop = &local.loop;
    int tiles = 1;
    for (int a = 0; a < loop->num_axes; ++a)
        tiles *= loop->axes[a].count;
    const int core = rt_core_id();
    int index[RT_TILE_MAX_AXES] = {0}, next[RT_TILE_MAX_AXES] = {0};
    const int *e[RT_TILE_MAX_AXES], *next_e[RT_TILE_MAX_AXES];
    /* Version of each operand's contents: a load (in, inout) or a new output tile (out) bumps it; its
     * parity picks the slot. Every core keeps the same count; only core 0 moves data. */
    int version[RT_TILE_MAX_OPERANDS];
    rt_dma_id_t loaded = 0, stored[RT_TILE_MAX_OPERANDS][2];
    for (int i = 0; i < loop->num_operands; ++i) {
        version[i] = loop->operands[i].mode == RT_TILE_OUT ? -1 : 0;
        stored[i][0] = stored[i][1] = 0;
    }
    copy_entries(&local, index, e);
    if (core == 0) {
        for (int i = 0; i < loop->num_operands; ++i)
            if (loop->operands[i].mode != RT_TILE_OUT)
                loaded = load(loop, l2, l1, i, e, loop->operands[i].slot[0]);
    }
    for (int t = 0; t < tiles; ++t) {
        const int first = reduction_edge(loop, index, 0), last = reduction_edge(loop, index, 1);
        for (int i = 0; i < loop->num_operands; ++i)
            if (loop->operands[i].mode == RT_TILE_OUT && first)
                ++version[i];
        if (core == 0) {
            if (loaded)
                rt_dma_wait(loaded);
            for (int i = 0; i < loop->num_operands; ++i) {
                const rt_tile_operand_t *op = &loop->operands[i];
                if (op->mode == RT_TILE_OUT && first && stored[i][version[i] & 1])
                    rt_dma_wait(stored[i][version[i] & 1]);
            }
            loaded = 0;
            if (t + 1 < tiles) {
                tile_index(loop, t + 1, next);
                entries(loop, next, next_e);
                for (int i = 0; i < loop->num_operands; ++i) {
                    const rt_tile_operand_t *op = &loop->operands[i];
                    if (op->mode == RT_TILE_OUT || !changes(op, loop, next, index))
                        continue;
                    unsigned slot = (unsigned)(version[i] + 1) & 1u;
                    if (op->mode == RT_TILE_INOUT && stored[i][slot])  /* still being stored from */
                        rt_dma_wait(stored[i][slot]);
                    loaded = load(loop, l2, l1, i, next_e, op->slot[slot]);
                }
            }
        }
        rt_barrier();
        rt_tile_t tile;
        for (int a = 0; a < loop->num_axes; ++a)
            tile.e[a] = e[a];
        tile.first = first;
        for (int i = 0; i < loop->num_operands; ++i) {
            const rt_tile_operand_t *op = &loop->operands[i];
            unsigned offset = op->slot[version[i] & 1];
            if (op->mode == RT_TILE_OUT && !first && op->scratch >= 0)
                offset = (unsigned)op->scratch;
            tile.p[i] = l1 + offset;
        }
        loop->kernel(&tile);
        if (!first) {
            rt_barrier();
            for (int i = 0; i < loop->num_operands; ++i) {
                const rt_tile_operand_t *op = &loop->operands[i];
                if (op->mode != RT_TILE_OUT || op->scratch < 0)
                    continue;
                box_t box;
                box_of(op, op->box, e, &box);
                float *sum = (float *)(l1 + op->slot[version[i] & 1]);
                const float *part = (const float *)(l1 + op->scratch);
                int begin, end;
                rt_chunk(volume(&box), &begin, &end);
                for (int k = begin; k < end; ++k)
                    sum[k] += part[k];
            }
        }
        rt_barrier();
        if (core == 0 && last) {
            for (int i = 0; i < loop->num_operands; ++i) {
                const rt_tile_operand_t *op = &loop->operands[i];
                if (op->mode == RT_TILE_IN)
                    continue;
                box_t box, part;
                box_of(op, op->box, e, &box);
                box_of(op, op->store, e, &part);
                stored[i][version[i] & 1] = transfer(0, (char *)l2[i], (char *)l1 + op->slot[version[i] & 1],
                                                     op->dims, &part, &box);
            }
        }
        for (int i = 0; i < loop->num_operands; ++i) {
            const rt_tile_operand_t *op = &loop->operands[i];
            if (op->mode != RT_TILE_OUT && t + 1 < tiles) {
                int upcoming[RT_TILE_MAX_AXES];
                tile_index(loop, t + 1, upcoming);
                if (changes(op, loop, upcoming, index))
                    ++version[i];
            }
        }
        tile_index(loop, t + 1 < tiles ? t + 1 : t, index);
        copy_entries(&local, index, e);
    }
    if (core == 0)
        rt_dma_wait_all();
    rt_barrier();
}
