"""Running a build pipeline: Beam options (DirectRunner pinned), output preparation, manifest base, summary."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineRunner

import negminer
from negminer.pipelines import io, tables
from negminer.pipelines import schema as S
from negminer.pipelines.beam_overhead import ViewCachingOptions, memo_dofn_specs, quiet_gc
from negminer.pipelines.sink import WriteShardDir

log = logging.getLogger("negminer")

DEFAULT_RUNNER = "DirectRunner"  # pinned: Beam's default (Prism) downloads a binary and cannot start offline
SHARD_INPUT_BYTES = 256 * 2**20  # --num-shards default: one output shard per this many bytes of input files
MAX_AUTO_SHARDS = 4096


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= `minimum`, so a bad value is a usage error that names it."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def add_num_shards_argument(parser: argparse.ArgumentParser) -> None:
    """`--num-shards` of every builder: an integer >= 1, or (absent) derived from the input size."""
    parser.add_argument(
        "--num-shards",
        type=int_at_least(1),
        default=None,
        help=f"number of output shard files (default: one per {SHARD_INPUT_BYTES >> 20} MiB of input files)",
    )


def check_num_shards(num_shards: int | None) -> None:
    """A config's `num_shards`: None (derived from the input size at build time) or >= 1."""
    if num_shards is not None and num_shards < 1:
        raise ValueError(f"--num-shards must be >= 1, got {num_shards}")


def auto_num_shards(files: list[str]) -> int:
    """The default shard count: one per SHARD_INPUT_BYTES of input files as stored (compressed files count their
    compressed size), at least 1 and at most MAX_AUTO_SHARDS. Each shard is sorted in memory by one worker, so the
    count grows with the data; sizes come from the file system's listing (no file is read)."""
    from apache_beam.io.filesystems import FileSystems

    size = sum(m.size_in_bytes for r in FileSystems.match(list(files)) for m in r.metadata_list) if files else 0
    return max(1, min(MAX_AUTO_SHARDS, math.ceil(size / SHARD_INPUT_BYTES)))


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    """Beam options from the flags negminer did not parse; the DirectRunner unless `--runner` says otherwise."""
    args = list(beam_args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args = [f"--runner={DEFAULT_RUNNER}", *args]
    opts = ViewCachingOptions(args)
    runner = opts.view_as(StandardOptions).runner or DEFAULT_RUNNER
    log.info("Beam runner: %s", runner)
    return opts


def local_runner(options: PipelineOptions) -> PipelineRunner | None:
    """For the DirectRunner: Beam's FnApiRunner, which the DirectRunner runs batch pipelines on, built directly.

    Beam's DirectRunner first tries the Prism runner, which downloads a binary from GitHub: offline that fails
    (after a DNS lookup), online it silently switches runner. None for any other runner (Beam picks it by name).
    Options are handed over as the DirectRunner does, so --direct_running_mode / --direct_num_workers work.
    """
    if (options.view_as(StandardOptions).runner or DEFAULT_RUNNER) != DEFAULT_RUNNER:
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return fn_runner.FnApiRunner(provision_info=info)


_command_line: list[str] | None = None


def set_command_line(argv: list[str]) -> None:
    """Record the negminer command line (the CLI calls this) so manifests show it, not the host process's argv."""
    global _command_line
    _command_line = list(argv)


def command_line() -> list[str]:
    """The negminer command line being run (as recorded by the CLI; the process's argv otherwise)."""
    return list(_command_line if _command_line is not None else sys.argv[1:])


def manifest_base(command: str, config: Any, inputs: list[str]) -> dict[str, Any]:
    """What produced a shard directory: the command line, the config and the input fingerprints."""
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return {
        "negminer_version": negminer.__version__,
        "command": command,
        "argv": command_line(),
        "config": cfg,
        "inputs": [io.fingerprint(f) for f in inputs],
    }


def run_build(  # noqa: PLR0913 — the build driver under Converter.build, which is the config-object front
    command: str,
    config: Any,
    inputs: list[str],
    out_dir: str,
    build: Callable[[beam.Pipeline], dict[str, beam.PCollection]],
    beam_args: list[str],
    split: str = "train",
    num_shards: int = 1,
) -> dict[str, Any]:
    """Build `{'rows','rejects','skipped'}` with `build(pipeline)`, write them as split `split` of `out_dir` (other
    splits kept), return the manifest. The directory is locked for the whole build (`io.output_lock`)."""
    io.check_output_dir(out_dir)
    S.check_split_name(split)
    options = pipeline_options(beam_args)
    base = manifest_base(command, config, inputs)
    t0 = time.perf_counter()
    with io.output_lock(out_dir, command), quiet_gc(), memo_dofn_specs():
        io.begin_split(out_dir, split)
        tables.remove_spill(out_dir, split)  # left by a build that was killed
        try:
            with beam.Pipeline(runner=local_runner(options), options=options) as p:
                outputs = build(p)
                spill = tables.spill_dir(out_dir, split)
                _ = outputs | "WriteShardDir" >> WriteShardDir(out_dir, base, split, num_shards, spill)
        finally:
            tables.remove_spill(out_dir, split)
        try:
            manifest = io.read_manifest(out_dir)
        except FileNotFoundError:  # e.g. a Dataflow dry run, which builds the job but writes nothing
            manifest = {}
    own = manifest.get("splits", {}).get(split) or {}
    manifest.update({k: own[k] for k in (*io.COUNT_KEYS, "rejects", "skipped") if k in own})  # this build's counts
    secs = time.perf_counter() - t0
    log.info(
        "%s: %s rows, %s rejects in %.1fs -> %s",
        command,
        manifest.get("rows"),
        manifest.get("rejects_total"),
        secs,
        out_dir,
    )
    return manifest


def unknown_beam_flags(args: list[str]) -> list[str]:
    """The flags of `args` (with their values) that no Beam `PipelineOptions` class knows, parsed as Beam parses
    them (`PipelineOptions.get_all_options`), which only warns about them and drops them."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    classes: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(args)
    return unknown


def report(manifest: dict[str, Any], out_dir: str) -> int:
    """Print the one-line result of a build for the command line; the exit status: 0, or 2 when the input gave
    no row and every record was rejected (all of it bad: the reasons are named)."""
    rows, rejects = manifest.get("rows", 0), manifest.get("rejects_total", 0)
    if rows == 0 and rejects:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted((manifest.get("rejects") or {}).items()))
        where = f"negminer {manifest.get('command') or 'build'}"
        print(
            f"{where}: error: wrote 0 rows to {out_dir}: every input record was rejected ({reasons})", file=sys.stderr
        )
        return 2
    print(f"wrote {rows} rows ({rejects} rejects) to {out_dir}")
    return 0
