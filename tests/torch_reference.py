"""Shared helper of the parity tests that run reference torch models (transformers, diffusers)."""


def randomize(model, seed: int = 1, only_1d: bool = False):
  """Adds 0.2 x N(0, 1) to every parameter (with `only_1d`, to norms and biases only): HF initialises
  norms to identity and biases to zero, so random values make a wrong mapping observable."""
  import torch

  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      if not only_1d or p.ndim == 1:
        p.add_(0.2 * torch.randn(p.shape, generator=gen))
  return model.eval()
