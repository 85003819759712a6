"""`negminer export`: each format checked field by field against its documented schema, loaded by its trainer."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from negminer import cli, export
from negminer.pipelines import io
from negminer.pipelines import schema as S
from tests.tiny_models import tiny_bert

# The documented line schemas (FlagEmbedding's fine-tuning README; Tevatron v1's training data).
FLAG_KEYS = {"query": str, "pos": list, "neg": list, "pos_scores": list, "neg_scores": list, "prompt": str}
TEVATRON_KEYS = {"query_id", "query", "positive_passages", "negative_passages"}
PASSAGE_KEYS = {"docid", "title", "text"}


def _rows() -> dict[str, list[dict]]:
    """Two splits; 0..3 negatives per row; scores, ids and instructions present on some rows only."""
    topics = ["river", "violin", "bakery", "glacier", "comet", "harbor", "orchard", "lantern", "meadow", "canyon"]
    out: dict[str, list[dict]] = {"train": [], "dev": []}
    for i, t in enumerate(topics * 2):
        k = i % 4
        negs = tuple(f"a sentence about the {t} that is wrong, number {j} of row {i}" for j in range(k))
        mined = i % 3 != 0
        row = S.TupleRow(
            source="snli" if i % 2 else "msmarco",
            pair_type="nli",
            query=f"what is the story of the {t} ({i})?",
            query_id=f"q{i}" if i % 5 else None,
            positive=f"the {t} is described here, row {i}",
            positive_id=f"p{i}" if i % 2 else None,
            negatives=negs,
            negative_ids=tuple(f"n{i}-{j}" if j % 2 == 0 else None for j in range(k)),
            positive_score=0.5 + i / 100 if mined else None,
            negative_scores=tuple(0.4 - j / 10 for j in range(k)) if mined else None,
            instruction="Given a premise, retrieve an entailed sentence" if i % 4 == 1 else None,
        )
        out["dev" if i >= 15 else "train"].append(row.to_dict())
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[str, dict[str, dict]]:
    """A shard dir with train (2 files) and dev (1 file); returns it and the source rows by id."""
    d = tmp_path_factory.mktemp("shards")
    rows = _rows()
    io.write_shards(rows["train"], str(d), "train", 2)
    io.write_shards(rows["dev"], str(d), "dev", 1)
    stored = {r[S.ID]: r for r in io.iter_rows(str(d))}  # as the shards hold them (scores now float32)
    assert len(stored) == sum(len(v) for v in rows.values())
    return str(d), stored


def _export(src: str, out: Path, fmt: str, *flags: str) -> dict:
    flags = flags if "--split" in flags else ("--split", "all", *flags)
    assert cli.main(["export", "--input", src, "--format", fmt, "--output", str(out), *flags]) == 0
    return json.loads((out / export.MANIFEST_NAME).read_text())


def _lines(out: Path) -> dict[str, list[dict]]:
    return {f.name: [json.loads(x) for x in f.read_text().splitlines()] for f in sorted(out.glob("*.jsonl"))}


def _source_rows_by_file(src: str) -> dict[str, list[dict]]:
    return {Path(f).stem: list(io.iter_rows(f)) for f in io.shard_files(src)}


# ---------------------------------------------------------------- pure functions


def test_fixed_negatives_pads_with_the_hardest_or_drops():
    assert export.fixed_negatives(["a", "b", "c"], 2, "pad") == ["a", "b"]
    assert export.fixed_negatives(["a"], 3, "pad") == ["a", "a", "a"]
    assert export.fixed_negatives(["a", "b"], 3, "pad") == ["a", "b", "a"]
    assert export.fixed_negatives(["a"], 3, "drop") == export.DROP_SHORT
    assert export.fixed_negatives([], 1, "pad") == export.DROP_EMPTY
    assert export.fixed_negatives([], 0, "drop") == []


def test_config_rejects_bad_values_naming_them():
    with pytest.raises(ValueError, match="'parquet'"):
        export.ExportConfig("i", "o", "parquet")
    with pytest.raises(ValueError, match="-1"):
        export.ExportConfig("i", "o", export.JSONL, num_negatives=-1)
    with pytest.raises(ValueError, match="--prompt"):
        export.ExportConfig("i", "o", export.TEVATRON, prompt="p")


# ---------------------------------------------------------------- sentence-transformers


def test_sentence_transformers_columns_and_padding(shards, tmp_path):
    src, by_id = shards
    manifest = _export(src, tmp_path, export.ST, "--num-negatives", "2")
    source = _source_rows_by_file(src)
    for stem, rows in source.items():
        table = pq.read_table(tmp_path / f"{stem}.parquet")
        assert table.column_names == ["anchor", "positive", "negative_1", "negative_2"]
        kept = [r for r in rows if r[S.NEGATIVES]]  # pad: only rows without any negative go
        assert table.num_rows == len(kept)
        for got, r in zip(table.to_pylist(), kept, strict=True):
            negs = r[S.NEGATIVES]
            want = [negs[0], negs[1] if len(negs) > 1 else negs[0]]
            assert [got["anchor"], got["positive"], got["negative_1"], got["negative_2"]] == [
                r[S.QUERY],
                r[S.POSITIVE],
                *want,
            ]
    without = sum(1 for r in by_id.values() if not r[S.NEGATIVES])
    assert manifest["rows_in"] == len(by_id) and manifest["rows"] == len(by_id) - without
    assert manifest["dropped"] == {export.DROP_EMPTY: without}


def test_sentence_transformers_drop_and_default_width(shards, tmp_path):
    src, by_id = shards
    most = max(len(r[S.NEGATIVES]) for r in by_id.values())
    manifest = _export(src, tmp_path / "all", export.ST)
    assert manifest["num_negatives"] == most
    manifest = _export(src, tmp_path / "drop", export.ST, "--num-negatives", "2", "--short-rows", "drop")
    assert manifest["rows"] == sum(1 for r in by_id.values() if len(r[S.NEGATIVES]) >= 2)
    manifest = _export(src, tmp_path / "pairs", export.ST, "--num-negatives", "0")
    assert manifest["rows"] == len(by_id)
    assert pq.read_table(tmp_path / "pairs" / "train-00000-of-00002.parquet").column_names == ["anchor", "positive"]


def _tiny_sentence_transformer(path: Path):
    from sentence_transformers import SentenceTransformer

    words = sorted(
        {w.strip("?(),.") for r in _rows()["train"] + _rows()["dev"] for t in (r[S.QUERY],) for w in t.split()}
    )
    return SentenceTransformer(tiny_bert(path, words, num_hidden_layers=1, max_position_embeddings=64), device="cpu")


def test_sentence_transformers_trainer_runs_on_the_export(shards, tmp_path):
    import datasets
    import torch
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    src, by_id = shards
    out = tmp_path / "st"
    _export(src, out, export.ST, "--num-negatives", "2")
    ds = datasets.load_dataset("parquet", data_dir=str(out))  # splits come from the file names; dev -> validation
    assert set(ds) == {"train", "validation"}
    assert ds["train"].num_rows + ds["validation"].num_rows == sum(1 for r in by_id.values() if r[S.NEGATIVES])
    model = _tiny_sentence_transformer(tmp_path / "tiny")
    before = [p.detach().clone() for p in model.parameters()]
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
        save_strategy="no", report_to=[], logging_steps=1, use_cpu=True, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=ds["train"], loss=MultipleNegativesRankingLoss(model)
    )
    result = trainer.train()
    assert trainer.state.global_step == 2
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True))


# ---------------------------------------------------------------- FlagEmbedding


def test_flagembedding_lines_follow_the_documented_schema(shards, tmp_path):
    src, _ = shards
    manifest = _export(src, tmp_path, export.FLAG, "--num-negatives", "2")
    source = _source_rows_by_file(src)
    lines = _lines(tmp_path)
    assert sorted(lines) == sorted(f"{stem}.jsonl" for stem in source)
    assert manifest["rows"] == sum(len(v) for v in source.values())
    for stem, rows in source.items():
        for line, r in zip(lines[f"{stem}.jsonl"], rows, strict=True):
            assert set(line) <= set(FLAG_KEYS)
            for key, typ in FLAG_KEYS.items():
                assert key not in line or isinstance(line[key], typ), key
            assert line["query"] == r[S.QUERY]
            assert line["pos"] == [r[S.POSITIVE]]
            assert line["neg"] == r[S.NEGATIVES][:2]
            assert all(isinstance(t, str) for t in line["pos"] + line["neg"])
            if r[S.POSITIVE_SCORE] is None:
                assert "pos_scores" not in line and "neg_scores" not in line
            else:
                assert line["pos_scores"] == [r[S.POSITIVE_SCORE]]
                assert line["neg_scores"] == r[S.NEGATIVE_SCORES][:2]
                assert len(line["neg_scores"]) == len(line["neg"]) and len(line["pos_scores"]) == len(line["pos"])
            assert line.get("prompt") == r[S.INSTRUCTION]


def test_flagembedding_prompt_flag_overrides_instructions(shards, tmp_path):
    src, by_id = shards
    _export(src, tmp_path, export.FLAG, "--prompt", "Represent this sentence for searching relevant passages: ")
    lines = [x for v in _lines(tmp_path).values() for x in v]
    assert len(lines) == len(by_id)
    assert {x["prompt"] for x in lines} == {"Represent this sentence for searching relevant passages: "}


# ---------------------------------------------------------------- Tevatron


def test_tevatron_lines_follow_the_documented_schema(shards, tmp_path):
    import datasets

    src, _ = shards
    _export(src, tmp_path, export.TEVATRON)
    source = _source_rows_by_file(src)
    lines = _lines(tmp_path)
    for stem, rows in source.items():
        for line, r in zip(lines[f"{stem}.jsonl"], rows, strict=True):
            assert set(line) == TEVATRON_KEYS
            assert line["query"] == r[S.QUERY]
            assert line["query_id"] == (r[S.QUERY_ID] or export.text_id(r[S.QUERY]))
            (pos,) = line["positive_passages"]
            assert pos == {"docid": r[S.POSITIVE_ID] or export.text_id(r[S.POSITIVE]), "title": "",
                           "text": r[S.POSITIVE]}  # fmt: skip
            assert [p["text"] for p in line["negative_passages"]] == r[S.NEGATIVES]
            for p, nid, text in zip(line["negative_passages"], r[S.NEGATIVE_IDS], r[S.NEGATIVES], strict=True):
                assert set(p) == PASSAGE_KEYS and all(isinstance(v, str) for v in p.values())
                assert p["docid"] == (nid or export.text_id(text))
    # Tevatron reads its training files with `datasets` JSON loading.
    ds = datasets.load_dataset("json", data_files={"train": str(tmp_path / "train-*.jsonl")}, split="train")
    assert ds.num_rows == sum(len(v) for k, v in source.items() if k.startswith("train"))


def test_text_id_is_stable_and_distinct():
    assert export.text_id("a") == export.text_id("a") != export.text_id("b")


# ---------------------------------------------------------------- jsonl round trip


def test_jsonl_round_trips_into_the_shard_format(shards, tmp_path):
    src, by_id = shards
    _export(src, tmp_path / "j", export.JSONL)
    back = []
    for f in sorted((tmp_path / "j").glob("*.jsonl")):
        back += [export.row_from_jsonl(x) for x in f.read_text().splitlines()]
    assert len(back) == len(by_id)
    for row in back:
        assert row == S.TupleRow.from_dict(by_id[row.id])
    io.write_shards([r.to_dict() for r in back], str(tmp_path / "again"), "train", 1)
    again = {r[S.ID]: r for r in io.iter_rows(str(tmp_path / "again"))}
    assert again == by_id


def test_jsonl_num_negatives_cuts_ids_and_scores_alike(shards, tmp_path):
    src, by_id = shards
    _export(src, tmp_path, export.JSONL, "--num-negatives", "1")
    for line in (x for v in _lines(tmp_path).values() for x in v):
        r = by_id[line[S.ID]]
        assert line[S.NEGATIVES] == r[S.NEGATIVES][:1] and line[S.NEGATIVE_IDS] == r[S.NEGATIVE_IDS][:1]
        assert line[S.NEGATIVE_SCORES] == (None if r[S.NEGATIVE_SCORES] is None else r[S.NEGATIVE_SCORES][:1])
        S.TupleRow.from_dict(line)  # still a valid row


# ---------------------------------------------------------------- files and flags


def test_failed_export_leaves_no_partial_file(shards, tmp_path, monkeypatch):
    src, _ = shards

    def boom(row, cfg, n):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(export, "_convert", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export.export(export.ExportConfig(src, str(tmp_path), export.FLAG))
    assert list(tmp_path.iterdir()) == []


def test_reexport_removes_files_of_the_previous_export(shards, tmp_path):
    src, _ = shards
    _export(src, tmp_path, export.JSONL)
    assert (tmp_path / "dev-00000-of-00001.jsonl").exists()
    only_train = str(Path(src) / "train-*.parquet")
    manifest = _export(only_train, tmp_path, export.JSONL)
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == [e["file"] for e in manifest["files"]]
    assert not (tmp_path / "dev-00000-of-00001.jsonl").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--format", "tevatron", "--prompt", "p"], "--prompt"),
        (["--format", "jsonl", "--short-rows", "drop"], "--short-rows"),
    ],
)
def test_flags_for_another_format_fail_clearly(shards, tmp_path, capsys, flags, message):
    src, _ = shards
    assert cli.main(["export", "--input", src, "--output", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not tmp_path.joinpath(export.MANIFEST_NAME).exists()


def test_bad_values_are_usage_errors(shards, tmp_path, capsys):
    src, _ = shards
    for flags, named in ((["--num-negatives", "-1"], "-1"), (["--format", "csv"], "'csv'")):
        with pytest.raises(SystemExit) as e:
            cli.main(["export", "--input", src, "--output", str(tmp_path), "--format", "jsonl", *flags])
        assert e.value.code == 2 and named in capsys.readouterr().err


def test_refuses_to_write_over_its_input(shards, capsys):
    src, _ = shards
    assert cli.main(["export", "--input", src, "--format", export.ST, "--output", src]) == 2
    assert "holds the input shard" in capsys.readouterr().err


def test_missing_input_names_it(tmp_path, capsys):
    assert cli.main(["export", "--input", str(tmp_path / "nope"), "--format", "jsonl", "--output", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    out = capsys.readouterr().out
    for flag in ("--input", "--format", "--output", "--num-negatives", "--short-rows", "--prompt", *export.FORMATS):
        assert flag in out
