"""Graph-to-graph passes over the training IR, and the pass manager that runs named pipelines."""

from tinyodl.passes.manager import PASSES, Pass, PassError, PassManager, PassOptionError, parse_pipeline

__all__ = ["PASSES", "Pass", "PassError", "PassManager", "PassOptionError", "parse_pipeline"]
