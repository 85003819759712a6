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


BEAM_COMMANDS = (
    "build",
    "generate",
    "mine",
)  # commands that pass unknown flags on to Apache Beam (mine: with --runner)


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


class HelpFormatter(argparse.HelpFormatter):
    """Appends `(default X)` to an option's help unless the text already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if has_default(action) and "default" not in text:
            text += " (default %(default)s)"
        return text


def has_default(action: argparse.Action) -> bool:
    """An option whose default is worth printing (not unset, not a flag's False)."""
    return bool(action.option_strings) and action.default not in (None, False, argparse.SUPPRESS, "", [], ())


def _add(sub, name: str, module: str, help_: str, selected: bool, description: str = "") -> None:
    sp = sub.add_parser(name, help=help_, description=description or help_, formatter_class=HelpFormatter)
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
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging, including Apache Beam's and FAISS's (default off)"
    )
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


# Libraries whose INFO lines are chatter for a user (Beam's "Converting string literal type hint to Any", FAISS's
# "Could not load library with AVX2 support", which reads like an error): WARNING and above unless -v.
CHATTY_LOGGERS = ("apache_beam", "faiss", "urllib3", "filelock", "fsspec", "httpx", "datasets")
# Warnings that are not problems for the user: Beam's, logged on import when the `gcp` extra is not installed.
HARMLESS_WARNINGS = ("apitools not found",)


class HideHarmless(logging.Filter):
    """Drops the known harmless third-party warnings (`HARMLESS_WARNINGS`) from a handler; -v shows them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(HARMLESS_WARNINGS)


def setup_logging(verbose: bool) -> None:
    """negminer's progress at INFO; third-party chatter only with -v (then everything at DEBUG).

    Runs before any command module is imported: Beam logs its gcp warning on import, and a warning logged on a
    root logger without handlers would set up logging its own way first.
    """
    root = logging.getLogger()
    if not root.handlers:  # under pytest (or an embedding program) leave the host's handlers alone
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        if not verbose:
            handler.addFilter(HideHarmless())
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)


def _verbose(argv: list[str]) -> bool:
    """-v/--verbose among the options before the command (read before parsing, which imports the command)."""
    for a in argv:
        if not a.startswith("-"):
            return False
        if a in ("-v", "--verbose"):
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    setup_logging(_verbose(argv))
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if args.command not in BEAM_COMMANDS and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra and args.command != "mine":  # mine checks its own (Beam flags only with --runner)
        from negminer.pipelines.runner import unknown_beam_flags  # noqa: PLC0415

        unknown = unknown_beam_flags(extra)
        if unknown:  # a mistyped flag is not silently dropped by Beam
            parser.error(f"unrecognized arguments: {' '.join(unknown)} (neither negminer nor Apache Beam knows them)")
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
