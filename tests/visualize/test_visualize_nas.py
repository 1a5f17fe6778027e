"""The architecture picture: every wire of the architecture is drawn, and the PNG is written."""

import random

from matplotlib.figure import Figure
from matplotlib.text import Annotation

from fcos_from_scratch.nas.space import FIG4_ARCHITECTURE, HEAD_BLOCKS, dangling_outputs, sample_architecture
from fcos_from_scratch.visualize.nas import draw_architecture, draw_fpn, draw_head, plot_rewards


def arrows(ax):
    return [c for c in ax.get_children() if isinstance(c, Annotation)]


def test_every_block_input_and_output_is_a_wire():
    for arch in (FIG4_ARCHITECTURE, sample_architecture(random.Random(3))):
        fpn_ax, head_ax = Figure().subplots(1, 2)
        draw_fpn(fpn_ax, arch)
        draw_head(head_ax, arch)
        # FPN: two inputs per block, one wire per output level, and each dangling block to every level
        assert len(arrows(fpn_ax)) == 2 * 7 + 3 + 3 * len(dangling_outputs(arch))
        # head: p -> o0, then per block two op wires and two wires into the merge
        assert len(arrows(head_ax)) == 1 + 4 * HEAD_BLOCKS
        labels = {t.get_text() for t in fpn_ax.texts}
        assert {"c3", "c4", "c5", "P3", "P4", "P5"} <= labels


def test_pictures_are_written_as_png(tmp_path):
    path = draw_architecture(FIG4_ARCHITECTURE, tmp_path / "deep" / "fig4.png", title="fig4")
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 10_000
    curve = plot_rewards([-2.0, -1.8, -1.9, -1.7], tmp_path / "rewards.png")
    assert curve.read_bytes()[:4] == b"\x89PNG"
