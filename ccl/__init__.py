"""CCL: Code-Centric Learning for LLM-based ICD-10-CM coding."""

__version__ = "0.1.0"
