"""The digits cache is verified cheaply (sizes, whole JPEGs) and a damaged one is named
and rebuilt; ``make_digits.py --force`` rebuilds a sound one; ``skip_bad`` reaches it."""

import logging

import pytest

from fcos_from_scratch.data import DigitsConfig
from fcos_from_scratch.data.common import BadSampleError
from fcos_from_scratch.data.digits import DigitsDetection, cache_problem, ensure_split

from test_data_scripts import load_script

TINY = DigitsConfig(num_train=2, num_val=2, num_test=2, min_side=64, max_side=96, max_digits=2,
                    digit_height=(16, 40))


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_image_is_named_and_the_split_rebuilt(tmp_path, caplog):
    folder = ensure_split(tmp_path, "val", TINY)
    assert cache_problem(folder, TINY, "val") is None
    image = folder / "images" / "000001.jpg"
    original = image.read_bytes()
    truncate(image)
    assert "000001.jpg has" in cache_problem(folder, TINY, "val")  # byte size differs
    with caplog.at_level(logging.WARNING, logger="fcos_from_scratch.data"):
        ensure_split(tmp_path, "val", TINY)
    assert "000001.jpg" in caplog.text and "regenerating" in caplog.text
    assert image.read_bytes() == original and cache_problem(folder, TINY, "val") is None


def test_a_jpeg_without_its_end_marker_is_found_even_without_recorded_sizes(tmp_path):
    folder = ensure_split(tmp_path, "val", TINY)
    image = folder / "images" / "000000.jpg"
    image.write_bytes(image.read_bytes()[:-2] + b"\0\0")  # same size, cut-short content
    assert "not a complete JPEG" in cache_problem(folder, TINY, "val")
    (folder / "images" / "000001.jpg").unlink()
    ensure_split(tmp_path, "val", TINY)
    assert cache_problem(folder, TINY, "val") is None


def test_skip_bad_skips_an_image_damaged_after_the_check(tmp_path):
    dataset = DigitsDetection(tmp_path, "val", TINY)
    truncate(tmp_path / "digits" / "val" / "images" / "000000.jpg", keep=0.3)
    with pytest.raises(BadSampleError, match="000000.jpg"):
        dataset[0]
    lenient = DigitsDetection.__new__(DigitsDetection)
    lenient.__dict__.update(dataset.__dict__, skip_bad=True, _bad=set())
    image, target = lenient[0]  # the next good image instead
    assert target["image_id"] == 2 and len(lenient.report.skipped) == 1


def test_make_digits_force_rebuilds_and_reports(tmp_path, capsys):
    script = load_script("make_digits")
    args = ["--root", str(tmp_path), "--splits", "val", "--num-val", "2", "--min-side", "64",
            "--max-side", "96"]
    assert script.main(args) == 0 and "generated" in capsys.readouterr().out
    assert script.main(args) == 0 and "cache is sound" in capsys.readouterr().out
    stamp = (tmp_path / "digits" / "val" / "annotations.json").stat().st_mtime_ns
    assert script.main(args + ["--force"]) == 0 and "rebuilt (--force)" in capsys.readouterr().out
    assert (tmp_path / "digits" / "val" / "annotations.json").stat().st_mtime_ns != stamp
    with pytest.raises(SystemExit):
        script.main(args[:2] + ["--splits", "vall"])
    assert "unknown split(s) vall" in capsys.readouterr().err
