"""Rematerialisation policies shared by the models' `remat` fields."""

import jax

# What a rematerialised layer keeps for the backward pass ("full": nothing; "none": no remat).
REMAT_POLICIES = {
  "none": None,
  "full": jax.checkpoint_policies.nothing_saveable,
  "dots": jax.checkpoint_policies.checkpoint_dots,
  "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
  "save_all": jax.checkpoint_policies.everything_saveable,
}


def remat_name(value) -> str:
  """A config's `remat` as a REMAT_POLICIES name (True / False, or their strings: "full" / "none");
  raises on anything else."""
  if isinstance(value, str) and value.lower() in ("true", "false"):  # a command line's bool
    value = value.lower() == "true"
  name = ("full" if value else "none") if isinstance(value, bool) else value
  if name not in REMAT_POLICIES:
    raise ValueError(f"remat: expected one of {sorted(REMAT_POLICIES)}, got {value!r}")
  return name
