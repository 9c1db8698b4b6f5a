"""docs/notebooks/: the committed notebooks are what make_notebooks.py builds, and they run in a real Jupyter
kernel (nbclient + ipykernel), their picture cells displaying SVG; without any Graphviz backend the picture
cells show what to install and the DOT source, never a traceback."""
import importlib.util
import pathlib
import time

import pytest

nbformat = pytest.importorskip("nbformat", reason="the `test` extra installs nbformat, nbclient and ipykernel")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from tapegrad.viz import backends  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "notebooks"
spec = importlib.util.spec_from_file_location("make_notebooks", HERE / "make_notebooks.py")
make = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make)
NAMES = sorted(make.NOTEBOOKS)


def pictures(nb):
    return [c for c in nb.cells if make.PICTURE in c.metadata.get("tags", [])]


def errors(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_the_generated_one_with_its_outputs(name):
    committed = nbformat.read(HERE / name, as_version=4)
    built = make.build(make.NOTEBOOKS[name])
    assert [c.source for c in committed.cells] == [c.source for c in built.cells], \
        f"{name} is stale: run python docs/notebooks/make_notebooks.py"
    assert not errors(committed)
    assert all("image/svg+xml" in o.get("data", {}) for c in pictures(committed) for o in c.outputs)
    assert pictures(committed) or not name.startswith("bptt")


@pytest.mark.skipif(not backends.available(), reason="needs a Graphviz backend (dot or graphviz-pure)")
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_in_a_kernel_and_draws_svg(name):
    start = time.perf_counter()
    nb = make.execute(nbformat.read(HERE / name, as_version=4))
    assert time.perf_counter() - start < 30
    assert not errors(nb)
    for cell in pictures(nb):
        assert any("image/svg+xml" in o.get("data", {}) and "<svg" in o["data"]["image/svg+xml"]
                   for o in cell.outputs), cell.source
    if name.startswith("checking"):
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                       for o in c.outputs if o.output_type == "stream")
        assert "first divergent time step: 3" in text and "ok: True" in text


def test_without_a_backend_the_pictures_say_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(backends.OVERRIDE, str(tmp_path / "no-such-dot"))       # the kernel inherits it
    nb = make.execute(make.build(make.NOTEBOOKS["bptt_from_the_tape.ipynb"]))
    assert not errors(nb)
    for cell in pictures(nb):
        data = [o["data"] for o in cell.outputs if "data" in o]
        assert data and all("image/svg+xml" not in d for d in data)
        assert any("not drawn" in d.get("text/html", "") and "digraph" in d.get("text/plain", "") for d in data)
