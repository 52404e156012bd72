"""finecot: a data-centric Chain-of-Thought dataset builder for fine-grained visual recognition."""

__version__ = "0.1.0"
