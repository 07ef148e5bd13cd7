/* Helpers shared by the kernel sources; not part of the public API. */
#ifndef TINYODL_KERNELS_INTERNAL_H
#define TINYODL_KERNELS_INTERNAL_H

/* Template-like helpers: a function taking `const int` shape constants is inlined into a few small
 * wrappers, each of which GCC compiles with the constants folded and the loops over them unrolled. */
#define TK_INLINE static inline __attribute__((always_inline))

/* GCC's pragma for unrolling loops of constant trip count; a no-op for other compilers. */
#if defined(__GNUC__) && !defined(__clang__)
#define TK_UNROLL _Pragma("GCC unroll 16")
#else
#define TK_UNROLL
#endif

/* Multiply-accumulate, always fused: acc += a * b rounds once, on the target (fmadd.s) and on the host
 * alike, whatever -ffp-contract the caller builds with (ISO -std=c11 turns contraction off). */
#define TK_MAC(acc, a, b) ((acc) = __builtin_fmaf((a), (b), (acc)))

/* Hides a pointer's value from the optimizer so that it stays one register bumped once per loop
 * iteration, instead of being folded into a shared base plus many precomputed offsets (which GCC
 * then spills to the stack). Emits no instruction. */
#define TK_OPAQUE(ptr) __asm__("" : "+r"(ptr))

TK_INLINE int tk_min(int a, int b) { return a < b ? a : b; }
TK_INLINE int tk_max(int a, int b) { return a > b ? a : b; }

/* Smallest integer >= a / b for b > 0 and any sign of a. */
TK_INLINE int tk_ceil_div(int a, int b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
/* Largest integer <= a / b for b > 0 and any sign of a. */
TK_INLINE int tk_floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

#endif /* TINYODL_KERNELS_INTERNAL_H */
