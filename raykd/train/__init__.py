"""Training: the one training function, its tasks (classification, SR), checkpoints and the Ray Train worker."""
