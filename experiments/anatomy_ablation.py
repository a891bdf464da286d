"""Anatomy-VLM ablation (paper Table: global only -> + detection -> + fine alignment) on the phantom task.

python experiments/anatomy_ablation.py --workdir=DIR [--steps=800] [--variant=tiny]
Trains each row through the one training loop and prints a table of seen-finding and held-out
(zero-shot) AUC / balanced accuracy / F1, region-prompt zero-shot AUC and box mean IoU.
"""
import importlib.util
import os

from absl import app, flags

flags.DEFINE_string("workdir", None, "One subdirectory per ablation row is written here.")
flags.DEFINE_string("variant", "tiny", "configs/anatomy_vlm.py variant.")
flags.DEFINE_integer("steps", 800, "Training steps per row.")
flags.DEFINE_integer("num_test", 512, "Zero-shot evaluation images.")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS

ROWS = (("global only", (0.0, 0.0, 1.0)), ("+ detection", (1.0, 0.0, 1.0)), ("+ fine alignment", (1.0, 1.0, 1.0)))
COLUMNS = ("auc_seen", "bmac_seen", "f1_seen", "auc_heldout", "auc_region_heldout", "auc_anatomy_heldout",
           "box_miou")


def row_config(variant: str, weights, steps: int, num_test: int):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs", "anatomy_vlm.py")
  spec = importlib.util.spec_from_file_location("anatomy_vlm_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(variant)
  c.loss.weights = weights
  c.loss.stage_steps = (0, 0)
  c.train.steps = steps
  c.train.eval_every = steps
  c.train.checkpoint_every = 0
  c.data.num_test = num_test
  return c


def format_table(results: dict) -> str:
  head = f"{'row':<18}" + "".join(f"{c:>21}" for c in COLUMNS)
  lines = [head, "-" * len(head)]
  for name, m in results.items():
    cells = []
    for c in COLUMNS:
      v = m.get(f"eval/{c}")
      cells.append(f"{'n/a' if v is None or (c == 'box_miou' and name == 'global only') else f'{v:.3f}':>21}")
    lines.append(f"{name:<18}" + "".join(cells))
  return "\n".join(lines)


def main(argv):
  del argv
  import jax
  from medjax.train.loop import train
  jax.config.update("jax_threefry_partitionable", True)
  results = {}
  for name, weights in ROWS:
    config = row_config(FLAGS.variant, weights, FLAGS.steps, FLAGS.num_test)
    results[name] = train(config, os.path.join(FLAGS.workdir, name.replace(" ", "_").replace("+", "plus")))
  print(format_table(results))


if __name__ == "__main__":
  app.run(main)
