"""The native stack: per-region handlers and collectors, a model server and Prometheus, as local processes."""
