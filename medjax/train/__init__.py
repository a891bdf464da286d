"""The one training loop, optimizer, orbax checkpoints, metrics, and what runs on top of them."""
