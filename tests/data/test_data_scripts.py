"""data_scripts/ and fcos_from_scratch/data/download.py against archives built here.

No test reaches the network: sources are local paths, ``file://`` URLs, or a server
on 127.0.0.1 started by the test.
"""

import hashlib
import importlib.util
import io
import json
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fcos_from_scratch.data.download import DownloadError, download_file, extract, fetch_all
from conftest import REPO

SCRIPTS = REPO / "data_scripts"


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_script(name):
    return load_module(name, SCRIPTS / f"{name}.py")


# The 3-image VOCdevkit builder of test_data_voc.py, loaded by path (works in any import mode).
make_devkit = load_module("_voc_fixture", Path(__file__).with_name("test_data_voc.py")).make_devkit


def make_archive(tmp_path, name="VOCtest.tar"):
    """A tar holding a 3-image VOCdevkit; returns (path, md5)."""
    make_devkit(tmp_path / "src")
    archive = tmp_path / name
    with tarfile.open(archive, "w") as handle:
        handle.add(tmp_path / "src" / "VOCdevkit", arcname="VOCdevkit")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_from_file_url_checks_md5(tmp_path):
    archive, md5 = make_archive(tmp_path)
    dest = download_file(archive.as_uri(), tmp_path / "out" / "a.tar", md5, quiet=True)
    assert dest.read_bytes() == archive.read_bytes()
    assert not (tmp_path / "out" / "a.tar.part").exists()
    download_file("file:///does/not/matter", dest, md5, quiet=True)  # already there: no download


def test_resume_appends_to_a_partial_file(tmp_path):
    archive, md5 = make_archive(tmp_path)
    data = archive.read_bytes()
    dest = tmp_path / "out" / "a.tar"
    dest.parent.mkdir()
    (tmp_path / "out" / "a.tar.part").write_bytes(data[:1000])
    download_file(str(archive), dest, md5, quiet=True)
    assert dest.read_bytes() == data


def test_checksum_mismatch_deletes_and_explains(tmp_path):
    archive, _ = make_archive(tmp_path)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_file(str(archive), tmp_path / "a.tar", "0" * 32, quiet=True)
    assert not (tmp_path / "a.tar").exists() and not (tmp_path / "a.tar.part").exists()


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support (SimpleHTTPRequestHandler has none)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        data = Path(self.translate_path(self.path)).read_bytes()
        start = int(self.headers.get("Range", "bytes=0-")[6:].split("-")[0])
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])
        self.server.starts.append(start)


def test_http_resume_uses_range(tmp_path):
    archive, md5 = make_archive(tmp_path)
    try:
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(tmp_path)))
    except OSError as err:  # pragma: no cover - sandbox without sockets
        pytest.skip(f"cannot bind a loopback socket: {err}")
    server.starts = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        dest = tmp_path / "out.tar"
        (tmp_path / "out.tar.part").write_bytes(archive.read_bytes()[:777])
        download_file(f"http://127.0.0.1:{server.server_address[1]}/{archive.name}", dest, md5, quiet=True)
    finally:
        server.shutdown()
        server.server_close()
    assert dest.read_bytes() == archive.read_bytes()
    assert server.starts == [777]  # only the missing tail was sent


def test_offline_gives_a_clear_message(tmp_path):
    with pytest.raises(DownloadError, match="offline") as info:
        download_file("http://127.0.0.1:9/VOCtrainval.tar", tmp_path / "x.tar", quiet=True)
    assert "digits" in str(info.value)  # and says what works without a download


def test_extract_refuses_path_traversal(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as handle:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        handle.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(DownloadError, match="outside"):
        extract(archive, tmp_path / "dest")
    assert not (tmp_path / "escape.txt").exists()


def test_download_voc_script_with_source_dir(tmp_path, monkeypatch):
    archive, md5 = make_archive(tmp_path, "VOCtrainval_06-Nov-2007.tar")
    script = load_script("download_voc")
    monkeypatch.setitem(script.VOC_ARCHIVES, "2007-trainval", ("http://unused", archive.name, md5))
    root = tmp_path / "data"
    assert script.main(["--root", str(root), "--parts", "2007-trainval", "--source-dir", str(tmp_path),
                        "--quiet"]) == 0
    assert (root / "VOCdevkit" / "VOC2007" / "Annotations" / "000001.xml").is_file()
    assert script.main(["--root", str(root), "--parts", "2012-trainval", "--source-dir", str(tmp_path),
                        "--quiet"]) == 1  # archive missing there: an error, not a crash


def test_download_coco_script_fetch_all_with_file_urls(tmp_path):
    archive, md5 = make_archive(tmp_path, "ann.tar")
    load_script("download_coco")  # imports cleanly
    fetch_all([(archive.as_uri(), "ann.tar", md5)], tmp_path / "coco", keep_archives=False, quiet=True)
    assert (tmp_path / "coco" / "VOCdevkit").is_dir() and not (tmp_path / "coco" / "downloads").exists()


def test_voc_to_coco_script(tmp_path):
    make_devkit(tmp_path)
    out = tmp_path / "voc07.json"
    assert load_script("voc_to_coco").main(["--root", str(tmp_path), "--sets", "2007:trainval", "--out", str(out)]) == 0
    gt = json.loads(out.read_text())
    assert len(gt["images"]) == 3 and len(gt["annotations"]) == 3 and len(gt["categories"]) == 20
    assert gt["annotations"][1]["difficult"] == 1


def test_make_digits_script(tmp_path, capsys):
    code = load_script("make_digits").main(["--root", str(tmp_path), "--splits", "val", "--num-val", "2",
                                            "--min-side", "64", "--max-side", "96"])
    assert code == 0 and "digits val: 2 images" in capsys.readouterr().out
    assert (tmp_path / "digits" / "val" / "annotations.json").is_file()
