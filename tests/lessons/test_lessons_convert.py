"""The notebook converter writes valid nbformat 4 with outputs, and the committed
notebooks match their scripts (so a notebook never drifts from the lesson)."""

import base64
import importlib.util
import json

import pytest
from conftest import REPO

LESSONS = REPO / "lessons"
spec = importlib.util.spec_from_file_location("lesson_convert", LESSONS / "convert.py")
convert = importlib.util.module_from_spec(spec)
spec.loader.exec_module(convert)

TOY = '''# %% [markdown]
# # A toy lesson
# two lines of text

# %%
import matplotlib.pyplot as plt
print("hello")

# %%
plt.plot([0, 1], [1, 0])
plt.show()
x = 3

# %% [markdown]
# done

# %%
print(x * 2)
'''
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_split_cells():
    cells = convert.split_cells(TOY)
    assert [kind for kind, _ in cells] == ["markdown", "code", "code", "markdown", "code"]
    assert cells[0][1] == "# A toy lesson\ntwo lines of text"
    assert cells[1][1] == 'import matplotlib.pyplot as plt\nprint("hello")'


def test_converter_output_structure(tmp_path):
    lesson = tmp_path / "01_toy.py"
    lesson.write_text(TOY)
    notebook = json.loads(convert.write_notebook(lesson, tmp_path / "nb").read_text())
    assert notebook["nbformat"] == 4 and notebook["nbformat_minor"] >= 4
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    cells = notebook["cells"]
    assert cells[0]["metadata"]["tags"] == ["colab-setup"]
    assert [c["cell_type"] for c in cells[1:]] == ["markdown", "code", "code", "markdown", "code"]
    for cell in cells:
        assert set(cell) >= {"cell_type", "metadata", "source", "id"}
        assert isinstance(cell["source"], list)
        if cell["cell_type"] == "code":
            assert "outputs" in cell and "execution_count" in cell
    (stream,) = cells[2]["outputs"]
    assert stream["output_type"] == "stream" and "".join(stream["text"]) == "hello\n"
    figure = cells[3]["outputs"]
    assert len(figure) == 1 and figure[0]["output_type"] == "display_data"
    assert base64.b64decode(figure[0]["data"]["image/png"]).startswith(PNG_MAGIC)
    assert "".join(cells[5]["outputs"][0]["text"]) == "6\n"  # the namespace carries across cells


def test_converter_fails_loudly_on_a_broken_cell(tmp_path):
    lesson = tmp_path / "01_broken.py"
    lesson.write_text("# %%\nraise RuntimeError('boom')\n")
    with pytest.raises(RuntimeError, match="boom"):
        convert.write_notebook(lesson, tmp_path / "nb")


@pytest.mark.parametrize("lesson", convert.lesson_files(LESSONS), ids=lambda p: p.stem)
def test_committed_notebook_matches_its_script(lesson):
    path = LESSONS / "notebooks" / f"{lesson.stem}.ipynb"
    assert path.exists(), f"run `python lessons/convert.py {lesson.relative_to(REPO)}` and commit {path.name}"
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = [c for c in notebook["cells"] if "colab-setup" not in c["metadata"].get("tags", [])]
    got = [(c["cell_type"], "".join(c["source"])) for c in cells]
    assert got == convert.split_cells(lesson.read_text(encoding="utf-8")), \
        f"{path.name} is out of date: rerun `python lessons/convert.py {lesson.relative_to(REPO)}`"
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(c["execution_count"] is not None for c in code), "the notebook was not executed"
    assert any(o.get("data", {}).get("image/png") for c in code for o in c["outputs"]), "no figure"
    assert "LESSON COMPLETE" in "".join("".join(o.get("text", [])) for o in code[-1]["outputs"])
