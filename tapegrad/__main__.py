"""`python -m tapegrad`: the version, the render backends found and where, the optional extras installed, and
the commands to run the demo, the tests and the notebooks."""
import importlib.metadata
import importlib.util
import os
import shutil
import sys
import sysconfig

__all__ = ["main", "report"]

# (distribution, import name, what it is for)
EXTRAS = (
    ("graphviz-pure", None, "pip-installable Graphviz layout engine (svg/png)"),
    ("matplotlib", "matplotlib", "gradient-flow and training plots"),
    ("tqdm", "tqdm", "progress bars in the examples (on a terminal)"),
    ("nbclient", "nbclient", "running docs/notebooks/ headless"),
    ("Pillow", "PIL", "png frames and animations"),
)


def _extra_of(dist):
    """The tapegrad extra that installs `dist` (from the installed metadata), or None."""
    try:
        requires = importlib.metadata.requires("tapegrad") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for req in requires:
        name = req.split(";")[0].strip().split("[")[0]
        for sep in "<>=!~ ":
            name = name.split(sep)[0]
        if name.lower() == dist.lower() and "extra ==" in req:
            return req.split("extra ==")[1].strip().strip("'\"")
    return None


def _install_hint(dist):
    extra = _extra_of(dist)
    return f"pip install 'tapegrad[{extra}]'" if extra else f"pip install {dist}"


def _version(dist, module):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        pass
    if module is not None and importlib.util.find_spec(module) is not None:
        return "installed (version unknown)"
    return None


def _where(name):
    """Where a backend executable lies: whatever tapegrad.viz.backends exposes for it, else PATH, else the
    interpreter's scripts directory (where pip puts graphviz-pure in a venv that is not activated)."""
    try:
        from .viz import backends
    except Exception:                                   # a broken optional module must not break the report
        backends = None
    for attr in ("locate", "find", "which", "path_of"):
        fn = getattr(backends, attr, None)
        if callable(fn):
            try:
                found = fn(name)
            except Exception:
                continue
            if found:
                return str(found)
    found = shutil.which(name)
    if found:
        return found
    scripts = sysconfig.get_path("scripts")
    candidate = os.path.join(scripts, name) if scripts else None
    return candidate if candidate and os.access(candidate, os.X_OK) else None


def _backends():
    """[(backend, path or None)] of the render backends tapegrad.viz finds, or an explanation string."""
    try:
        from .viz import backends
        found = backends.available()
    except Exception as e:                              # discovery is being reworked: degrade, never crash
        return f"could not query tapegrad.viz.backends ({type(e).__name__}: {e})"
    return [(str(b), _where(str(b))) for b in found]


def report() -> str:
    """The text `python -m tapegrad` prints."""
    import numpy

    from . import __version__
    lines = [f"tapegrad {__version__} (python {sys.version.split()[0]}, numpy {numpy.__version__}, "
             f"{os.path.dirname(os.path.abspath(__file__))})", "", "render backends (tapegrad.viz.render):"]
    found = _backends()
    if isinstance(found, str):
        lines.append(f"  {found}")
    elif not found:
        lines.append("  none found: install Graphviz `dot` (apt-get/brew/conda install graphviz) or "
                     "pip install 'tapegrad[render]'")
    else:
        lines += [f"  {b:<14} {path or '(location unknown)'}" for b, path in found]
    lines += ["", "optional extras:"]
    for dist, module, what in EXTRAS:
        version = _version(dist, module)
        lines.append(f"  {dist:<14} {version or 'not installed':<28} {what}"
                     + ("" if version else f"; {_install_hint(dist)}"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    notebooks = os.path.join(root, "docs", "notebooks")
    lines += ["", "try:",
              f"  {sys.executable} -m tapegrad.demo          # train, gradient-check and draw an Elman RNN",
              f"  {sys.executable} -m pytest -q              # the test suite (from a source checkout)"]
    if os.path.isdir(notebooks):
        lines.append(f"  jupyter lab {notebooks}     # the notebooks")
        lines.append(f"  {sys.executable} -m jupyter nbconvert --to notebook --execute --inplace "
                     f"{os.path.join(notebooks, '*.ipynb')}")
    else:
        lines.append("  jupyter lab docs/notebooks/    # the notebooks (in a source checkout)")
    return "\n".join(lines)


def main() -> int:
    print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
