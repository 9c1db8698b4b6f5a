"""docs/api.md lists exactly each public module's `__all__`, and every listed name exists."""
import importlib
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("make_api", ROOT / "docs" / "make_api.py")
make_api = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_api)


def test_api_page_is_current():
    assert (ROOT / "docs" / "api.md").read_text(encoding="utf-8") == make_api.page(), \
        "docs/api.md is stale: run python docs/make_api.py"


@pytest.mark.parametrize("name", make_api.MODULES)
def test_every_listed_name_exists_once(name):
    module = importlib.import_module(name)
    assert len(set(module.__all__)) == len(module.__all__)
    assert [n for n in module.__all__ if not hasattr(module, n)] == []


def test_every_public_function_of_the_top_level_is_listed():
    import tapegrad as tg
    public = {n for n, v in vars(tg).items() if not n.startswith("_") and callable(v)}
    assert public - set(tg.__all__) == set()
