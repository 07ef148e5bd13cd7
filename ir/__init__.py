"""The training-graph IR: values, ops, the op registry, text format, verifier and reference executor."""

from tinyodl.ir.graph import Graph, Op, Value
from tinyodl.ir.registry import IRError, lookup, registered
from tinyodl.ir.types import DType, Layout, Phase, Role, TensorType

__all__ = [
           "DType",
           "Graph",
           "IRError",
           "Layout",
           "Op",
           "Phase",
           "Role",
           "TensorType",
           "Value",
           "lookup",
           "registered",
]
