"""`negminer generate --llm vllm:NAME`: the LLM runs next to the data, in RunInference with Beam's vLLM handler.

Beam's `VLLMChatModelHandler` starts vLLM's OpenAI-compatible server on each GPU worker and sends it the prompts;
the answers go through the same checks as the client back ends (negminer/llm.py), but are not cached: greedy
decoding (`--temperature 0`) makes a rerun give the same answers. The workers need `vllm` installed (e.g. a
custom container, `--sdk_container_image`) and a GPU (`--dataflow_service_options=worker_accelerator=...`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam

from negminer.llm import answer_from_response
from negminer.pipelines.source import REJECTS


def chat_request(p: tuple, template: Any, max_chars: int) -> tuple[tuple, list]:
    """passage -> (passage, [one user message]) for the keyed vLLM chat handler."""
    from apache_beam.ml.inference.vllm_inference import OpenAIChatMessage

    return p, [OpenAIChatMessage(role="user", content=template.render(p[1], max_chars))]


class CheckPredictionFn(beam.DoFn):
    """(passage, PredictionResult) -> (passage, query, instruction), or a reject with its reason."""

    def __init__(self, config: Any, check: Callable[..., Iterator[Any]]):
        self.config, self.check = config, check

    def setup(self):
        self.template = self.config.load_template()

    def process(self, element: tuple[tuple, Any]) -> Iterator[Any]:
        p, prediction = element
        yield from self.check(p, answer_from_response(prediction.inference), self.template, self.config)


class VllmAnswers(beam.PTransform):
    """PCollection[passage tuple] -> outputs `queries` (passage, query, instruction) and `rejects`."""

    def __init__(self, config: Any, check: Callable[..., Iterator[Any]]):
        super().__init__()
        self.config, self.check = config, check

    def expand(self, passages):
        from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
        from apache_beam.ml.inference.vllm_inference import VLLMChatModelHandler

        c = self.config
        handler = KeyedModelHandler(VLLMChatModelHandler(model_name=c.vllm_model, max_batch_size=c.batch_size))
        args = {"max_tokens": c.max_new_tokens, "temperature": c.temperature}
        args.update({"seed": c.seed} if c.seed is not None else {})
        return (
            passages
            | "Prompts" >> beam.Map(chat_request, template=c.load_template(), max_chars=c.max_passage_chars)
            | "RunInference" >> RunInference(handler, inference_args=args)
            | "Check" >> beam.ParDo(CheckPredictionFn(c, self.check)).with_outputs(REJECTS, main="queries")
        )
