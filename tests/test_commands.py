"""Every command answers bad input with one ``error:`` line and an exit status, never a
traceback: tables of bad inputs for ``train``, ``predict`` and ``evaluate``, run in
process (one real subprocess checks the ``python -m`` path end to end).

Exit status: 2 for a bad argument, path, file or value (nothing is written), 1 for a
failure while working, 130 for an interruption. The checkpoints here are written
directly (no training), so every case takes milliseconds.
"""

import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from fcos_from_scratch import evaluate as evaluate_cmd
from fcos_from_scratch import predict as predict_cmd
from fcos_from_scratch import train as train_cmd
from fcos_from_scratch.config import RunConfig, TrainConfig, field_help, field_names, get_preset
from fcos_from_scratch.data import DigitsConfig, build_dataset
from fcos_from_scratch.engine import builders
from fcos_from_scratch.engine import checkpoint as ckpt
from fcos_from_scratch.models.registry import DETECTORS
from fcos_from_scratch.visualize.draw import to_pil

TINY_DIGITS = DigitsConfig(num_train=2, num_val=1, num_test=3, min_side=64, max_side=96,
                           max_digits=2, digit_height=(16, 40))


def run(main, argv, capsys):
    """``(exit status, stdout, stderr)`` of a command's ``main``."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err, *fragments):
    """One ``error:`` line, the last thing printed (progress lines such as "Downloading ..."
    may come before it), and no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err and all(not line.startswith(" ") for line in lines), err
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def write_checkpoint(path, **changes):
    """A checkpoint of the digits preset's detector (untrained), as the trainer writes it."""
    config = get_preset("digits").replace(**changes)
    torch.manual_seed(0)
    model = builders.build_run_model(config)
    ckpt.atomic_save({"version": ckpt.CHECKPOINT_VERSION, "model": model.state_dict(),
                      "config": config.to_dict(), "model_name": "fcos", "epoch": 1, "step": 1,
                      "extra": {"class_names": [str(d) for d in range(config.num_classes)],
                                "category_ids": list(range(1, config.num_classes + 1))}}, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("commands")
    good = write_checkpoint(root / "good.pt", fpn_channels=16, head_convs=1)
    write_checkpoint(root / "twenty.pt", num_classes=20)
    (root / "truncated.pt").write_bytes(good.read_bytes()[:1000])
    (root / "a_file").write_text("not a folder")
    (root / "run").mkdir()
    (root / "run" / "last.pt").write_bytes(good.read_bytes())
    (root / "run" / "metrics.jsonl").write_text("")
    image = torch.rand(3, 40, 60)
    for name in ("one/img.png", "two/img.png"):
        (root / name).parent.mkdir(exist_ok=True)
        to_pil(image).save(root / name)
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "gt.json").write_text(json.dumps({"images": [{"id": 1, "width": 10, "height": 10}],
                                              "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    (root / "dets.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5],
                                                 "score": 0.5}]))
    (root / "malformed.json").write_text("{")
    (root / "dict.json").write_text("{}")
    return root


# --- train -------------------------------------------------------------------------------
TRAIN_CASES = [  # (argv, exit status, fragments of the one error line); {root} is the tmp folder
    (["--betas=2"], 2, ["betas must be two numbers"]),
    (["--backbone=tny"], 2, ["unknown backbone 'tny'", "tiny"]),
    (["--log_every=0"], 2, ["log_every must be >= 1"]),
    (["--max_steps_per_epoch=-1"], 2, ["max_steps_per_epoch must be >= 0"]),
    (["--momentum=5"], 2, ["momentum must be in [0, 1)"]),
    (["--out="], 2, ["out must name a run folder"]),
    (["--lr_gamma=1e400"], 2, ["lr_gamma must be a finite number"]),
    (["--lr_gamma=10"], 2, ["lr_gamma must be in (0, 1]"]),
    (["--lr=nan"], 2, ["lr must be a finite number"]),
    (["--learing_rate=0.1"], 2, ["unknown config key 'learing_rate'", "did you mean lr"]),
    (["--epochs=two"], 2, ["epochs expects an int"]),
    (["--preset=digitz"], 2, ["unknown preset 'digitz'"]),
    (["stray"], 2, ["unexpected argument 'stray'"]),
    (["--resume={root}/missing.pt"], 2, ["--resume=", "missing.pt", "no such checkpoint file"]),
    (["--resume={root}/truncated.pt"], 2, ["truncated.pt could not be read"]),
    (["--resume={root}/twenty.pt"], 2, ["does not fit this model", "num_classes=20"]),
    (["--init_from={root}/missing.pt"], 2, ["init_from=", "no such checkpoint file"]),
    (["--out={root}/run"], 2, ["already holds a run", "--resume=auto", "--overwrite"]),
    (["--out={root}/a_file/run"], 2, ["not a writable folder"]),
    (["--out={root}/a_file"], 2, ["is a file, not a folder"]),
    (["--device=tpu"], 2, ["device must be"]),
    (["--backbone=resnet18", "--pretrained=http://127.0.0.1:9/resnet18-f37072fd.pth"], 1,
     ["download failed", "offline", "--pretrained="]),
]


@pytest.mark.parametrize("argv, status, fragments", TRAIN_CASES, ids=[" ".join(c[0]) for c in TRAIN_CASES])
def test_train_bad_input_table(argv, status, fragments, files, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("FCOS_FROM_SCRATCH_CACHE", str(tmp_path / "weights"))  # no write to ~
    monkeypatch.setenv("FCOS_DATA_ROOT", str(tmp_path / "data"))  # a data build would be noticed
    argv = [a.format(root=files) for a in argv]
    if not any(a.startswith("--out") for a in argv):
        argv.append(f"--out={tmp_path / 'out'}")
    code, _, err = run(train_cmd.main, argv + ["--device=cpu"] * ("--device" not in " ".join(argv)), capsys)
    assert code == status
    assert_one_error_line(err, *fragments)
    assert not (tmp_path / "out" / "config.json").exists()  # nothing written
    assert not (tmp_path / "data").exists()  # every check came before the data


def test_train_interrupted_before_a_checkpoint_is_one_line(monkeypatch, capsys, tmp_path):
    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cmd, "fit", interrupted)
    code, _, err = run(train_cmd.main, [f"--out={tmp_path / 'out'}", "--device=cpu"], capsys)
    assert code == 130 and err.strip() == "error: interrupted (Ctrl-C or SIGTERM)"


def test_train_sigterm_before_the_training_loop_is_one_line(monkeypatch, capsys, tmp_path):
    import os
    import signal
    import time

    def terminated(config):  # e.g. a job scheduler stops the run while the data is being built
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends

    previous = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(train_cmd, "fit", terminated)
    code, _, err = run(train_cmd.main, [f"--out={tmp_path / 'out'}", "--device=cpu"], capsys)
    assert code == 130 and err.strip() == "error: interrupted (Ctrl-C or SIGTERM)"
    assert signal.getsignal(signal.SIGTERM) == previous  # restored


def test_train_bad_image_mid_run_names_it_and_the_ways_out(monkeypatch, capsys, tmp_path):
    from fcos_from_scratch.data.common import BadSampleError

    def bad(config):
        raise BadSampleError("/data/digits/train/images/000012.jpg: cannot decode image (truncated)")

    monkeypatch.setattr(train_cmd, "fit", bad)
    code, _, err = run(train_cmd.main, [f"--out={tmp_path / 'out'}", "--device=cpu"], capsys)
    assert code == 1
    assert_one_error_line(err, "000012.jpg", "--skip_bad", "make_digits.py --force")


def test_the_real_entry_point_prints_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fcos_from_scratch.train", "--momentum=5",
                           f"--out={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: momentum must be in [0, 1), got 5.0"


def test_help_describes_every_field(capsys):
    code, out, _ = run(train_cmd.main, ["--help"], capsys)
    assert code == 0
    for cls in [TrainConfig] + [entry.config_class for entry in DETECTORS.values()]:
        described = field_help(cls)
        missing = [name for name in field_names(cls) if len(described.get(name, "")) < 8]
        assert not missing, f"{cls.__name__} fields without a description: {missing}"
    assert "--momentum=" in out and "SGD only" in out
    assert "--nms_thresh=" in out and "NMS suppresses" in out


# --- predict -----------------------------------------------------------------------------
PREDICT_CASES = [
    ([], 2, ["the following arguments are required"]),
    (["--checkpoint", "{root}/missing.pt", "{root}/one/img.png"], 2, ["missing.pt", "no such file"]),
    (["--checkpoint", "{root}/truncated.pt", "{root}/one/img.png"], 2, ["truncated.pt could not be read"]),
    (["--checkpoint", "{root}/good.pt", "--score_threshold", "2", "{root}/one/img.png"], 2,
     ["--score_threshold must be in [0, 1]"]),
    (["--checkpoint", "{root}/good.pt", "--score_threshold", "high", "{root}/one/img.png"], 2,
     ["invalid float value"]),
    (["--checkpoint", "{root}/good.pt", "--out", "{root}/a_file", "{root}/one/img.png"], 2, ["is a file"]),
    (["--checkpoint", "{root}/good.pt", "--device", "tpu", "{root}/one/img.png"], 2, ["device must be"]),
]


@pytest.mark.parametrize("argv, status, fragments", PREDICT_CASES, ids=[" ".join(c[0]) for c in PREDICT_CASES])
def test_predict_bad_input_table(argv, status, fragments, files, capsys, tmp_path):
    argv = [a.format(root=files) for a in argv]
    if argv and "--out" not in argv:
        argv += ["--out", str(tmp_path / "pred")]
    code, _, err = run(predict_cmd.main, argv, capsys)
    assert code == status
    assert_one_error_line(err, *fragments)


def test_predict_keeps_going_never_overwrites_and_exports_coco(files, capsys, tmp_path):
    out, dets = tmp_path / "pred", tmp_path / "dets.json"
    code, stdout, err = run(predict_cmd.main, [
        "--checkpoint", files / "good.pt", "--device", "cpu", "--score_threshold", "0", "--out", out,
        "--json", dets, files / "one/img.png", files / "missing.png", files / "broken.png",
        files / "two/img.png"], capsys)
    assert code == 1  # two inputs could not be read; the others were processed
    errors = err.strip().splitlines()
    assert all(line.startswith("error: ") for line in errors) and "Traceback" not in err
    assert "missing.png" in errors[0] and "broken.png" in errors[1] and "2 of 4 images" in errors[2]
    assert sorted(p.name for p in out.iterdir()) == ["img_2_pred.png", "img_pred.png"]  # same stem
    results = json.loads(dets.read_text())
    assert {r["image_id"] for r in results} <= {1, 4} and all(len(r["bbox"]) == 4 for r in results)
    assert all(1 <= r["category_id"] <= 10 for r in results)
    printed = [line for line in stdout.splitlines() if "x1=" in line]
    assert len(printed) == len(results)  # every exported detection is printed


# --- evaluate ----------------------------------------------------------------------------
EVALUATE_CASES = [
    (["--checkpoint", "{root}/missing.pt"], 2, ["--checkpoint", "missing.pt", "is not a file"]),
    (["--checkpoint", "{root}/truncated.pt"], 2, ["truncated.pt could not be read"]),
    (["--checkpoint", "{root}/good.pt", "--gt", "{root}/gt.json"], 2, ["--gt/--dets", "--checkpoint"]),
    (["--gt", "{root}/nope.json", "--dets", "{root}/dets.json"], 2, ["--gt", "nope.json", "not a file"]),
    (["--gt", "{root}/malformed.json", "--dets", "{root}/dets.json"], 2, ["malformed json"]),
    (["--gt", "{root}/gt.json", "--dets", "{root}/dict.json"], 2, ["holds a json list"]),
    (["--gt", "{root}/gt.json"], 2, ["both required"]),
    (["--split", "val"], 2, ["need --checkpoint"]),
    (["--gt", "{root}/gt.json", "--dets", "{root}/dets.json", "--plots", "{root}/a_file"], 2, ["is a file"]),
    (["--dataset", "mnist"], 2, ["invalid choice: 'mnist'"]),
]


@pytest.mark.parametrize("argv, status, fragments", EVALUATE_CASES,
                         ids=[" ".join(c[0]) for c in EVALUATE_CASES])
def test_evaluate_bad_input_table(argv, status, fragments, files, capsys):
    code, _, err = run(evaluate_cmd.main, [a.format(root=files) for a in argv], capsys)
    assert code == status
    assert_one_error_line(err, *fragments)


def test_evaluate_plots_on_ground_truth_without_annotations(files, capsys, tmp_path):
    code, out, err = run(evaluate_cmd.main, ["--gt", files / "gt.json", "--dets", files / "dets.json",
                                             "--plots", tmp_path / "plots", "--voc"], capsys)
    assert code == 0 and not err and (tmp_path / "plots" / "error_breakdown.png").is_file()


@pytest.fixture(scope="module")
def tiny_test_set(tmp_path_factory):
    return build_dataset("digits", "test", root=tmp_path_factory.mktemp("data"), config=TINY_DIGITS)


def test_evaluate_checkpoint_honours_plots_and_voc(files, tiny_test_set, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(builders, "build_split", lambda config, split, train, **kw: tiny_test_set)
    code, out, err = run(evaluate_cmd.main, ["--checkpoint", files / "good.pt", "--device", "cpu",
                                             "--voc", "--plots", tmp_path / "plots"], capsys)
    assert code == 0, err
    assert "VOC_mAP" in out and "11-point (VOC07)" in out and "Miss" in out
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["error_breakdown.png", "pr_curves.png"]


def test_evaluate_class_mismatch_does_not_advise_an_option_it_lacks(files, tiny_test_set, capsys,
                                                                     monkeypatch):
    monkeypatch.setattr("fcos_from_scratch.data.build_dataset", lambda *a, **k: tiny_test_set)
    code, _, err = run(evaluate_cmd.main, ["--checkpoint", files / "twenty.pt", "--device", "cpu"], capsys)
    assert code == 2
    assert_one_error_line(err, "num_classes=20 but digits has 10 classes", "predicts 20 classes")
    assert "--num_classes" not in err


def test_train_stopped_by_a_signal_says_where_to_resume(monkeypatch, capsys, tmp_path):
    from pathlib import Path

    from fcos_from_scratch.engine.trainer import TrainingInterrupted

    def stopped(config):
        raise TrainingInterrupted(42, "SIGINT", Path(config.out) / "last.pt")

    monkeypatch.setattr(train_cmd, "fit", stopped)
    code, _, err = run(train_cmd.main, [f"--out={tmp_path / 'out'}", "--device=cpu"], capsys)
    lines = err.strip().splitlines()
    assert code == 130 and len(lines) == 1 and "Traceback" not in err
    assert "step 42" in lines[0] and "--resume=auto" in lines[0] and "last.pt is saved" in lines[0]
