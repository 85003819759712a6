"""Reading corpus documents: tuple shards, BEIR corpus.jsonl, MS MARCO collection.tsv, Parquet/JSONL with id+text."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from negminer.pipelines import io
from negminer.pipelines import schema as S
from negminer.pipelines.transforms.tabular import beir_object

ID_FIELDS = ("_id", "id", "doc_id", "docid", "pid", "corpus_id")
TEXT_FIELDS = ("text", "contents", "passage", "body", "document")
TITLE_FIELD = "title"
BATCH = 8192

Batch = tuple[pa.Array, pa.Array]  # (ids, texts)


def detect_format(path: str) -> str:
    """`shards`, `parquet`, `jsonl` or `tsv` from the path (and, for Parquet, its columns)."""
    if os.path.isdir(path) or path.endswith("/"):
        return "shards"
    name = path.lower()
    for ext in (".gz", ".bz2"):
        name = name.removesuffix(ext)
    if name.endswith(".parquet"):
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            names = pq.ParquetFile(fh).schema_arrow.names
        return "shards" if S.QUERY in names and S.POSITIVE in names else "parquet"
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith((".tsv", ".txt")):
        return "tsv"
    raise ValueError(f"--corpus {path!r}: unknown format (want a shard dir, .parquet, .jsonl or .tsv, maybe .gz)")


def shard_documents(path: str | list[str]) -> Iterator[Batch]:
    """Every positive and existing negative of the tuple shards at `path` (or the files listed), with their ids."""
    cols = [S.POSITIVE, S.POSITIVE_ID, S.NEGATIVES, S.NEGATIVE_IDS]
    for batch in io.read_shards(path, columns=cols):
        yield batch.column(S.POSITIVE_ID), batch.column(S.POSITIVE)
        negs = batch.column(S.NEGATIVES)
        if len(pc.list_flatten(negs)):
            yield pc.list_flatten(batch.column(S.NEGATIVE_IDS)), pc.list_flatten(negs)


def corpus_documents(path: str, rejects: list[dict]) -> Iterator[Batch]:
    """Documents of one `--corpus` path; unusable records are appended to `rejects` with their reason."""
    fmt = detect_format(path)
    if fmt == "shards":
        yield from shard_documents(path)
    elif fmt == "parquet":
        yield from _parquet_documents(path)
    else:
        yield from _text_documents(path, fmt, rejects)


def pick_fields(names: list[str], where: str) -> tuple[str, str, str | None]:
    """(id field, text field, title field or None) among `names`, or a clear error."""
    id_field = next((f for f in ID_FIELDS if f in names), None)
    text_field = next((f for f in TEXT_FIELDS if f in names), None)
    if id_field is None or text_field is None:
        raise ValueError(
            f"{where}: need an id field (one of {ID_FIELDS}) and a text field (one of {TEXT_FIELDS}), got {names}"
        )
    return id_field, text_field, TITLE_FIELD if TITLE_FIELD in names else None


def _parquet_documents(path: str) -> Iterator[Batch]:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        pf = pq.ParquetFile(fh)
        id_f, text_f, title_f = pick_fields(pf.schema_arrow.names, path)
        cols = [id_f, text_f] + ([title_f] if title_f else [])
        for batch in pf.iter_batches(batch_size=BATCH, columns=cols):
            ids = batch.column(id_f).cast(pa.string())
            texts = batch.column(text_f).cast(pa.string())
            if title_f:
                title = pc.fill_null(batch.column(title_f).cast(pa.string()), "")
                joined = pc.utf8_trim_whitespace(pc.binary_join_element_wise(title, pc.fill_null(texts, ""), " "))
                texts = pc.if_else(pc.is_null(texts), texts, joined)
            yield ids, texts


def _text_documents(path: str, fmt: str, rejects: list[dict]) -> Iterator[Batch]:
    ids: list[str | None] = []
    texts: list[str] = []
    with FileSystems.open(path) as raw:  # compression from the extension (.gz, .bz2)
        for n, data in enumerate(iter(raw.readline, b""), start=1):
            try:
                line = data.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                rejects.append(io.make_reject(path, "not UTF-8", data, line=n))
                continue
            if not line.strip():
                continue
            doc, reason = parse_jsonl_doc(line) if fmt == "jsonl" else parse_tsv_doc(line)
            if reason:
                rejects.append(io.make_reject(path, reason, line, line=n))
                continue
            ids.append(doc[0])
            texts.append(doc[1])
            if len(texts) >= BATCH:
                yield pa.array(ids, pa.string()), pa.array(texts, pa.string())
                ids, texts = [], []
    if texts:
        yield pa.array(ids, pa.string()), pa.array(texts, pa.string())


def parse_tsv_doc(line: str) -> tuple[tuple[str, str] | None, str | None]:
    """`id<TAB>text` (MS MARCO collection.tsv) -> ((id, text), None) or (None, reason)."""
    parts = line.split("\t")
    if len(parts) != 2:
        return None, f"tsv: expected 2 tab-separated fields (id, text), got {len(parts)}"
    if not parts[0].strip():
        return None, "tsv: empty id"
    if not parts[1].strip():
        return None, "tsv: empty text"
    return (parts[0].strip(), parts[1]), None


# The shared reader's reasons, in the words of the miner's corpus rejects.
_JSONL_REASONS = {
    "json_not_an_object": "not a JSON object",
    "missing_field": "missing id or text field",
    "not_a_string": "text/title is not a string",
    "empty_text": "empty text",
}


def parse_jsonl_doc(line: str) -> tuple[tuple[str, str] | None, str | None]:
    """One JSON object with an id and a text field (BEIR corpus.jsonl: _id, title, text), read by the BEIR reader."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return None, f"jsonl: invalid JSON ({e.msg})"
    got = beir_object(obj, clean=False, id_fields=ID_FIELDS, text_fields=TEXT_FIELDS)
    if isinstance(got, str):
        return None, "jsonl: " + _JSONL_REASONS[got.split(":")[0]]
    return got, None
