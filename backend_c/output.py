"""Writing a project directory without ever touching a file tinyodl did not write.

A project lists the files tinyodl wrote in its manifest. A new or empty directory receives the whole project
at once (written beside it, then renamed into place). An earlier project is updated file by file: each file
replaced by a rename, the files of the earlier project that the new one lacks removed, every other file (the
user's, `make`'s build/) kept. A directory that holds other files and no manifest is refused unless forced.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from tinyodl.backend_c.emitters import BackendError
from tinyodl.frontend.onnx_load import shown

MANIFEST = ".tinyodl-files"
_HEADER = "# The files tinyodl wrote here: `tinyodl compile` replaces and removes only these, never another file.\n"


def write_tree(out_dir: Path, files: dict[str, str], *, force: bool = False) -> None:
    """Write `files` (relative path -> text) as the project in `out_dir`. With `force`, a directory that is not
    a project, or a file at one of the project's paths that tinyodl did not write, is written over."""
    out_dir = Path(out_dir).resolve()  # "." or ".." cannot be renamed, their resolved paths can
    files = {**files, MANIFEST: _HEADER + "".join(f"{path}\n" for path in sorted(files))}
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise BackendError(f"{shown(str(out_dir))}: exists and is not a directory")
        if out_dir.is_dir() and any(out_dir.iterdir()):
            _update(out_dir, files, _written_before(out_dir, files, force))
        else:
            _write_whole(out_dir, files)
    except OSError as exc:  # e.g. a name longer than the file system allows, a read-only directory
        raise BackendError(f"{shown(str(out_dir))}: cannot write ({exc.strerror or exc})") from None


def _written_before(out_dir: Path, files: dict[str, str], force: bool) -> set[str]:
    """The files of the earlier project in `out_dir`, after checking that nothing else is in the way."""
    listed = _read_manifest(out_dir)
    if listed is None and not force:
        raise BackendError(f"{shown(str(out_dir))}: not empty and not a tinyodl project (no {MANIFEST}); choose "
                           f"a new or empty directory, or --force to add the project's files to it")
    listed = listed or set()
    for relative in sorted(files):
        path = out_dir / relative
        if path.is_symlink() or not path.exists():
            continue
        if not path.is_file():
            raise BackendError(f"{shown(str(path))}: is in the way of a file of the project")
        if relative not in listed and relative != MANIFEST and not force:
            raise BackendError(f"{shown(str(path))}: not written by tinyodl (not in {MANIFEST}); move it away, "
                               f"or --force to replace it")
    return listed


def _read_manifest(out_dir: Path) -> set[str] | None:
    manifest = out_dir / MANIFEST
    if not manifest.is_file():
        return None
    listed = set()
    for line in manifest.read_text(errors="replace").splitlines():
        if not line or line.startswith("#"):
            continue
        path = PurePosixPath(line)
        if path.is_absolute() or ".." in path.parts or str(path) != line:
            raise BackendError(f"{shown(str(manifest))}: damaged ({line!r} is not a path inside the project); "
                               f"remove it, or choose a new directory")
        listed.add(line)
    return listed


def _update(out_dir: Path, files: dict[str, str], listed: set[str]) -> None:
    staging = Path(tempfile.mkdtemp(prefix=".tinyodl-staging.", dir=out_dir))
    try:
        _write_files(staging, files)
        # An update cut short still leaves a manifest that names every file tinyodl has written here.
        union = staging / ".union"
        union.write_text(_HEADER + "".join(f"{path}\n" for path in sorted(listed | set(files))))
        os.replace(union, out_dir / MANIFEST)
        for relative in sorted(files):
            if relative != MANIFEST:
                (out_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / relative, out_dir / relative)
        for relative in sorted(listed - set(files)):
            _remove(out_dir, relative)
        os.replace(staging / MANIFEST, out_dir / MANIFEST)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove(out_dir: Path, relative: str) -> None:
    """A file of the earlier project that the new one lacks, and its directories once they are empty."""
    path = out_dir / relative
    if path.is_symlink() or path.is_file():
        path.unlink()
    for parent in path.parents:
        if parent == out_dir or not parent.is_dir() or any(parent.iterdir()):
            break
        parent.rmdir()


def _write_whole(out_dir: Path, files: dict[str, str]) -> None:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _chmod_like_mkdir(staging)
        _write_files(staging, files)
        os.replace(staging, out_dir)  # rename(2) replaces an empty directory
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_files(root: Path, files: dict[str, str]) -> None:
    for relative, text in sorted(files.items()):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _chmod_like_mkdir(path: Path) -> None:
    """mkdtemp makes a private (0700) directory; the project should be as readable as any other."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
