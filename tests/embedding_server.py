"""A real OpenAI-compatible embedding server for tests: LitServe's OpenAIEmbeddingSpec over sentence-transformers.

Usage: python tests/embedding_server.py MODEL_DIR PORT
Serves POST /v1/embeddings on 127.0.0.1:PORT with the sentence-transformers model at MODEL_DIR (normalised
embeddings, float32), and GET /health. sentence-transformers is an implementation independent of negminer's
encoder, so a test comparing the two compares two codes, not one with itself.
"""

from __future__ import annotations

import sys

import litserve as ls
from litserve.specs import OpenAIEmbeddingSpec


class SentenceTransformerAPI(ls.LitAPI):
    def __init__(self, model_dir: str):
        super().__init__()
        self.model_dir = model_dir

    def setup(self, device):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(self.model_dir, device="cpu")

    def predict(self, inputs):
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        return self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True).tolist()


if __name__ == "__main__":
    model_dir, port = sys.argv[1], int(sys.argv[2])
    server = ls.LitServer(
        SentenceTransformerAPI(model_dir), spec=OpenAIEmbeddingSpec(), accelerator="cpu", workers_per_device=1
    )
    server.run(host="127.0.0.1", port=port, generate_client_file=False)
