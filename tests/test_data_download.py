"""Downloads served from a local HTTP server, so the real pooch path runs with no internet."""
import hashlib
import io
import pickle
import re
import tarfile
import threading
import time
from argparse import ArgumentParser
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from plasticnet.data import fetch
from plasticnet.data.cifar10 import BATCH_FILES, load_cifar10
from plasticnet.data.commands import register
from plasticnet.data.fetch import download
from plasticnet.errors import DataError

PTB = {f"ptb.{split}.txt": f" a b \n {split} \n".encode() for split in ("train", "valid", "test")}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@dataclass
class Server:
    url: str
    folder: Path
    requests: list = field(default_factory=list)

    def serve(self, name: str, data: bytes) -> str:
        (self.folder / name).write_bytes(data)
        return md5(data)


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # record instead of printing
        self.server.seen.append(self.path)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serves tmp_path/served on 127.0.0.1; the thread stops at teardown or after 60 s, whichever comes first."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    folder = tmp_path / "served"
    folder.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(folder)))
    httpd.seen = []
    httpd.timeout = 0.1
    stop, deadline = threading.Event(), time.monotonic() + 60

    def serve():
        while not stop.is_set() and time.monotonic() < deadline:
            httpd.handle_request()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield Server(f"http://127.0.0.1:{httpd.server_address[1]}/mirror", folder, httpd.seen)
    stop.set()
    thread.join(timeout=5)
    httpd.server_close()


@pytest.fixture
def mirror(server):
    """The server's folder seen as a mirror path, so the base URL's own path is exercised too."""
    (server.folder / "mirror").mkdir()
    server.folder = server.folder / "mirror"
    return server


def test_download_fetches_verifies_and_then_uses_the_cache(mirror, tmp_path):
    files = {name: mirror.serve(name, data) for name, data in PTB.items()}
    root = tmp_path / "data"
    paths = download("ptb", root, base_url=mirror.url, files=files)
    assert paths == [root / name for name in PTB]
    assert all((root / name).read_bytes() == data for name, data in PTB.items())
    assert sorted(mirror.requests) == sorted(f"/mirror/{name}" for name in PTB)
    download("ptb", root, base_url=mirror.url, files=files)
    assert len(mirror.requests) == 3  # second call: nothing fetched


def test_a_damaged_local_copy_is_fetched_again(mirror, tmp_path):
    files = {name: mirror.serve(name, data) for name, data in PTB.items()}
    download("ptb", tmp_path, base_url=mirror.url, files=files)
    (tmp_path / "ptb.valid.txt").write_bytes(b" a \n")
    download("ptb", tmp_path, base_url=mirror.url, files=files)
    assert mirror.requests[-1] == "/mirror/ptb.valid.txt" and len(mirror.requests) == 4
    assert (tmp_path / "ptb.valid.txt").read_bytes() == PTB["ptb.valid.txt"]


def test_checksum_mismatch_is_a_one_line_data_error_and_leaves_nothing(mirror, tmp_path):
    for name, data in PTB.items():
        mirror.serve(name, data)
    root = tmp_path / "data"
    with pytest.raises(DataError) as caught:
        download("ptb", root, base_url=mirror.url, retries=0)  # the official md5s cannot match these files
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{mirror.url}/ptb.train.txt could not be fetched into {root}")
    assert "f26c4b92c5fdc7b3f8c7cdcb991d8420" in message
    assert message.endswith(f"run `plasticnet data download ptb --root {root}`")
    assert not (root / "ptb.train.txt").exists()


def test_missing_file_on_the_server(mirror, tmp_path):
    with pytest.raises(DataError, match=re.escape(f"{mirror.url}/nothing.zip could not be fetched")):
        download("omniglot", tmp_path, base_url=mirror.url, files={"nothing.zip": md5(b"")}, retries=0)


def test_base_url_from_environment(mirror, tmp_path, monkeypatch):
    files = {name: mirror.serve(name, data) for name, data in PTB.items()}
    monkeypatch.setenv("PLASTICNET_DATA_URL_PTB", mirror.url)
    download("ptb", tmp_path, files=files)
    assert len(mirror.requests) == 3


def cifar_tarball(extra: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in extra.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def batch(first: int) -> bytes:
    data = np.full((2, 3072), first, np.uint8)
    return pickle.dumps({b"data": data, b"labels": [first % 10, (first + 1) % 10]}, protocol=2)


def test_cifar10_tarball_is_extracted_to_the_batch_folder_only(mirror, tmp_path):
    names = BATCH_FILES["train"] + BATCH_FILES["test"]
    content = {f"cifar-10-batches-py/{name}": batch(i) for i, name in enumerate(names)}
    content["../escaped"] = b"x"
    files = {"cifar-10-python.tar.gz": mirror.serve("cifar-10-python.tar.gz", cifar_tarball(content))}
    root = tmp_path / "data"
    paths = download("cifar10", root, base_url=mirror.url, files=files)
    assert paths == [root / "cifar-10-python.tar.gz", root / "cifar-10-batches-py"]
    images, labels = load_cifar10(root)
    assert images.shape == (10, 32, 32, 3) and labels.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    assert not (tmp_path / "escaped").exists()


def test_cifar10_tarball_without_the_batches(mirror, tmp_path):
    files = {"cifar-10-python.tar.gz": mirror.serve("cifar-10-python.tar.gz", cifar_tarball({"readme": b"x"}))}
    with pytest.raises(DataError, match="cifar-10-python.tar.gz lacks some of cifar-10-batches-py/data_batch_1"):
        download("cifar10", tmp_path, base_url=mirror.url, files=files)


def test_command_line_download(mirror, tmp_path, monkeypatch, capsys):
    parser = ArgumentParser(prog="plasticnet")
    register(parser.add_subparsers(dest="command", required=True))
    files = {name: mirror.serve(name, data) for name, data in PTB.items()}
    monkeypatch.setattr(fetch, "DOWNLOADS", {"ptb": files})
    args = parser.parse_args(["data", "download", "ptb", "--root", str(tmp_path), "--base-url", mirror.url])
    assert args.func(args) == 0
    assert capsys.readouterr().out.startswith(f"ptb: {tmp_path / 'ptb.train.txt'}, ")
