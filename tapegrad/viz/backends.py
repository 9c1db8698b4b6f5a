"""Turning DOT into files: the system Graphviz `dot`, else the pip-installable `graphviz-pure`."""
import shutil
import subprocess
from pathlib import Path

from ..errors import InvalidValueError, RenderError

BACKENDS = ("dot", "graphviz-pure")      # tried in this order
FORMATS = ("svg", "png", "pdf")
NO_PDF = {"graphviz-pure"}


def render(target, path, format=None, **draw_options):
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


def available(format="svg"):
    """The backends found on PATH that can write `format`, in the order they are tried."""
    return [b for b in BACKENDS if shutil.which(b) and not (format == "pdf" and b in NO_PDF)]


def write(source, path, format):
    """Lay out DOT `source` with the first available backend and write `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    found = available(format)
    if not found:
        dot_path = path.with_suffix(".dot")
        dot_path.write_text(source, encoding="utf-8")
        raise RenderError(_missing(format, dot_path))
    result = subprocess.run([shutil.which(found[0]), f"-T{format}", "-o", str(path)], input=source.encode("utf-8"),
                            capture_output=True)
    if result.returncode != 0:
        raise RenderError(f"render: {found[0]} failed (exit {result.returncode}): "
                           f"{result.stderr.decode(errors='replace').strip()}")
    return path


def _missing(format, dot_path):
    if format == "pdf":
        how = ("PDF needs the system Graphviz `dot` (graphviz-pure writes svg and png only): "
               "apt-get install graphviz, brew install graphviz or conda install graphviz")
    else:
        how = ("install the system Graphviz `dot` (apt-get install graphviz, brew install graphviz, "
               "conda install graphviz) or the pip package graphviz-pure (pip install 'tapegrad[render]')")
    return f"render: no Graphviz backend on PATH can write {format}; {how}. The DOT source is in {dot_path}"
