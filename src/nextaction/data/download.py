"""``nextaction datasets download NAME``: fetch a known public dataset into a local cache.

Downloads use :mod:`urllib` only, stream to a temporary file, are checked against a SHA-256 when one is
recorded, and are unpacked into a temporary folder that is renamed into place, so an interrupted download
never leaves a half-written dataset behind. The cache is ``$NEXTACTION_CACHE`` or ``~/.cache/nextaction``.

Checksums: a dataset's ``sha256`` is filled in only where we know the published file's hash; where it is
None the download is used as is (verify-if-known). Do not fill one in without checking it against the file.
Datasets behind a login (Kaggle, Tianchi) cannot be fetched by a script: :func:`download` says where to
get them by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from nextaction.errors import InputError

CACHE_ENV: Final = "NEXTACTION_CACHE"
_TIMEOUT_S: Final = 30
_CHUNK: Final = 1 << 20


@dataclass(frozen=True, kw_only=True)
class KnownDataset:
    """A dataset we know how to get. ``entry`` is the path inside the unpacked download to read."""

    name: str
    url: str
    description: str
    format: str  # the nextaction.data.readers format of ``entry``
    entry: str  # relative to the dataset's cache folder: what `nextaction prepare` should read
    sha256: str | None = None  # of the downloaded file; None = not known, not checked
    manual: str | None = None  # why it cannot be downloaded by a script (then ``url`` is the page)


_GROUPLENS: Final = "https://files.grouplens.org/datasets/movielens"

DATASETS: Final[dict[str, KnownDataset]] = {
    "movielens-100k": KnownDataset(
        name="movielens-100k",
        url=f"{_GROUPLENS}/ml-100k.zip",
        description="MovieLens 100K: 100,000 ratings, 943 users, 1,682 movies with titles and genres",
        format="movielens",
        entry="ml-100k",
    ),
    "movielens-1m": KnownDataset(
        name="movielens-1m",
        url=f"{_GROUPLENS}/ml-1m.zip",
        description="MovieLens 1M: 1,000,209 ratings, 6,040 users, 3,706 movies",
        format="movielens",
        entry="ml-1m",
    ),
    "movielens-10m": KnownDataset(
        name="movielens-10m",
        url=f"{_GROUPLENS}/ml-10m.zip",
        description="MovieLens 10M: 10,000,054 ratings, 69,878 users, 10,677 movies",
        format="movielens",
        entry="ml-10M100K",
    ),
    "movielens-latest-small": KnownDataset(
        name="movielens-latest-small",
        url=f"{_GROUPLENS}/ml-latest-small.zip",
        description="MovieLens latest (small): about 100,000 ratings, 610 users, 9,700 movies",
        format="movielens",
        entry="ml-latest-small",
    ),
    "amazon-beauty": KnownDataset(
        name="amazon-beauty",
        # Pinned to the commit our copy came from, so the file cannot change under a recorded hash.
        url=(
            "https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/"
            "2a81540ae18615d88ef88227b0c066e5b74781e5/data/Beauty.txt"
        ),
        description="Amazon Beauty 5-core as item sequences (S3-Rec): 198,502 interactions, 22,363 users",
        format="sequences",
        entry="Beauty.txt",
    ),
    "retailrocket": KnownDataset(
        name="retailrocket",
        url="https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset",
        description="RetailRocket e-commerce events: views, add-to-carts, transactions (events.csv)",
        format="retailrocket",
        entry="events.csv",
        manual="Kaggle needs a login",
    ),
    "taobao": KnownDataset(
        name="taobao",
        url="https://tianchi.aliyun.com/dataset/649",
        description="Taobao UserBehavior: about 100M pv/cart/fav/buy events (UserBehavior.csv)",
        format="taobao",
        entry="UserBehavior.csv",
        manual="Tianchi needs a login",
    ),
    "otto": KnownDataset(
        name="otto",
        url="https://www.kaggle.com/datasets/otto/recsys-dataset",
        description="OTTO sessions: 12.9M sessions of clicks, carts and orders (train.jsonl)",
        format="otto",
        entry="train.jsonl",
        manual="Kaggle needs a login",
    ),
}


def resolve_cache_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``cache`` if given, else ``$NEXTACTION_CACHE``, else ``~/.cache/nextaction``."""
    if cache is not None:
        return Path(cache).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nextaction"


def download(name: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Download (once) and unpack dataset ``name``; return the path to pass to ``read_events``."""
    known = DATASETS.get(name)
    if known is None:
        raise InputError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if known.manual is not None:
        raise InputError(
            f"{name} cannot be downloaded by a script ({known.manual}): download it by hand from"
            f" {known.url} and pass the path of {known.entry} (format {known.format})"
        )
    root = resolve_cache_dir(cache_dir)
    target = root / name
    if target.exists():
        return target / known.entry
    try:
        root.mkdir(parents=True, exist_ok=True)
        archive = _fetch(known, root)
        try:
            _unpack_atomically(archive, known, target)
        finally:
            archive.unlink(missing_ok=True)
    except zipfile.BadZipFile as err:
        raise InputError(f"the archive from {known.url} is damaged ({err}); retry the download") from None
    except OSError as err:
        raise _cache_error(root, err) from None
    return target / known.entry


def _cache_error(root: Path, err: BaseException) -> InputError:
    return InputError(
        f"cannot write the dataset cache ({_reason(err)}); free some space or choose another folder"
        f" with --cache-dir or ${CACHE_ENV}",
        path=root,
    )


def _fetch(known: KnownDataset, root: Path) -> Path:
    """Stream the URL to a temporary file in ``root``, checking the SHA-256 when one is recorded."""
    host = urllib.parse.urlsplit(known.url).netloc or known.url
    handle, tmp_name = tempfile.mkstemp(prefix=f".{known.name}.", suffix=".part", dir=root)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(known.url, timeout=_TIMEOUT_S) as response,
        ):
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as err:
        tmp.unlink(missing_ok=True)
        raise InputError(
            f"{host} answered HTTP {err.code} ({err.reason}) for {known.url}: download it by hand and pass"
            " the file path"
        ) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as err:
        tmp.unlink(missing_ok=True)
        raise InputError(
            f"cannot reach {host} (offline?): download {known.url} by hand and pass the file path"
            f" ({_reason(err)})"
        ) from None
    except OSError as err:  # the network was fine: writing the cache failed (disk full, permissions)
        tmp.unlink(missing_ok=True)
        raise _cache_error(root, err) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if known.sha256 is not None and digest.hexdigest() != known.sha256.lower():
        tmp.unlink(missing_ok=True)
        raise InputError(
            f"checksum mismatch for {known.url}: expected sha256 {known.sha256}, got {digest.hexdigest()};"
            " the download is damaged or the file changed upstream: retry, or download it by hand"
        )
    return tmp


def _reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or err
    return str(reason).replace("\n", " ")


def _unpack_atomically(archive: Path, known: KnownDataset, target: Path) -> None:
    """Unpack into a temporary sibling of ``target``, then rename it into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{known.name}.", dir=target.parent))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                for member in zipped.namelist():
                    # Refuse paths that would land outside the folder ("zip slip").
                    resolved = (tmp / member).resolve()
                    if not resolved.is_relative_to(tmp.resolve()):
                        raise InputError(f"the archive from {known.url} holds an unsafe path {member!r}")
                zipped.extractall(tmp)
        else:
            shutil.copyfile(archive, tmp / known.entry)
        if not (tmp / known.entry).exists():
            raise InputError(
                f"the download from {known.url} has no {known.entry!r}; it may have changed upstream"
            )
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.exists():  # another process finished first otherwise: use its copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
