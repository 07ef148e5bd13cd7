"""Op families; importing this package registers every op."""

from tinyodl.ir.ops import conv, elementwise, gemm, loss, norm, optim, pool, precision, shape, tiling  # noqa: F401
