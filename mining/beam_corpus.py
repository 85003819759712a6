"""The corpus on Beam: documents read source by source, deduplicated by normalised-text key in a combine.

`ReadDocsFn` reads one source (an input shard file or a `--corpus` file) and keys each non-empty document by the
hash of its normalised text, with its reading position (source number, then ordinal); `FirstDoc` (a CombineFn: the
smallest position wins, an order-free choice, so any grouping of partial results gives the same) keeps the first
occurrence, as the in-process `CorpusBuilder` does. Kept documents are written as Arrow parts by position range;
`load_corpus` assembles from them the `Corpus` the rest of the miner reads, equal to the in-process one.

Usage (inside a pipeline):
    parts = sources | ReadAndDedup(run_dir)  # sources: (source number, path, is a --corpus file)
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from negminer.mining import runfiles as rf
from negminer.mining.beam_encode import wire_key
from negminer.mining.corpus import DOC_ID, TEXT, Corpus, id_keys, text_keys
from negminer.mining.sources import corpus_documents, shard_documents
from negminer.pipelines import io

POS_BITS = 40  # a position is (source number << POS_BITS) + ordinal in the source
PART_BITS = 20  # positions per part file (2^20 ordinals of one source)
PART_SCHEMA = pa.schema(
    [("pos", pa.int64()), (DOC_ID, pa.string()), (TEXT, pa.string()), ("norm", pa.uint64()), ("exact", pa.uint64())]
)

Doc = tuple[int, str | None, str, int]  # (position, source id, text, exact-text hash)


class ReadDocsFn(beam.DoFn):
    """(source number, path, is a --corpus file) -> (normalised-text key as `wire_key`, Doc) per non-empty document;
    the source's id aliases, counts and rejects go to files of the run (`sources/<n>.*`)."""

    def __init__(self, run_dir: str):
        self.dir = io.join(run_dir, "sources")

    def process(self, source: tuple[int, str, bool]):
        i, path, is_corpus = source
        rejects: list[dict] = []
        batches = corpus_documents(path, rejects) if is_corpus else shard_documents([path])
        n = raw = empty = 0
        alias_id, alias_norm = [np.zeros(0, np.uint64)], [np.zeros(0, np.uint64)]
        for ids, texts in batches:
            ids, texts = ids.cast(pa.string()), texts.cast(pa.string())
            nonempty = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0), False)
            keep = np.flatnonzero(nonempty.to_numpy(zero_copy_only=False))
            empty += len(texts) - len(keep)
            ordinal, n = n + keep, n + len(texts)
            ids, texts = ids.take(pa.array(keep)).to_pylist(), texts.take(pa.array(keep)).to_pylist()
            norm, exact = text_keys(texts)
            raw += len(norm)
            idk = id_keys(ids)
            alias_id.append(idk[idk != 0])
            alias_norm.append(norm[idk != 0])
            for o, d, t, nk, ek in zip(ordinal.tolist(), ids, texts, norm.tolist(), exact.tolist(), strict=True):
                yield wire_key(nk), ((i << POS_BITS) + o, d, t, ek)
        rf.save_npy(
            io.join(self.dir, f"{i}.aliases.npy"), np.stack([np.concatenate(alias_id), np.concatenate(alias_norm)])
        )
        facts = {"raw": raw, "empty": empty, "rejects": rejects}
        rf.save_json(io.join(self.dir, f"{i}.json"), facts)


class FirstDoc(beam.CombineFn):
    """Docs sharing a normalised-text key -> the one read first (smallest position)."""

    def create_accumulator(self) -> Doc | None:
        return None

    def add_input(self, acc: Doc | None, doc: Doc) -> Doc:
        return doc if acc is None or doc[0] < acc[0] else acc

    def merge_accumulators(self, accs) -> Doc | None:
        out = None
        for a in accs:
            if a is not None:
                out = self.add_input(out, a)
        return out

    def extract_output(self, acc: Doc | None) -> Doc | None:
        return acc


class WritePartFn(beam.DoFn):
    """(part number, [(normalised key, Doc)]) -> the part's kept documents in reading order, as an Arrow file; yields
    the part number. A document without a source id gets `h` + its normalised-text hash, as in-process."""

    def __init__(self, run_dir: str):
        self.dir = io.join(run_dir, "corpus")

    def process(self, element):
        part, items = element
        docs = sorted(((doc[0], np.int64(norm).view(np.uint64).item(), *doc[1:]) for norm, doc in items))
        ids = [d if d is not None else f"h{nk:016x}" for _, nk, d, _, _ in docs]
        table = pa.table(
            [
                pa.array([d[0] for d in docs], pa.int64()),
                pa.array(ids, pa.string()),
                pa.array([d[3] for d in docs], pa.string()),
                pa.array([d[1] for d in docs], pa.uint64()),
                pa.array([d[4] for d in docs], pa.uint64()),
            ],
            schema=PART_SCHEMA,
        )
        rf.save_table(io.join(self.dir, f"{part:016d}.arrow"), table)
        yield part


class ReadAndDedup(beam.PTransform):
    """PCollection[(source number, path, is a --corpus file)] -> PCollection[part number], once every part of the
    deduplicated corpus is written under `<run_dir>/corpus/` (and each source's facts under `sources/`)."""

    def __init__(self, run_dir: str):
        super().__init__()
        self.run_dir = run_dir

    def expand(self, sources):
        return (
            sources
            | "Spread" >> beam.Reshuffle()
            | "ReadDocs" >> beam.ParDo(ReadDocsFn(self.run_dir))
            | "FirstByText" >> beam.CombinePerKey(FirstDoc())
            | "ByPart" >> beam.Map(lambda kv: (kv[1][0] >> PART_BITS, kv))
            | "GroupParts" >> beam.GroupByKey()
            | "WriteParts" >> beam.ParDo(WritePartFn(self.run_dir))
        )


def corpus_table(run_dir: str) -> pa.Table:
    """The kept documents (DOC_ID, TEXT) in document-number order: the parts, memory-mapped, end to end (no copy)."""
    where = io.join(run_dir, "corpus")
    tables = [rf.load_table(io.join(where, f)) for f in rf.list_names(where, ".arrow")]
    return pa.concat_tables(tables) if tables else PART_SCHEMA.empty_table()


def load_corpus(run_dir: str, n_sources: int, rejects: list[dict]) -> Corpus:
    """The `Corpus` of the written parts (texts memory-mapped, keys in numpy); appends the sources' rejects to
    `rejects`, in source order."""
    table = corpus_table(run_dir)
    if not table.num_rows:
        raise ValueError("the corpus is empty: no positives, negatives or --corpus documents were read")
    norm_key = table.column("norm").to_numpy()
    text_key = table.column("exact").to_numpy()
    raw = empty = 0
    alias_id, alias_norm = [], []
    for i in range(n_sources):
        facts = rf.load_json(io.join(run_dir, "sources", f"{i}.json"))
        raw, empty = raw + facts["raw"], empty + facts["empty"]
        rejects.extend(facts["rejects"])
        pairs = rf.load_npy(io.join(run_dir, "sources", f"{i}.aliases.npy"))
        alias_id.append(pairs[0])
        alias_norm.append(pairs[1])
    sorter = np.argsort(norm_key, kind="stable")
    alias_doc = sorter[np.searchsorted(norm_key, np.concatenate(alias_norm), sorter=sorter)].astype(np.int64)
    alias_key = np.concatenate(alias_id)
    order = np.lexsort((alias_doc, alias_key))
    alias_key, alias_doc = alias_key[order], alias_doc[order]
    uniq = np.ones(len(alias_key), bool)
    uniq[1:] = (alias_key[1:] != alias_key[:-1]) | (alias_doc[1:] != alias_doc[:-1])
    table = table.select([DOC_ID, TEXT])
    corpus = Corpus(table, norm_key, text_key, alias_key[uniq], alias_doc[uniq], raw_count=raw, empty_skipped=empty)
    corpus._index = (norm_key[sorter], sorter)  # keys sorted, their documents: the index `find_texts` searches
    return corpus
