"""ONNX -> IR: initializers become parameters, nodes become IR ops, every shape static."""

from tinyodl.frontend.errors import FrontendError
from tinyodl.frontend.onnx_import import import_onnx

__all__ = ["FrontendError", "import_onnx"]
