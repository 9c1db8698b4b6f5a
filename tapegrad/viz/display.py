"""What `draw` returns: a `graphviz.Digraph` that lays itself out through tapegrad's backend choice.

In Jupyter the picture displays inline as SVG through whichever backend `backends.available` finds
(the system `dot` or the pip package graphviz-pure, also in a virtual environment that is not
activated); `.pipe()` and `.render()` go the same way. Without any backend a notebook shows what to
install and the DOT source instead of a traceback. `.source` is the DOT text, `.save()` writes it.
"""
import os
from collections.abc import Iterable
from html import escape
from typing import Any

import graphviz

from ..errors import RenderError
from . import backends

_FORMATS = set(backends.FORMATS)


class Picture(graphviz.Digraph):
    """A graphviz.Digraph rendered by tapegrad's backends (see the module docstring)."""

    def _repr_mimebundle_(self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None,
                          **_: Any) -> dict[str, Any]:
        include = set(include) if include is not None else {"image/svg+xml"}
        include -= set(exclude or [])
        try:
            bundle: dict[str, Any] = {}
            if "image/svg+xml" in include:
                bundle["image/svg+xml"] = self._repr_image_svg_xml()
            if "image/png" in include:
                bundle["image/png"] = self._repr_image_png()
            return bundle
        except RenderError as e:
            return self._missing_bundle(str(e))

    def _missing_bundle(self, message: str) -> dict[str, str]:
        text = f"{message}\n\nThe DOT source:\n{self.source}"
        html = (f"<div><p><b>tapegrad.viz: not drawn.</b> {escape(message)}</p>"
                f"<details><summary>DOT source</summary><pre>{escape(self.source)}</pre></details></div>")
        return {"text/plain": text, "text/html": html}

    def _repr_image_svg_xml(self) -> str:
        return backends.svg(self.source)

    def _repr_image_png(self) -> bytes:
        return backends.run(self.source, "png")

    def _repr_svg_(self) -> str | None:                      # older IPython display hooks
        try:
            return self._repr_image_svg_xml()
        except RenderError:
            return None

    def _ours(self, format: str | None, kwargs: dict[str, Any]) -> bool:
        """Whether a pipe/render call is one tapegrad's backends can do (plain dot layout, svg/png/pdf)."""
        format = format or self.format
        plain = all(kwargs.get(k) in (None, "dot") for k in ("engine", "renderer", "formatter"))
        return plain and not kwargs.get("neato_no_op") and format in _FORMATS and self.engine == "dot"

    def pipe(self, format: str | None = None, *args: Any, **kwargs: Any) -> Any:
        if args or not self._ours(format, kwargs) or kwargs.get("encoding") is not None:
            return super().pipe(format, *args, **kwargs)
        return backends.run(self.source, format or self.format)

    def render(self, filename: Any = None, directory: Any = None, view: bool = False, cleanup: bool = False,
               format: str | None = None, *args: Any, **kwargs: Any) -> str:
        """Write the DOT source (as `.save()` does) and `<that file>.<format>`; return the latter's path.
        view=True opens it as graphviz does."""
        if args or not self._ours(format, kwargs) or kwargs.get("outfile") is not None:
            return super().render(filename, directory, view, cleanup, format, *args, **kwargs)
        format = format or self.format
        source_path = self.save(filename, directory=directory)
        out = f"{source_path}.{format}"
        backends.write(self.source, out, format)
        if cleanup:
            os.remove(source_path)
        if view:
            self._view(out, format=format, quiet=kwargs.get("quiet_view", False))
        return out


def as_picture(g: Any) -> Any:
    """`g` (a graphviz.Digraph) as a Picture, the same object."""
    if isinstance(g, graphviz.Digraph) and not isinstance(g, Picture):
        g.__class__ = Picture
    return g
