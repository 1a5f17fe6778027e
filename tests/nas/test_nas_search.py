"""The search command: records, best architecture, pictures, resume without loss or repeats, bad input."""

import json

import pytest
from nas_fixtures import tiny_dataset, tiny_proxy

from fcos_from_scratch.nas.search import SearchConfig, main, parse_args, search
from fcos_from_scratch.nas.space import Architecture, load_architecture


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    dataset = tiny_dataset(root)
    return root, dataset, tiny_proxy(root, steps=1)


def run(out, setup, **changes):
    root, dataset, proxy = setup
    stop_after = changes.pop("stop_after", None)
    config = SearchConfig(**dict(dict(candidates=5, batch=2, out=str(out), progress=False, pictures=False),
                                 **changes))
    return search(config, proxy, dataset=dataset, log=lambda *_: None, stop_after=stop_after)


def test_search_writes_every_candidate_the_best_and_the_pictures(setup, tmp_path):
    records = run(tmp_path / "a", setup, candidates=3, pictures=True)  # a full batch of 2, then a partial one
    assert [r["index"] for r in records] == list(range(3))
    lines = (tmp_path / "a" / "candidates.jsonl").read_text().splitlines()
    assert [json.loads(line)["reward"] for line in lines] == [r["reward"] for r in records]
    best = json.loads((tmp_path / "a" / "best.json").read_text())
    assert best["reward"] == max(r["reward"] for r in records)
    assert load_architecture(str(tmp_path / "a" / "best.json")) == Architecture.from_dict(best["architecture"])
    for picture in ("rewards.png", "best.png"):
        assert (tmp_path / "a" / picture).read_bytes()[:4] == b"\x89PNG"


def test_interrupted_search_resumes_without_losing_or_repeating_candidates(setup, tmp_path):
    straight = run(tmp_path / "straight", setup)
    first = run(tmp_path / "cut", setup, stop_after=3)  # killed inside the second batch of 2
    assert len(first) == 3
    with open(tmp_path / "cut" / "candidates.jsonl", "a") as handle:
        handle.write('{"index": 3, "rew')  # and mid-write: a broken last line
    resumed = run(tmp_path / "cut", setup, resume=True)
    lines = [json.loads(line) for line in (tmp_path / "cut" / "candidates.jsonl").read_text().splitlines()]
    assert [r["index"] for r in lines] == list(range(5))  # none lost, none twice
    assert [r["tokens"] for r in resumed] == [r["tokens"] for r in straight]  # the same candidates
    assert [r["reward"] for r in resumed] == pytest.approx([r["reward"] for r in straight])
    more = run(tmp_path / "cut", setup, resume=True, candidates=6)  # a larger budget extends it
    assert len(more) == 6 and more[:5] == resumed
    timed = run(tmp_path / "timed", setup, max_minutes=1e-9)  # the time budget ends before candidate 0
    assert timed == [] and (tmp_path / "timed" / "state.pt").exists()


def test_folder_and_option_errors_are_one_clear_line(setup, tmp_path, capsys):
    run(tmp_path / "done", setup, candidates=1)
    with pytest.raises(ValueError, match="already holds a search"):
        run(tmp_path / "done", setup)
    with pytest.raises(ValueError, match="no search to continue"):
        run(tmp_path / "empty", setup, resume=True)
    with pytest.raises(ValueError, match="differ.*batch"):
        run(tmp_path / "done", setup, resume=True, batch=3)
    assert main([f"--out={tmp_path / 'done'}"]) == 2
    assert "already holds a search" in capsys.readouterr().err
    for argv, message in ((["--candidates=0"], "candidates must be"), (["--max_minutes=-1"], "max_minutes"),
                          (["--candidate=3"], "did you mean candidates"), (["--steps=x"], "steps expects an int"),
                          (["--resume", "--overwrite"], "pass one"), (["stray"], "unexpected argument")):
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err
    search_config, proxy = parse_args(["--candidates", "7", "--no-progress", "--crop_size=96"])
    assert (search_config.candidates, search_config.progress, proxy.crop_size) == (7, False, 96)
