"""edgeharness: an observability and load-testing harness for AI inference at the edge."""

__version__ = "0.1.0"
