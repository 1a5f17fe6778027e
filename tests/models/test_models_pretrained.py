"""Pretrained loading: local paths, file:// URLs, the download cache, checksums, key errors.

Nothing here touches the network: URLs are ``file://`` URLs of files in ``tmp_path``,
and ``urllib.request.urlopen`` is replaced by a function that fails where a cache hit
must not download. Strict loading of torchvision-format checkpoints into the real
backbones is tested in ``test_backbones.py``.
"""

import hashlib
import urllib.error
import urllib.request
from collections import OrderedDict

import pytest
import torch
from torch import nn

from fcos_from_scratch.models.backbones import convert_frozen_batchnorm
from fcos_from_scratch.models.pretrained import (
    default_cache_dir,
    download_to_cache,
    is_url,
    load_pretrained,
    load_state_dict_file,
    resolve_checkpoint,
    sha256_prefix_from_name,
)


def _tiny_model():
    """Conv + BatchNorm + Linear: keys conv.*, bn.* (with num_batches_tracked), fc.*."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(3, 4, 3, bias=False), bn=nn.BatchNorm2d(4), fc=nn.Linear(4, 2)
    ))


def _checkpoint(seed=0):
    torch.manual_seed(seed)
    model = _tiny_model()
    with torch.no_grad():
        model.bn.running_var.uniform_(0.5, 2.0)
    return model.state_dict()


def _published(state, directory, stem):
    """Save ``state`` as ``<stem>-<sha256[:8]>.pth`` (torchvision's naming) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    raw = directory / "raw.pth"
    torch.save(state, raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    return raw.rename(directory / f"{stem}-{digest[:8]}.pth")


def test_names_and_urls():
    assert sha256_prefix_from_name("resnet18-f37072fd.pth") == "f37072fd"
    assert sha256_prefix_from_name("mobilenet_v2-b0353104.pth") == "b0353104"
    assert sha256_prefix_from_name("my-weights.pth") is None  # "weights" is not hex
    assert is_url("file:///tmp/a.pth") and is_url("https://x/a.pth")
    assert not is_url("/tmp/a.pth") and not is_url("C:weights.pth")


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FCOS_FROM_SCRATCH_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FCOS_FROM_SCRATCH_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "fcos_from_scratch")


def test_local_path_loads_every_tensor(tmp_path):
    state = _checkpoint()
    path = tmp_path / "tiny.pth"
    torch.save(state, path)
    model = _tiny_model()
    assert load_pretrained(model, str(path)) == ([], [])
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_wrapped_checkpoint_is_unwrapped(tmp_path):
    state = _checkpoint()
    torch.save({"model": state, "epoch": 3}, tmp_path / "wrapped.pth")
    assert list(load_state_dict_file(tmp_path / "wrapped.pth")) == list(state)


def test_wrong_keys_name_the_file_and_keys_and_load_nothing(tmp_path):
    state = _checkpoint()
    del state["conv.weight"]
    state["head.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    model = _tiny_model()
    before = model.bn.running_var.clone()
    with pytest.raises(ValueError, match="bad.pth") as info:
        load_pretrained(model, path)
    message = str(info.value)
    assert "missing keys (1): [conv.weight]" in message
    assert "unexpected keys (1): [head.weight]" in message
    assert torch.equal(model.bn.running_var, before)  # nothing loaded on failure
    assert load_pretrained(model, path, strict=False) == (["conv.weight"], ["head.weight"])
    assert torch.equal(model.bn.running_var, state["bn.running_var"])


def test_wrong_shape_fails_even_when_not_strict(tmp_path):
    state = _checkpoint()
    state["fc.weight"] = torch.zeros(10, 4)
    torch.save(state, tmp_path / "ten_classes.pth")
    with pytest.raises(ValueError, match=r"fc.weight: checkpoint \(10, 4\) vs model \(2, 4\)"):
        load_pretrained(_tiny_model(), tmp_path / "ten_classes.pth", strict=False)


def test_frozen_model_accepts_num_batches_tracked(tmp_path):
    torch.save(_checkpoint(), tmp_path / "tiny.pth")
    model = convert_frozen_batchnorm(_tiny_model())
    assert "bn.num_batches_tracked" not in model.state_dict()
    assert load_pretrained(model, tmp_path / "tiny.pth") == ([], [])


def test_missing_file_and_non_state_dict_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        resolve_checkpoint(tmp_path / "nowhere.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="list.pth.*holds no state dict"):
        load_state_dict_file(tmp_path / "list.pth")


def test_file_url_is_downloaded_checked_and_cached(tmp_path, monkeypatch):
    state = _checkpoint()
    source = _published(state, tmp_path / "server", "tiny")
    cache = tmp_path / "cache"
    cached = download_to_cache(source.as_uri(), cache)
    assert cached == cache / source.name and cached.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == [source.name]  # no temp files left

    def no_network(*args, **kwargs):
        raise AssertionError("a cache hit must not download")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    source.unlink()  # gone from the "server": only the cache can answer
    model = _tiny_model()
    load_pretrained(model, source.as_uri(), cache_dir=cache)
    assert torch.equal(model.conv.weight, state["conv.weight"])


def test_checksum_mismatch_is_an_error_and_caches_nothing(tmp_path):
    source = tmp_path / "server" / "tiny-deadbeef.pth"
    source.parent.mkdir()
    torch.save(_checkpoint(), source)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="checksum mismatch.*'deadbeef'"):
        download_to_cache(source.as_uri(), cache)
    assert list(cache.iterdir()) == []
    with pytest.raises(urllib.error.URLError):
        download_to_cache((tmp_path / "server" / "absent.pth").as_uri(), cache)
    assert list(cache.iterdir()) == []  # a failed download leaves no temporary file
    assert download_to_cache(source.as_uri(), cache, check_hash=False).is_file()


def test_explicit_sha256_is_checked_for_names_without_one(tmp_path):
    source = tmp_path / "server" / "plain.pth"
    source.parent.mkdir()
    torch.save(_checkpoint(), source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="checksum mismatch"):
        download_to_cache(source.as_uri(), tmp_path / "a", sha256="0" * 64)
    assert download_to_cache(source.as_uri(), tmp_path / "b", sha256=digest).is_file()
