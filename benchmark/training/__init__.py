"""The training loop, its losses and the distributed helpers (train stages only)."""
