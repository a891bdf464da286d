"""The analytic training FLOPs behind each family's MFU (`Task.flops_per_step`) against XLA's count.

XLA:CPU counts FLOPs from shapes alone, so params stay abstract and nothing runs; layers are
unscanned (tiny presets), so XLA sees every one. The formulas count matmuls and attention only, so
XLA's count is higher by the elementwise work (norms, activations, softmax, the loss), a few percent
at these tiny widths (the ViT-B/16 and So400m/14 towers' gradients at paper size: 0.7% and 0.2%),
and by the masked half of causal attention (the formula counts S / 2 keys per query, XLA all S):
measured 1-7% below XLA, hence rel=0.1. Shapes are chosen so that each formula's parts carry a
share the check would notice.
"""

import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]


@pytest.mark.parametrize(
  "spec,overrides",
  [
    # image (16 tokens) + 3D volume tower: 40% of the count, the decoder over 70 positions: 60%
    ("medgemini.py:tiny3d", []),
    # resampler 18%, gated cross-attention 27%, LM 55%
    (
      "opentslm_flamingo.py:tiny",
      ["data.seq_len=64", "model.resampler_layers=2", "model.num_latents=32"],
    ),
    # series encoder + projector 50%, LM 50%
    (
      "opentslm_softprompt.py:tiny",
      ["data.seq_len=64", "model.enc_dim=128", "model.encoder_layers=2", "model.encoder_mlp=256"],
    ),
    # frozen text encoder (forward only) 44%, vision tower 35%, query decoder 14%; fixed matching
    # (same FLOPs to the formula) compiles faster than the Hungarian one
    ("anatomy_vlm.py:tiny", ["loss.matching=fixed"]),
  ],
)
def test_task_flops_per_step_matches_xla_count_of_the_loss_gradient(spec, overrides):
  """flops_per_step of a tiny config agrees with XLA's count of the gradient of the task's loss."""
  from medjax.config_lib import config_from_file
  from medjax.tasks import get_task

  task = get_task(config_from_file(os.path.join(ROOT, "configs", spec), overrides))
  model, batch = task.build_model(), task.dummy_batch(2)
  params = jax.eval_shape(
    lambda: nn.meta.unbox(task.init_params(model, jax.random.PRNGKey(0), batch))
  )
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  # Late in training: every staged loss term on (Anatomy-VLM).
  loss = lambda p: task.loss(model, p, batch, jax.random.PRNGKey(0), jnp.int32(10**6))[0]
  xla = _flops(jax.grad(loss), params)
  assert task.flops_per_step(model, batch, num_params) == pytest.approx(xla, rel=0.1)


def test_vit_forward_flops_match_xla_count():
  """The tower formula the tasks share, for the layouts the task tests above do not reach: a class
  token (Anatomy-VLM paper's ViT-B/16) and frames through the 2D tower (Med-Gemini's Gemini-style
  volumes). Forward only, so the tolerance is the elementwise share alone (measured 4-6%)."""
  from medjax.models.vit import ViT, forward_flops, vit_config

  for cfg in (
    vit_config("tiny", pool="cls"),
    vit_config("tiny", pool="map", patch_embed="frames", frames=2, patch_size=8),
  ):
    x = jnp.zeros((2,) + cfg.input_shape)
    model = ViT(cfg)
    params = jax.eval_shape(lambda: nn.meta.unbox(model.init(jax.random.PRNGKey(0), x)))
    xla = _flops(lambda p: sum(v.sum() for v in model.apply(p, x).values()), params)
    assert forward_flops(cfg, 2) == pytest.approx(xla, rel=0.08), dataclasses.asdict(cfg)
