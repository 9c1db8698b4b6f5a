"""tapegrad.viz.backends: where backends are found (PATH, the interpreter's scripts folder, TAPEGRAD_DOT), the
missing-backend message, what `draw` returns in a notebook, and the demo's last lines."""
import os
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

import tapegrad as tg
import tapegrad.viz as viz
from tapegrad.viz import backends
from tapegrad.viz.display import Picture

pytest.importorskip("graphviz")


def small_loss():
    W = tg.tensor(np.full((2, 2), 0.5), requires_grad=True, name="W")
    h = tg.tensor(np.ones((1, 2)))
    for t in range(2):
        with tg.scope("rnn", t=t):
            h = tg.tanh(h @ W)
    return (h * h).sum()


def fake_backend(folder, name):
    """An executable `name` in `folder` that writes a tiny SVG whatever it is given (a stand-in for dot)."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / name
    exe.write_text("#!/bin/sh\ncat >/dev/null\necho '<svg xmlns=\"http://www.w3.org/2000/svg\"><!-- fake " + name
                   + " --></svg>'\n")
    exe.chmod(0o755)
    return str(exe)


@pytest.fixture
def bare(tmp_path, monkeypatch):
    """No backend anywhere: an empty PATH folder and no scripts folder; TAPEGRAD_DOT unset."""
    monkeypatch.delenv(backends.OVERRIDE, raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(backends, "search_dirs", lambda: [str(empty)])
    return empty


def test_found_in_the_interpreters_scripts_folder_without_path(tmp_path, monkeypatch):
    """A virtual environment that is not activated: graphviz-pure is in its bin/, which is not on PATH."""
    monkeypatch.delenv(backends.OVERRIDE, raising=False)
    scripts = tmp_path / "venv" / "bin"
    exe = fake_backend(scripts, "graphviz-pure")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *a, **k: str(scripts) if name == "scripts" else None)
    assert str(scripts) in backends.search_dirs()
    assert backends.locate("graphviz-pure") == exe
    assert backends.available() == ["graphviz-pure"] and backends.available("pdf") == []
    assert "fake graphviz-pure" in backends.svg("digraph { a -> b }")


def test_search_order_is_path_then_scripts_then_executable_folder(monkeypatch):
    monkeypatch.setenv("PATH", os.pathsep.join(["/first", "/second"]))
    dirs = backends.search_dirs()
    assert dirs[:2] == ["/first", "/second"]
    assert sysconfig.get_path("scripts") in dirs and os.path.dirname(sys.executable) in dirs
    assert len(dirs) == len({os.path.abspath(d) for d in dirs})


def test_tapegrad_dot_overrides_the_search(tmp_path, monkeypatch, bare):
    exe = fake_backend(tmp_path / "custom", "my-dot")
    monkeypatch.setenv(backends.OVERRIDE, exe)
    assert backends.available() == ["dot"] and backends.locate("dot") == exe
    assert "fake my-dot" in backends.svg("digraph { a }")
    pure = fake_backend(tmp_path / "other", "graphviz-pure")
    monkeypatch.setenv(backends.OVERRIDE, pure)
    assert backends.available() == ["graphviz-pure"] and backends.available("pdf") == []
    monkeypatch.setenv(backends.OVERRIDE, str(tmp_path / "does-not-exist"))
    assert backends.available() == []
    assert "TAPEGRAD_DOT=" in backends.missing() and "does-not-exist" in backends.missing()


def test_missing_message_says_where_it_looked_and_never_recommends_what_is_installed(bare, monkeypatch):
    message = backends.missing("svg")
    assert "`dot`" in message and "`graphviz-pure`" in message and str(bare) in message
    assert "apt-get install graphviz" in message
    monkeypatch.setattr(backends, "_installed", lambda dist: "0.2.2" if dist == "graphviz-pure" else None)
    installed = backends.missing("svg")
    assert "pip install" not in installed and "graphviz-pure 0.2.2 is installed" in installed
    assert "TAPEGRAD_DOT" in installed
    monkeypatch.setattr(backends, "_installed", lambda dist: None)
    assert "pip install graphviz-pure" in backends.missing("svg")
    assert "PDF needs the system Graphviz" in backends.missing("pdf")


def test_draw_returns_a_digraph_that_displays_as_svg_through_the_backend(tmp_path, monkeypatch, bare):
    import graphviz
    monkeypatch.setenv(backends.OVERRIDE, fake_backend(tmp_path / "b", "graphviz-pure"))
    g = viz.draw(small_loss())
    assert isinstance(g, graphviz.Digraph) and isinstance(g, Picture)
    assert g.source.startswith("digraph")
    bundle = g._repr_mimebundle_()
    assert list(bundle) == ["image/svg+xml"] and "fake graphviz-pure" in bundle["image/svg+xml"]
    assert "fake" in g.pipe(format="svg").decode()
    out = g.render(tmp_path / "out" / "picture", format="svg")
    assert out == str(tmp_path / "out" / "picture.svg") and "fake" in open(out).read()
    assert (tmp_path / "out" / "picture").read_text() == g.source          # the DOT source, as graphviz saves it
    assert isinstance(g.copy(), Picture)


def test_without_a_backend_the_notebook_shows_what_to_install_and_the_source(bare):
    g = viz.draw(small_loss(), view="rolled")
    bundle = g._repr_mimebundle_()
    assert "image/svg+xml" not in bundle
    assert "apt-get install graphviz" in bundle["text/plain"] and g.source in bundle["text/plain"]
    assert "not drawn" in bundle["text/html"] and "digraph" in bundle["text/html"]
    assert g._repr_svg_() is None


@pytest.mark.skipif(not backends.available(), reason="needs a Graphviz backend")
def test_real_backend_svg():
    svg = viz.draw(small_loss())._repr_mimebundle_()["image/svg+xml"]
    assert "<svg" in svg and "</svg>" in svg


def demo(tmp_path, **env):
    return subprocess.run([sys.executable, "-m", "tapegrad.demo", "--iterations", "3", "--out", str(tmp_path / "d")],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=120)


@pytest.mark.skipif(not backends.available("png"), reason="needs a Graphviz backend")
def test_demo_ends_with_the_paths_it_wrote(tmp_path):
    out = demo(tmp_path)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-2:]
    assert last == [f"  {tmp_path / 'd' / 'unrolled.svg'}", f"  {tmp_path / 'd' / 'unrolled.png'}"]
    assert (tmp_path / "d" / "unrolled.svg").read_text().lstrip().startswith(("<?xml", "<svg"))


def test_demo_without_a_backend_warns_and_exits_0(tmp_path):
    out = demo(tmp_path, TAPEGRAD_DOT=str(tmp_path / "no-such-dot"))
    assert out.returncode == 0, out.stderr
    assert "RuntimeWarning: not rendered" in out.stderr and "No picture" in out.stdout
    assert (tmp_path / "d" / "unrolled.dot").exists()
