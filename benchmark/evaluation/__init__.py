"""Full-image inference, metrics and scoring protocols (evaluate stages; trainings validate with them)."""
