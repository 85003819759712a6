"""Synthetic training pairs: an LLM writes a query for each passage; filtered, round-trip checked, written as tuples.

Usage: negminer generate --input corpus.jsonl --output out/gen --llm Qwen/Qwen2.5-0.5B-Instruct \
    --round-trip-model sentence-transformers/all-MiniLM-L6-v2 [--template question] [--limit 1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from negminer.llm import LLM, Answer, LLMConfig, Sampling
from negminer.pipelines import io, runner
from negminer.pipelines import schema as S
from negminer.pipelines.sink import WriteShardDir
from negminer.pipelines.source import REJECTS, SKIPPED, Record, parse_json_line, skip
from negminer.pipelines.transforms.querygen import TEMPLATES, Template, load_template, parse_answer, query_problem
from negminer.pipelines.transforms.roundtrip import (
    COUNTER_NS,
    EncodePassagesFn,
    RoundTrip,
    RoundTripFn,
    passage_reject,
)
from negminer.pipelines.transforms.tabular import ReadKeyed, Text, parse_id_text, tidy, title_and_text

log = logging.getLogger("negminer")
TSV_SUFFIXES = (".tsv", ".tsv.gz", ".tsv.bz2")
VLLM_PREFIX = "vllm:"


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    inputs: tuple[str, ...]
    output: str
    llm: str
    llm_model: str | None = None
    template: str = "query"
    few_shot: str | None = None
    max_new_tokens: int = 64
    temperature: float = 0.0
    seed: int | None = None
    concurrency: int = 8
    batch_size: int = 16
    round_trip_model: str | None = None
    round_trip_k: int = 10
    round_trip_api_model: str | None = None
    round_trip_query_prompt: str | None = None
    round_trip_doc_prompt: str | None = None
    limit: int | None = None
    language: str = "auto"
    max_query_words: int = 64
    max_passage_chars: int = 2000
    cache_dir: str | None = None
    source: str = "generated"
    device: str = "auto"
    num_shards: int = 1
    split: str = "train"

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("at least one --input is required")
        is_url = self.llm.startswith(("http://", "https://"))
        if self.vllm_model is not None and not self.vllm_model:
            raise ValueError("--llm vllm:NAME needs a model name after 'vllm:'")
        if is_url and not self.llm_model:
            raise ValueError("--llm is an endpoint URL: give the model it serves with --llm-model NAME")
        if not is_url and self.llm_model:
            raise ValueError("--llm-model is only for an endpoint URL in --llm")
        for name, low in (("max_new_tokens", 1), ("round_trip_k", 1), ("batch_size", 1), ("concurrency", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        rt_url = (self.round_trip_model or "").startswith(("http://", "https://"))
        if rt_url != bool(self.round_trip_api_model):
            raise ValueError(
                "--round-trip-api-model NAME is required with an endpoint URL in --round-trip-model, and only then"
            )
        if self.temperature < 0:
            raise ValueError(f"--temperature must be >= 0, got {self.temperature}")
        self.load_template()  # a bad template or few-shot file fails here, before any worker starts

    @property
    def vllm_model(self) -> str | None:
        """The model of `--llm vllm:NAME` (Beam's vLLM handler on the workers), else None."""
        return self.llm.removeprefix(VLLM_PREFIX) if self.llm.startswith(VLLM_PREFIX) else None

    def load_template(self) -> Template:
        return load_template(self.template, self.few_shot)

    def llm_config(self) -> LLMConfig:
        url = self.llm if self.llm.startswith(("http://", "https://")) else None
        cache = self.cache_dir or io.join(self.output, "llm_cache")
        model = self.llm_model if url else self.llm
        return LLMConfig(model=model, base_url=url, concurrency=self.concurrency, cache_dir=cache, device=self.device)

    def round_trip(self) -> RoundTrip:
        return RoundTrip(
            self.round_trip_model or "",
            self.round_trip_api_model,
            self.round_trip_query_prompt,
            self.round_trip_doc_prompt,
            self.device,
            self.round_trip_k,
        )

    def sampling(self) -> Sampling:
        return Sampling(max_new_tokens=self.max_new_tokens, temperature=self.temperature, seed=self.seed)


def parse_passage(record: Record, clean: bool = True) -> tuple[str, Text] | str:
    """One passage: `id<TAB>text` (MS MARCO collection), a BEIR doc (`_id`, `title`, `text`), {`id`, `text`}, or a
    tuple-shard row (its `positive`, keyed by `positive_id`) -> (id, Text), or a reject reason."""
    if isinstance(record.value, str) and record.path.lower().endswith(TSV_SUFFIXES):
        return parse_id_text(record, clean)
    obj = parse_json_line(record)
    if isinstance(obj, str):
        return obj
    if S.POSITIVE in obj:  # a tuple-shard row: its positive is the passage
        text, pid = obj.get(S.POSITIVE), obj.get(S.POSITIVE_ID)
        title = ""
    else:
        text, pid, title = obj.get("text"), obj.get("_id", obj.get("id")), obj.get("title") or ""
    if not isinstance(text, str) or not isinstance(title, str):
        return "missing_field:text" if text is None else "not_a_string:text"
    full = tidy(title_and_text(title, text), clean)
    if not full.strip():
        return "empty_text"
    pid = str(pid) if pid is not None and str(pid).strip() else "sha1:" + S.make_id("passage", "", full)[:16]
    return pid, Text(pid, full, record.path, record.line)


def passage_files(patterns: Iterable[str]) -> list[str]:
    """Input files: a shard directory (it has a manifest) gives its shard files (not the manifest or rejects/);
    anything else is a file, glob or directory as for every build."""
    files: list[str] = []
    for pat in patterns:
        is_shard_dir = FileSystems.exists(io.join(pat, S.MANIFEST_NAME)) if "*" not in pat else False
        files.extend(io.shard_files(pat) if is_shard_dir else io.expand_patterns([pat]))
    return sorted(set(files))


def first_of(element: tuple[str, Iterable[tuple]]) -> Iterator[Any]:
    """(id, passages with that id) -> the first by (path, line); the others are counted duplicates."""
    ordered = sorted(element[1], key=lambda t: (t[2], t[3]))
    yield ordered[0]
    for _ in ordered[1:]:
        yield skip("duplicate_passage", COUNTER_NS)


class GenerateQueryFn(beam.DoFn):
    """Batches of passages -> (passage, query, instruction) for every usable answer; the rest to rejects by reason."""

    def __init__(self, config: GenerateConfig):
        self.config = config

    def setup(self):
        self.template, self.sampling = self.config.load_template(), self.config.sampling()
        self.llm = LLM(self.config.llm_config())
        self.counters = {
            k: Metrics.counter(COUNTER_NS, f"llm_{k}") for k in ("cache_hits", "cache_misses", "requests")
        }
        self.passages = Metrics.counter(COUNTER_NS, "llm_passages")

    def process(self, batch: list[tuple]) -> Iterator[Any]:
        c, before = self.config, self.llm.stats.as_dict()
        self.passages.inc(len(batch))
        prompts = [self.template.render(p[1], c.max_passage_chars) for p in batch]
        answers = self.llm.generate(prompts, self.sampling)
        after = self.llm.stats.as_dict()
        for k, counter in self.counters.items():
            counter.inc(after[k] - before[k])
        for reason, n in after["retries"].items():
            Metrics.counter(COUNTER_NS, f"llm_retries_{reason}").inc(n - before["retries"].get(reason, 0))
        for p, a in zip(batch, answers, strict=True):
            yield from check_answer(p, a, self.template, c)


def check_answer(p: tuple, a: Answer, template: Template, c: GenerateConfig) -> Iterator[Any]:
    """One passage's answer -> (passage, query, instruction), or a reject with the reason it is unusable."""
    if a.error is not None:
        yield passage_reject(p, f"llm_{a.error}")
        return
    parsed = parse_answer(template, a.text or "", a.finish_reason)
    if isinstance(parsed, str):
        yield passage_reject(p, parsed, a.text)
        return
    query, instruction = parsed
    problem = query_problem(query, p[1], c.max_query_words, c.language)
    if problem:
        yield passage_reject(p, problem, a.text)
        return
    yield p, query, instruction


def make_row(element: tuple, source: str, pair_type: str, provenance: dict[str, Any]) -> dict[str, Any]:
    p, query, instruction, rank = (*element, None) if len(element) == 3 else element
    prov = S.provenance_json(file=p[2], line=p[3], passage_id=p[0], round_trip_rank=rank, **provenance)
    row = S.TupleRow(
        source=source,
        pair_type=pair_type,
        query=query,
        positive=p[1],
        positive_id=p[0],
        instruction=instruction,
        provenance=prov,
    )
    return row.to_dict()


class GenerateTuples(beam.PTransform):
    """PBegin -> {'rows': row dicts, 'rejects': reject dicts, 'skipped': reasons}: passages -> LLM queries."""

    def __init__(self, config: GenerateConfig, provenance: dict[str, Any]):
        super().__init__()
        self.config, self.provenance = config, provenance

    def expand(self, pbegin):
        c = self.config
        read = pbegin | "ReadPassages" >> ReadKeyed(list(c.inputs), functools.partial(parse_passage))
        dedup = (
            read["keyed"]
            | "GroupById" >> beam.GroupByKey()
            | "FirstOfId" >> beam.FlatMap(first_of).with_outputs(SKIPPED, main="passages")
        )
        passages = dedup.passages
        if c.limit:  # the first N by (file, line): the same N on every runner
            passages = (
                passages
                | "FirstN" >> beam.combiners.Top.Smallest(c.limit, key=lambda t: (t[2], t[3]))
                | "Unlist" >> beam.FlatMap(lambda xs: xs)
            )
        batches = passages | "BatchPassages" >> beam.BatchElements(min_batch_size=1, max_batch_size=c.batch_size)
        if c.vllm_model:  # RunInference with Beam's vLLM handler on GPU workers (no answer cache on this path)
            from negminer.pipelines.vllm import VllmAnswers

            gen = passages | "Generate" >> VllmAnswers(c, check_answer)
        else:
            gen = batches | "Generate" >> beam.ParDo(GenerateQueryFn(c)).with_outputs(REJECTS, main="queries")
        parts = [read[REJECTS], gen[REJECTS]]
        queries = gen.queries
        if c.round_trip_model:
            rt = c.round_trip()
            pool = batches | "EncodePool" >> beam.ParDo(EncodePassagesFn(rt))
            checked = (
                queries
                | "BatchQueries" >> beam.BatchElements(min_batch_size=1, max_batch_size=c.batch_size)
                | "RoundTrip"
                >> beam.ParDo(RoundTripFn(rt), beam.pvalue.AsList(pool)).with_outputs(REJECTS, main="kept")
            )
            queries = checked.kept
            parts.append(checked[REJECTS])
        rows = queries | "Rows" >> beam.Map(
            make_row, source=c.source, pair_type=c.load_template().pair_type, provenance=self.provenance
        )
        return {
            "rows": rows,
            REJECTS: tuple(parts) | "AllRejects" >> beam.Flatten(),
            SKIPPED: (read[SKIPPED], dedup[SKIPPED]) | "AllSkipped" >> beam.Flatten(),
        }


def llm_metrics(result: Any) -> dict[str, Any]:
    """The LLM counters of a finished pipeline (committed values), as a dict for the manifest."""
    out: dict[str, Any] = {}
    for m in result.metrics().query(MetricsFilter().with_namespace(COUNTER_NS))["counters"]:
        if m.key.metric.name.startswith("llm_"):
            name = m.key.metric.name.removeprefix("llm_")
            out[name] = out.get(name, 0) + (m.committed if m.committed is not None else m.attempted)
    total = out.get("cache_hits", 0) + out.get("cache_misses", 0)
    out["cache_hit_rate"] = round(out.get("cache_hits", 0) / total, 4) if total else None
    return out


def _run(config: GenerateConfig, inputs: list[str], provenance: dict, base: dict, beam_args: list[str]):
    """Run the pipeline into the (locked) output; return its manifest with the LLM counters, and the seconds."""
    t0 = time.perf_counter()
    options = runner.pipeline_options(beam_args)
    p = beam.Pipeline(runner=runner.local_runner(options), options=options)
    outputs = p | "GenerateTuples" >> GenerateTuples(dataclasses.replace(config, inputs=tuple(inputs)), provenance)
    _ = outputs | "WriteShardDir" >> WriteShardDir(
        config.output, base, split=config.split, num_shards=config.num_shards
    )
    result = p.run()
    result.wait_until_finish()
    secs = time.perf_counter() - t0
    try:
        manifest = io.read_manifest(config.output)
    except FileNotFoundError:  # a Dataflow dry run builds the job but writes nothing
        return {}, secs
    own = manifest["splits"][config.split]
    passages = own["rows"] + own["rejects_total"] - own["rejects"].get("malformed_json", 0)
    own["generate"] = manifest["generate"] = {
        **llm_metrics(result),
        "seconds": round(secs, 2),
        "passages_per_s": round(passages / secs, 2),
    }
    io.write_manifest(config.output, manifest)
    return manifest, secs


def build(config: GenerateConfig, beam_args: list[str]) -> dict[str, Any]:
    """Check the endpoint, run the pipeline, add the LLM counters to the manifest; return it."""
    inputs = passage_files(config.inputs)
    llm = LLM(config.llm_config())
    if llm.cfg.base_url:
        llm.check()  # unreachable endpoint: one line, before any work
    elif os.sep in config.llm and not os.path.exists(config.llm) and not config.vllm_model:
        raise FileNotFoundError(f"--llm {config.llm!r}: no such model directory")
    if config.round_trip_api_model:  # the round-trip endpoint too: one line now rather than in a worker
        from negminer.mining.remote import EndpointEncoder

        EndpointEncoder(config.round_trip_model or "", config.round_trip_api_model).check()
    template = config.load_template()
    llm_prov = llm.provenance(config.sampling())
    if config.vllm_model:
        llm_prov.update(model=config.vllm_model, backend="vllm")
    provenance = {
        "llm": llm_prov,
        "template": template.name,
        "template_sha": template.fingerprint(),
        "round_trip": {
            "model": config.round_trip_api_model or config.round_trip_model,
            "k": config.round_trip_k,
            "query_prompt": config.round_trip_query_prompt,
            "doc_prompt": config.round_trip_doc_prompt,
        }
        if config.round_trip_model
        else None,
    }
    base = runner.manifest_base("generate", config, inputs)
    with io.output_lock(config.output, "generate"):  # one writer at a time; the split's old files go first
        io.begin_split(config.output, config.split)
        manifest, secs = _run(config, inputs, provenance, base, beam_args)
    if not manifest:
        return {}
    log.info(
        "generate: %s rows, %s rejects in %.1fs -> %s",
        manifest["rows"],
        manifest["rejects_total"],
        secs,
        config.output,
    )
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a(
        "--input",
        nargs="+",
        required=True,
        action="extend",
        help="passages: a shard dir (its positives), BEIR corpus.jsonl, "
        "MS MARCO collection .tsv, or Parquet/JSONL with id + text (files or globs)",
    )
    a("--output", required=True, help="output shard directory (local or gs://)")
    a(
        "--llm",
        required=True,
        help="local model dir / hub name (transformers), an OpenAI-compatible base URL, or vllm:NAME (Beam's vLLM "
        "handler in RunInference, for GPU workers)",
    )
    a("--llm-model", default=None, help="with an endpoint URL in --llm: the model name it serves")
    a("--template", default="query", help=f"shipped {sorted(TEMPLATES)} or a .txt/.json template file (default query)")
    a("--few-shot", default=None, help='JSON lines of {"passage", "query"} examples shown before each passage')
    a("--max-new-tokens", type=runner.int_at_least(1), default=64, help="answer length cap (default 64)")
    a("--temperature", type=float, default=0.0, help="0 = greedy, the same answers on every rerun (default 0)")
    a("--seed", type=int, default=None, help="sampling seed when --temperature > 0")
    a("--concurrency", type=runner.int_at_least(1), default=8, help="requests in flight per worker (default 8)")
    a("--batch-size", type=runner.int_at_least(1), default=16, help="passages per LLM / encoder batch (default 16)")
    a(
        "--round-trip-model",
        default=None,
        help="encoder for the round-trip check: local dir / hub name, or an embeddings endpoint URL (default: none)",
    )
    a("--round-trip-k", type=runner.int_at_least(1), default=10, help="source passage must rank in this top k")
    a("--round-trip-api-model", default=None, help="with an endpoint URL in --round-trip-model: the model it serves")
    a("--round-trip-query-prompt", default=None, help="prepended to queries before encoding (e.g. 'query: ')")
    a("--round-trip-doc-prompt", default=None, help="prepended to passages before encoding (e.g. 'passage: ')")
    a("--limit", type=runner.int_at_least(1), default=None, help="only the first N passages (by file, line)")
    a("--language", default="auto", help="query language: ISO code, auto (= passage's), or any (default auto)")
    a("--max-query-words", type=runner.int_at_least(1), default=64, help="longer queries are rejected (default 64)")
    a("--max-passage-chars", type=runner.int_at_least(1), default=2000, help="passage cut in the prompt")
    a("--cache-dir", default=None, help="LLM answer cache (default OUTPUT/llm_cache)")
    a("--source", default="generated", help="value of the `source` column (default generated)")
    a("--device", default="auto", choices=("auto", "cpu", "cuda"), help="for the local LLM and round-trip encoder")
    a("--num-shards", type=runner.int_at_least(1), default=1, help="number of output shard files (default 1)")
    a("--split", default="train", help="split name in the shard file names (default train)")


def main(args: argparse.Namespace, beam_args: list[str]) -> int:
    fields = {f.name for f in dataclasses.fields(GenerateConfig)} - {"inputs"}
    config = GenerateConfig(inputs=tuple(args.input), **{k: getattr(args, k) for k in fields})
    manifest = build(config, beam_args)
    g = manifest.get("generate", {})
    print(
        f"wrote {manifest.get('rows', 0)} rows ({manifest.get('rejects_total', 0)} rejects) to {config.output}; "
        f"LLM cache hits {g.get('cache_hits', 0)}/{g.get('cache_hits', 0) + g.get('cache_misses', 0)}"
    )
    return 0
