"""Training: the recording reader, losses, the training loop, checkpoints, evaluation."""
