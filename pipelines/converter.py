"""The one driver behind every `negminer build SOURCE`: config -> input files -> its PTransform -> shards + manifest."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import apache_beam as beam

from negminer.pipelines import io, runner


@dataclasses.dataclass(frozen=True)
class Converter:
    """What differs between builders: the name, which config fields are inputs, the composite PTransform.

    `inputs(config)` gives the input patterns; `transform(config, files)` the PTransform (PBegin -> {'rows',
    'rejects', 'skipped'}) over the expanded files; `from_args(args)` the config from the parsed flags.
    The config has `output`, `split` and `num_shards` (None: `runner.auto_num_shards` of the input files).
    """

    name: str
    inputs: Callable[[Any], Sequence[str]]
    transform: Callable[[Any, list[str]], beam.PTransform]
    from_args: Callable[[argparse.Namespace], Any]

    def build(self, config: Any, beam_args: Sequence[str] = ()) -> dict[str, Any]:
        """Run the pipeline on `config` (Beam flags in `beam_args`; the DirectRunner by default); the manifest."""
        files = io.expand_patterns(self.inputs(config))
        if config.num_shards is None:  # the default: from the input size (the manifest records the number used)
            config = dataclasses.replace(config, num_shards=runner.auto_num_shards(files))
        transform = self.transform(config, files)
        return runner.run_build(
            f"build {self.name}",
            config,
            files,
            config.output,
            lambda p: p | type(transform).__name__ >> transform,
            list(beam_args),
            split=config.split,
            num_shards=config.num_shards,
        )

    def main(self, args: argparse.Namespace, beam_args: list[str], build: Callable | None = None) -> int:
        """The command: config from the flags, `build` (default `self.build`), print the one-line result."""
        config = self.from_args(args)
        return runner.report((build or self.build)(config, beam_args), config.output)
