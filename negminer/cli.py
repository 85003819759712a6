"""The `negminer` command: `negminer build snli ...`, `generate`, `mine`, `train`, `export`, `inspect`, `demo`.

Each sub-command lives in its own module exposing `add_arguments(parser)` and `main(args, extra) -> int`.
Only `build` and `generate` pass flags it does not know on to Apache Beam (runner, project, region, ...).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help). Modules are imported only when their command is used or listed.
BUILDERS = {
    "snli": ("negminer.pipelines.snli", "SNLI / MultiNLI (official JSON lines or Hugging Face layout) -> NLI tuples"),
    "msmarco": ("negminer.pipelines.msmarco", "MS MARCO passage ranking (TSVs + qrels, or HF layout) -> QA tuples"),
    "fever": ("negminer.pipelines.fever", "FEVER claims + wiki pages -> fact-checking tuples"),
    "beir": ("negminer.pipelines.beir", "any BEIR-format set (corpus, queries, qrels) -> retrieval tuples"),
    "wikipedia": ("negminer.pipelines.wikipedia", "Wikipedia dump / WikiExtractor / HF layout -> pre-training pairs"),
    "webcrawl": ("negminer.pipelines.webcrawl", "Common Crawl WARC / WET -> pre-training pairs"),
}
COMMANDS = {
    "generate": ("negminer.pipelines.generate", "an LLM writes a query for each passage -> filtered, checked tuples"),
    "mine": ("negminer.mining.run", "mine hard negatives for tuple shards (encoder + FAISS + filters + reranker)"),
    "train": ("negminer.training.train", "train an embedding model with InfoNCE on tuple shards"),
    "export": ("negminer.export", "export shards for sentence-transformers, FlagEmbedding, Tevatron, JSONL"),
    "inspect": ("negminer.inspect", "summarise a shard directory: counts, rejects, lengths, samples"),
    "demo": ("negminer.demo", "run the whole chain on bundled sample data"),
}


BEAM_COMMANDS = ("build", "generate")  # commands that pass unknown flags on to Apache Beam


def _load(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return None  # a command not built yet in this version
        raise


def _selected(argv: list[str]) -> tuple[str | None, str | None]:
    """The command (and build source) named on the command line, so only their modules get imported."""
    words = [a for a in argv if not a.startswith("-")]
    command = words[0] if words else None
    source = words[1] if command == "build" and len(words) > 1 else None
    return command, source


def _add(sub, name: str, module: str, help_: str, selected: bool, description: str = "") -> None:
    sp = sub.add_parser(name, help=help_, description=description or help_)
    if not selected:
        return
    mod = _load(module)
    if mod is None:
        sp.error(f"'{name}' is not available in this version of negminer")
    mod.add_arguments(sp)
    sp.set_defaults(_module=mod)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    command, source = _selected(argv)
    parser = argparse.ArgumentParser(prog="negminer", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    build = sub.add_parser(
        "build",
        help="convert a source into tuple shards (an Apache Beam pipeline)",
        description="Convert a source into tuple shards. Unknown flags go to Apache Beam "
        "(e.g. --runner DataflowRunner --project P --region R --temp_location gs://B/tmp).",
    )
    build_sub = build.add_subparsers(dest="source", required=True, metavar="SOURCE")
    for name, (module, help_) in BUILDERS.items():
        desc = help_ + ". Flags not listed here go to Apache Beam (--runner, --project, --region, ...)."
        _add(build_sub, name, module, help_, command == "build" and source == name, desc)
    for name, (module, help_) in COMMANDS.items():
        desc = help_ + (". Flags not listed here go to Apache Beam (--runner, ...)." if name in BEAM_COMMANDS else "")
        _add(sub, name, module, help_, command == name, desc)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.command not in BEAM_COMMANDS and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from negminer.llm import LLMError  # noqa: PLC0415
    from negminer.pipelines import runner  # noqa: PLC0415 — light, and only needed once a command runs

    runner.set_command_line(argv)
    try:
        return int(args._module.main(args, extra) or 0)
    except (FileNotFoundError, ValueError, LLMError) as e:  # bad input or settings: one clear line, not a traceback
        if args.verbose:
            raise
        print(f"negminer {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
