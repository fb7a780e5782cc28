"""How a model runs: cores that turn a batch of images into patch logits, and device/precision choices."""
