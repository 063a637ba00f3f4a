"""msgnn-bench: the library under the DVC stages, in layers (docs/design.md)."""
