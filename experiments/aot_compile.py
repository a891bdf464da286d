"""Compiles a config's real sharded train step for a TPU slice on a machine without TPUs.

python experiments/aot_compile.py --config=configs/llm.py:llama-3.2-1b --config.data.tokenizer=byte \
    --topology=v5p-64 --config.parallel.mesh.fsdp=-1 --config.parallel.mesh.data=1

Prints per-chip HBM (arguments, temporaries, total vs the chip's capacity), FLOPs per step and the step
time / tokens/s that peak FLOP/s would allow; exits 1 when the step does not fit. Needs `pip install libtpu`.
"""

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file(
  "config", None, "Config file, e.g. configs/llm.py:tiny.", lock_config=True
)
flags.DEFINE_string("topology", None, "TPU slice, e.g. v5p-128, v5e-256, v6e-256, v4-128.")
flags.DEFINE_string("json_out", None, "Also write the report as JSON here.")
flags.mark_flags_as_required(["config", "topology"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  os.environ.setdefault(
    "JAX_PLATFORMS", "cpu"
  )  # the host runs nothing; TPU devices are compile-only

  from medjax.train import aot

  report = aot.analyze(FLAGS.config, FLAGS.topology)
  print(aot.format_report(report))
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(report, f, indent=1)
  if not report["fits"]:
    need = (
      f"{report['total_gib']:.2f} GiB"
      if report["total_gib"]
      else f"{report['temp_gib']:.2f} GiB of temporaries alone"
      if report.get("temp_gib")
      else "more than that"
    )
    print(
      f"ERROR: the train step does not fit: it needs {need} per chip but a {report['topology']} chip has "
      f"{report['hbm_gib']} GiB; shard more (--config.parallel.mesh.*, --config.parallel.rules), lower "
      f"train.batch_size or raise train.grad_accum, or enable model.remat.",
      file=sys.stderr,
    )
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
