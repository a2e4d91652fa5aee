"""The trainer: partitioning, input, step, checkpoints, metrics, evaluation."""
