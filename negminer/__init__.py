"""negminer: training data for text-embedding models, and a lean trainer on it."""

__version__ = "0.1.0"
