"""The notebooks are stored clean and sized by their first cell (nbmake executes them).

``python -m pytest`` collects ``notebooks/*.ipynb`` through nbmake (``--nbmake`` in
pyproject's addopts, ``notebooks`` in testpaths): each notebook runs as one test in its
own kernel. These checks only read the files.
"""

import json
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_the_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_tour.ipynb", "02_plug_in_your_sampler.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs_and_sized_up_front(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "a notebook without code"
    for cell in code:
        assert cell.get("outputs") == [] and cell.get("execution_count") is None
    first = code[0]
    assert "parameters" in first.get("metadata", {}).get("tags", [])
    assert "import" not in "".join(first["source"]), "the first cell only sets sizes"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
