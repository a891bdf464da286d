"""Anatomy-VLM ablation (paper table: global only -> + detection -> + fine alignment) on the phantom task.

Each row keeps some of the config's loss terms (config.loss.weights = w_anat, w_fine, w_global; the
others are set to 0) and is trained through the one training loop, once per seed, and scored on the
test phantoms that include the held-out findings. Rows and seeds can run in separate processes with
the same workdir (each run writes RUN/eval.json); `collect` gathers every finished run under it.
Columns, mean ± std over seeds: held-out zero-shot AUC of the global head (description prompts), of
the region prompts (per region a softmax over its possible findings and "clear", max over regions),
and of both fused; anatomy-wise AUC of held-out findings over (image, region) pairs where they can
occur; seen-finding AUC of the global head; box mean IoU. Measured figures: docs/results.md.
"""

import glob
import json
import os

import numpy as np

from medjax.train.loop import train

ROWS = {
  "global": ("global only", (0, 0, 1)),
  "detection": ("+ detection", (1, 0, 1)),
  "fine": ("+ fine alignment", (1, 1, 1)),
}  # which of (w_anat, w_fine, w_global) stay on
COLUMNS = (
  ("auc_heldout", "zero-shot AUC, global"),
  ("auc_wrong_heldout", "wrong description (mass <-> bleb), global"),
  ("auc_region_heldout", "zero-shot AUC, regions"),
  ("auc_fused_heldout", "zero-shot AUC, fused"),
  ("auc_anatomy_heldout", "zero-shot AUC, anatomy-wise"),
  ("auc_anatomy_wrong_heldout", "wrong description, anatomy-wise"),
  ("auc_seen", "seen AUC, global"),
  ("box_miou", "box mIoU"),
)


def row_config(config, keep, seed: int):
  """`config` with only the loss terms `keep` marks, seeded, evaluated once at the end."""
  c = config.copy_and_resolve_references()
  c.unlock()
  c.loss.weights = tuple(float(w) * k for w, k in zip(config.loss.weights, keep))
  c.seed = seed
  c.train.eval_every = c.train.steps
  c.train.checkpoint_every = 0
  return c


def format_table(results: dict) -> str:
  """results: row name -> list of per-seed metric dicts ("eval/..." keys) -> markdown table."""
  lines = [
    "| row | " + " | ".join(name for _, name in COLUMNS) + " |",
    "|---" * (len(COLUMNS) + 1) + "|",
  ]
  for row, runs in results.items():
    cells = []
    for key, _ in COLUMNS:
      v = np.array([r.get(f"eval/{key}", np.nan) for r in runs], np.float64)
      cells.append(f"{v.mean():.3f}" + (f" ± {v.std():.3f}" if len(v) > 1 else ""))
    lines.append(f"| {row} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def collect(workdir: str) -> dict:
  """Row name -> per-seed metric dicts of every finished run under `workdir` (other processes' too)."""
  results = {}
  for key, (name, _) in ROWS.items():
    runs = sorted(glob.glob(os.path.join(workdir, f"{key}_seed*", "eval.json")))
    if runs:
      results[name] = [json.load(open(r)) for r in runs]
  return results


def run(config, workdir: str, rows, seeds) -> dict:
  """Trains each row (keys of ROWS) once per seed in WORKDIR/<row>_seed<seed>; writes
  WORKDIR/ablation.json with the results of every finished run and returns them."""
  unknown = [r for r in rows if r not in ROWS]
  if unknown:
    raise ValueError(f"--rows: expected names from {list(ROWS)}, got {unknown}")
  for key in rows:
    for seed in seeds:
      run_dir = os.path.join(workdir, f"{key}_seed{seed}")
      res = train(row_config(config, ROWS[key][1], seed), run_dir)
      with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump({k: float(v) for k, v in res.items() if k.startswith("eval/")}, f, indent=1)
  results = collect(workdir)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "ablation.json"), "w") as f:
    json.dump(results, f, indent=1)
  return results
