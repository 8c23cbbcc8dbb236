"""Dataset downloads, without the network: local file:// URLs and a refused port stand in for servers."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from nextaction.data import download as dl
from nextaction.data.download import DATASETS, KnownDataset, download, resolve_cache_dir
from nextaction.errors import InputError


def fake(
    monkeypatch: pytest.MonkeyPatch, url: str, *, sha256: str | None = None, entry: str = "ml-tiny"
) -> str:
    known = KnownDataset(
        name="tiny", url=url, description="test", format="movielens", entry=entry, sha256=sha256
    )
    monkeypatch.setitem(dl.DATASETS, "tiny", known)
    return "tiny"


def tiny_zip(path: Path, members: dict[str, str] | None = None) -> Path:
    members = members or {"ml-tiny/u.data": "1\t2\t5\t881250949\n"}
    with zipfile.ZipFile(path, "w") as zipped:
        for name, text in members.items():
            zipped.writestr(name, text)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_known_datasets_are_described() -> None:
    assert {"movielens-100k", "movielens-1m", "movielens-latest-small", "retailrocket"} <= set(DATASETS)
    for name, known in DATASETS.items():
        assert known.name == name
        assert known.url.startswith("https://")
        assert known.sha256 is None or len(known.sha256) == 64


def test_unknown_name() -> None:
    with pytest.raises(InputError, match="unknown dataset 'nope'; known datasets: movielens-100k"):
        download("nope")


def test_login_only_datasets_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="Kaggle needs a login") as excinfo:
        download("retailrocket", cache_dir=tmp_path)
    assert "kaggle.com" in str(excinfo.value)
    assert leftovers(tmp_path) == []


def test_offline_is_a_one_line_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = fake(monkeypatch, "http://127.0.0.1:9/ml-tiny.zip")  # the discard port: connection refused
    with pytest.raises(InputError) as excinfo:
        download(name, cache_dir=tmp_path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(
        "cannot reach 127.0.0.1:9 (offline?): download http://127.0.0.1:9/ml-tiny.zip by hand and pass the file path"
    )
    assert leftovers(tmp_path) == []  # the partial download is gone


def test_checksum_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tiny_zip(tmp_path / "ml-tiny.zip")
    name = fake(monkeypatch, archive.as_uri(), sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(
        InputError, match=f"checksum mismatch .* expected sha256 0{{64}}, got {sha256(archive)}"
    ):
        download(name, cache_dir=cache)
    assert leftovers(cache) == []


def test_download_unpacks_once_and_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tiny_zip(tmp_path / "ml-tiny.zip")
    name = fake(monkeypatch, archive.as_uri(), sha256=sha256(archive).upper())
    cache = tmp_path / "cache"
    path = download(name, cache_dir=cache)
    assert path == cache / "tiny" / "ml-tiny"
    assert (path / "u.data").read_text() == "1\t2\t5\t881250949\n"
    assert leftovers(cache) == ["tiny"]  # no temporary files or folders left
    archive.unlink()  # a second call must not download again
    assert download(name, cache_dir=cache) == path

    from nextaction.data.readers import read_events

    assert read_events(path).events.height == 1


def test_single_file_without_known_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "Beauty.txt"
    source.write_text("1 2 3\n")
    name = fake(monkeypatch, source.as_uri(), entry="Beauty.txt")
    path = download(name, cache_dir=tmp_path / "cache")
    assert path.read_text() == "1 2 3\n"


def test_archive_without_the_expected_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tiny_zip(tmp_path / "a.zip", {"other/u.data": "x"})
    name = fake(monkeypatch, archive.as_uri())
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="has no 'ml-tiny'"):
        download(name, cache_dir=cache)
    assert leftovers(cache) == []


def test_unsafe_archive_paths_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tiny_zip(tmp_path / "evil.zip", {"../escaped.txt": "x", "ml-tiny/u.data": "y"})
    name = fake(monkeypatch, archive.as_uri())
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="unsafe path"):
        download(name, cache_dir=cache)
    assert not (tmp_path / "escaped.txt").exists()
    assert leftovers(cache) == []


def test_unwritable_cache_is_an_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tiny_zip(tmp_path / "ml-tiny.zip")
    name = fake(monkeypatch, archive.as_uri())
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot write the dataset cache"):
        download(name, cache_dir=blocker / "cache")


def test_cache_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXTACTION_CACHE", str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("NEXTACTION_CACHE")
    assert resolve_cache_dir() == Path.home() / ".cache" / "nextaction"
