"""Output files: checked before any work, written atomically so none is ever half-written."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyodl.driver.data import Batches
from tinyodl.driver.options import Options, UserError
from tinyodl.frontend.onnx_load import shown
from tinyodl.ir.graph import Graph

if TYPE_CHECKING:
    from tinyodl.backend_c.program import Program


def check_writable(*paths: Path | None) -> None:
    """Fail before any work when an output file cannot go where the user asked (so none is half-written)."""
    for path in (Path(p) for p in paths if p is not None):
        try:
            _check_writable(path)
        except OSError as exc:  # e.g. a name longer than the file system allows
            raise UserError(f"{shown(str(path))}: cannot write ({exc.strerror or exc})") from None


def _check_writable(path: Path) -> None:
    where = shown(str(path))
    if path.is_dir():
        raise UserError(f"{where}: is a directory, expected a file name")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{where}: {shown(str(ancestor))} is not a directory")
    if not os.access(ancestor, os.W_OK):
        raise UserError(f"{where}: cannot write into {shown(str(ancestor))}")


def write_atomic(path: Path, write: Any) -> None:
    """Write a file through a temporary sibling so that no half-written file is left on failure."""
    path = Path(path)
    check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UserError(f"{path}: cannot write ({exc.strerror or exc})") from None
    os.close(handle)
    try:
        write(Path(temp))
        Path(temp).chmod(0o666 & ~_umask())  # mkstemp's 0600 would make the result private
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def save_params(path: Path, params: dict[str, np.ndarray]) -> None:
    def write(temp: Path) -> None:
        with open(temp, "wb") as handle:
            np.savez(handle, **{name: np.asarray(array, np.float32) for name, array in params.items()})
    write_atomic(path, write)


def save_report(path: Path, report: dict[str, Any]) -> None:
    write_atomic(path, lambda temp: temp.write_text(json.dumps(report, indent=2) + "\n"))


def write_c_project(graph: Graph, feeds: Batches | Sequence[Mapping[str, np.ndarray]], options: Options,
                    out_dir: Path, *, outputs: bool = False, force: bool = False, platform: str = "qemu") -> Program:
    """The C project of `graph` training on `feeds` (per-step batches, which may carry the dataset they index),
    with the backend's errors as the one-line user error. `platform` is the simulator the runtime is built for."""
    from tinyodl.backend_c.dataset import TrainingData  # the backend loads jinja2: only when a project is written
    from tinyodl.backend_c.emitters import BackendError
    from tinyodl.backend_c.project import write_project

    steps = feeds.steps if isinstance(feeds, Batches) else feeds
    dataset = getattr(steps, "dataset", None)
    data = (TrainingData(len(steps), dataset.arrays, dataset.rows) if dataset is not None
            else TrainingData.from_steps(steps))
    try:
        return write_project(graph, data, options.target(), out_dir, dma_check=options.dma_check, outputs=outputs,
                             force=force, platform=platform)
    except BackendError as exc:
        raise UserError(str(exc)) from None
