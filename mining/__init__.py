"""Hard-negative mining: corpus, cached embeddings, FAISS search, positive-aware selection, reranking (docs/mining.md)."""

import negminer.pipelines  # noqa: F401  (imports Apache Beam quietly before any mining module imports it)
