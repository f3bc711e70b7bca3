"""The one training engine: resident data, batched augmentation, the loop, checkpoints."""
