"""Percent-format lessons -> Jupyter notebooks with their outputs, without Jupyter.

A lesson ``lessons/NN_topic.py`` is a plain script whose cells start with ``# %%``
(code) or ``# %% [markdown]`` (text, every line a comment). This converter executes
the code cells in order in one namespace, records what each cell prints and the
matplotlib figures it leaves open (as PNG), and writes ``lessons/notebooks/NN_topic.ipynb``
in nbformat 4, so the notebook reads well on a repository web page and opens in
Colab. The only dependencies are the standard library and matplotlib.

    python lessons/convert.py                    # every lesson, each in a fresh process
    python lessons/convert.py lessons/02_nms.py  # one lesson
    LESSONS_FAST=1 python lessons/convert.py     # the lessons' fast mode (CI-sized loops)

The notebook's first cell is the Colab set-up (install the package, clone-free
through pip); it is the only cell that is not in the script and is tagged
``colab-setup`` so tests can tell it apart.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent  # lessons import this checkout's package, not another installed copy
NOTEBOOKS = HERE / "notebooks"
LESSON_NAME = re.compile(r"^\d\d_[a-z0-9_]+\.py$")  # NN_topic.py
CELL_START = re.compile(r"^# %%(?P<markdown>\s*\[markdown\])?.*$")
# Colab has no copy of the package: the first cell installs it from the source the
# reader names (their clone's git URL, or a folder uploaded to /content), and says
# how when none is given. No address is assumed.
COLAB_SETUP = (
    "# Colab set-up (not part of the lesson script): install the package when it is missing.\n"
    "# Set SOURCE to your copy of the repository: a git URL ('git+https://...') or a folder.\n"
    "import importlib.util, os, subprocess, sys\n"
    "SOURCE = os.environ.get('FCOS_FROM_SCRATCH_SOURCE', '/content/fcos_from_scratch')\n"
    "if importlib.util.find_spec('fcos_from_scratch') is None:\n"
    "    if not (SOURCE.startswith('git+') or os.path.isdir(SOURCE)):\n"
    "        raise SystemExit('upload the repository to /content/fcos_from_scratch or set SOURCE')\n"
    "    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', SOURCE], check=True)"
)


def lesson_files(folder: Path = HERE):
    """The lessons in reading order: ``NN_topic.py`` files of ``folder``."""
    return sorted(p for p in folder.glob("*.py") if LESSON_NAME.match(p.name))


def split_cells(source: str):
    """``[(kind, text)]`` with kind "code" or "markdown"; markdown loses its ``# ``.

    Text before the first ``# %%`` (the module docstring, if any) becomes a code cell
    when it is not blank, so nothing in the script is lost.
    """
    cells, kind, lines = [], "code", []

    def close():
        text = "\n".join(lines).strip("\n")
        if text.strip():
            if kind == "markdown":
                text = "\n".join(re.sub(r"^# ?", "", line) for line in text.splitlines())
            cells.append((kind, text))

    for line in source.splitlines():
        match = CELL_START.match(line)
        if match:
            close()
            kind, lines = ("markdown" if match.group("markdown") else "code"), []
        else:
            lines.append(line)
    close()
    return cells


def _source_lines(text: str):
    """nbformat's multi-line string: a list of lines, each keeping its newline."""
    return text.splitlines(keepends=True)


def _figure_outputs(plt):
    outputs = []
    for number in plt.get_fignums():
        buffer = io.BytesIO()
        plt.figure(number).savefig(buffer, format="png", dpi=80, bbox_inches="tight")
        outputs.append({"output_type": "display_data", "metadata": {},
                        "data": {"image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
                                 "text/plain": ["<Figure>"]}})
    plt.close("all")
    return outputs


def execute(path: Path):
    """Run the lesson's cells in order; returns the notebook dict (raises on error)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.show = lambda *args, **kwargs: None  # figures are collected after each cell
    cells = []
    namespace = {"__name__": "__main__", "__file__": str(path)}
    sys.path[:0] = [str(REPO), str(path.parent)]
    count = 0
    for kind, text in split_cells(path.read_text(encoding="utf-8")):
        if kind == "markdown":
            cells.append({"cell_type": "markdown", "metadata": {}, "source": _source_lines(text)})
            continue
        count += 1
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            try:
                exec(compile(text, f"{path.name} [cell {count}]", "exec"), namespace)
            except Exception:
                sys.stderr.write(stdout.getvalue())
                raise
        outputs = []
        if stdout.getvalue():
            outputs.append({"output_type": "stream", "name": "stdout",
                            "text": _source_lines(stdout.getvalue())})
        outputs += _figure_outputs(plt)
        cells.append({"cell_type": "code", "execution_count": count, "metadata": {},
                      "outputs": outputs, "source": _source_lines(text)})
    setup = {"cell_type": "code", "execution_count": None, "metadata": {"tags": ["colab-setup"]},
             "outputs": [], "source": _source_lines(COLAB_SETUP)}
    return {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                     "language_info": {"name": "python"},
                     "fcos_from_scratch": {"source": f"lessons/{path.name}",
                                           "fast_mode": os.environ.get("LESSONS_FAST") == "1"}},
        "cells": [setup] + cells,
    }


def write_notebook(path: Path, out_dir: Path = NOTEBOOKS) -> Path:
    notebook = execute(path)
    for number, cell in enumerate(notebook["cells"]):  # nbformat 4.5 wants cell ids
        cell["id"] = f"{path.stem}-{number}"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / (path.stem + ".ipynb")
    target.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return target


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out_dir = NOTEBOOKS
    if argv[:1] == ["--out"]:
        out_dir, argv = Path(argv[1]), argv[2:]
    if len(argv) == 1:  # one lesson, in this process
        start = time.perf_counter()
        target = write_notebook(Path(argv[0]).resolve(), out_dir)
        print(f"{target}  ({time.perf_counter() - start:.1f} s)")
        return 0
    failed = 0
    for lesson in [Path(a) for a in argv] or lesson_files():  # each in a fresh process
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        result = subprocess.run([sys.executable, __file__, "--out", str(out_dir), str(lesson)], env=env)
        failed += result.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        sys.exit(1)
