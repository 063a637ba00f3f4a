"""Example msgnn-bench plugin package (see examples/README.md)."""
