"""tinyodl: ONNX models to on-device training steps for RISC-V microcontroller clusters.

The Python API (the command line is a thin layer over it):
    tinyodl.compile(model, out_dir, **options)            -> the C project's directory
    tinyodl.simulate(model, data=..., steps=..., **options) -> SimulationResult (losses, params, report, check)
    tinyodl.evaluate(model, data=..., params=...)         -> Evaluation (loss, accuracy, confusion, predictions)
"""

__version__ = "0.1.0"

from tinyodl.api import SimulationResult, compile, evaluate, simulate
from tinyodl.driver.options import Options, UserError
from tinyodl.driver.qemu import SimulationFailed

__all__ = ["Options", "SimulationFailed", "SimulationResult", "UserError", "compile", "evaluate", "simulate"]
