"""tinyodl: ONNX models to on-device training steps for RISC-V microcontroller clusters."""

__version__ = "0.1.0"
