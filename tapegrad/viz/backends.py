"""Turning DOT into files: the system Graphviz `dot`, else the pip-installable `graphviz-pure`.

A backend is looked for on PATH and in the running interpreter's scripts directory (where pip puts
`graphviz-pure`, so a virtual environment works without being activated), and next to
`sys.executable`. The environment variable TAPEGRAD_DOT=/path/to/dot overrides the search.
"""
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidValueError, RenderError

__all__ = ["render", "available", "locate", "search_dirs", "looked_for", "install_hint", "missing"]

BACKENDS = ("dot", "graphviz-pure")      # tried in this order
FORMATS = ("svg", "png", "pdf")
NO_PDF = {"graphviz-pure"}
OVERRIDE = "TAPEGRAD_DOT"


def render(target: Any, path: Path | str, format: str | None = None, **draw_options: Any) -> str:
    """Draw `target` (see `draw`) and write it to `path` as svg, png or pdf; return the path written.

    format defaults to the path's suffix (svg when it has none). Without a backend that can write
    the format, the DOT source is written next to `path` (as .dot) and a RenderError says what to install.
    """
    from .dot import draw

    path = Path(path)
    format = format or path.suffix.lstrip(".").lower() or "svg"
    if format not in FORMATS:
        raise InvalidValueError(f"render: format must be one of {FORMATS}, got {format!r}")
    if not path.suffix:
        path = path.with_suffix("." + format)
    return str(write(draw(target, **draw_options).source, path, format))


def search_dirs() -> list[str]:
    """The folders a backend is looked for in, in order: PATH, the interpreter's scripts folder, the
    folder of sys.executable (duplicates dropped)."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    for extra in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        if extra:
            dirs.append(extra)
    seen: set[str] = set()
    out: list[str] = []
    for d in dirs:
        key = os.path.normcase(os.path.abspath(d))
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _override() -> str | None:
    value = os.environ.get(OVERRIDE, "").strip()
    return value or None


def locate(name: str) -> str | None:
    """The path of backend `name` ("dot" or "graphviz-pure"), or None. With TAPEGRAD_DOT set, that file is
    the only backend: locate returns it for the name it is chosen under (see `available`)."""
    override = _override()
    if override is not None:
        return override if name == _override_name(override) and _executable(override) else None
    return shutil.which(name, path=os.pathsep.join(search_dirs()))


def _override_name(path: str) -> str:
    """The backend name TAPEGRAD_DOT stands for: graphviz-pure when its file name says so, else dot."""
    return "graphviz-pure" if "graphviz-pure" in os.path.basename(path) else "dot"


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def available(format: str = "svg") -> list[str]:
    """The backends found (see `locate`) that can write `format`, in the order they are tried."""
    names: Sequence[str] = BACKENDS
    override = _override()
    if override is not None:
        names = [_override_name(override)]
    return [b for b in names if locate(b) and not (format == "pdf" and b in NO_PDF)]


def run(source: str, format: str) -> bytes:
    """Lay out DOT `source` with the first available backend; return the bytes of `format`."""
    found = available(format)
    if not found:
        raise RenderError(missing(format))
    exe = locate(found[0])      # not None: available() lists only names locate finds, hence the ignore below
    result = subprocess.run([exe, f"-T{format}"],  # type: ignore[list-item]
                            input=source.encode("utf-8"), capture_output=True)
    if result.returncode != 0:
        raise RenderError(f"render: {found[0]} ({exe}) failed (exit {result.returncode}): "
                          f"{result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def svg(source: str) -> str:
    """The SVG text of DOT `source` (what a notebook displays), through the first available backend."""
    return run(source, "svg").decode("utf-8")


def write(source: str, path: Path | str, format: str) -> Path:
    """Lay out DOT `source` with the first available backend and write `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not available(format):
        dot_path = path.with_suffix(".dot")
        dot_path.write_text(source, encoding="utf-8")
        raise RenderError(missing(format) + f" The DOT source is in {dot_path}")
    path.write_bytes(run(source, format))
    return path


def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def looked_for() -> str:
    """A sentence: which backends were looked for, and where."""
    override = _override()
    if override is not None:
        return f"{OVERRIDE}={override} is set, and that is not an executable file"
    return f"looked for {' and '.join(f'`{b}`' for b in BACKENDS)} in {os.pathsep.join(search_dirs())}"


def install_hint(format: str = "svg") -> str:
    """What to install (or point TAPEGRAD_DOT at) to get a backend for `format`; never something installed."""
    system = "the system Graphviz `dot` (apt-get install graphviz, brew install graphviz or conda install graphviz)"
    if format == "pdf":
        return f"PDF needs the system Graphviz `dot` (graphviz-pure writes svg and png only): install {system}"
    pure = _installed("graphviz-pure")
    if _override() is not None:
        return f"point {OVERRIDE} at a `dot` or `graphviz-pure` executable, or unset it to search PATH and {sys.prefix}"
    if pure:
        return (f"graphviz-pure {pure} is installed in this Python but its executable was not found: set "
                f"{OVERRIDE}=/path/to/graphviz-pure, or install {system}")
    return f"install {system} or the pip package graphviz-pure ({sys.executable} -m pip install graphviz-pure)"


def missing(format: str = "svg") -> str:
    """The message of a missing backend: what was looked for, where, and what to install."""
    return f"render: no Graphviz backend can write {format}; {looked_for()}. {install_hint(format)}."
