"""Logical axis -> mesh axis rule tables.

Parameters use names such as "embed", "mlp", "heads", "vocab"; activations use "act_*" names so the
two can be sharded differently (FSDP shards weights over `fsdp` and activations' batch over it).
"""

_BATCH = ("data", "fsdp")

_ACTIVATIONS = (
  ("act_batch", _BATCH),
  ("act_length", None),
  ("act_embed", None),
  ("act_heads", "tensor"),
  ("act_kv_heads", "tensor"),
  ("act_mlp", "tensor"),
  ("act_vocab", "tensor"),
)

RULE_PRESETS = {
  # Data parallel: weights replicated, batch split over every data-like axis.
  "dp": (("act_batch", _BATCH),),
  # Fully sharded data parallel: weights split over fsdp.
  "fsdp": (("act_batch", _BATCH), ("embed", "fsdp"), ("vocab", None)),
  # FSDP + tensor (Megatron-style heads / mlp / vocab split).
  "fsdp_tp": _ACTIVATIONS
  + (
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("vocab", "tensor"),
  ),
}
# + sequence parallelism: activations' token axis split over `sequence`.
RULE_PRESETS["fsdp_tp_sp"] = (("act_length", "sequence"),) + tuple(
  r for r in RULE_PRESETS["fsdp_tp"] if r[0] != "act_length"
)


def logical_rules(preset: str):
  if preset not in RULE_PRESETS:
    raise ValueError(f"parallel.rules: expected one of {sorted(RULE_PRESETS)}, got {preset!r}")
  return RULE_PRESETS[preset]
