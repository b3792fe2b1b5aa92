"""Training prefix modules: data, losses, the two DDR phases and the full fine-tuning baseline."""
