"""Hard-negative mining: corpus, cached embeddings, FAISS search, positive-aware selection, reranking (docs/mining.md)."""
