"""What every stage shares: settings, the model registry and contract, run paths, checkpoints, tracking."""
