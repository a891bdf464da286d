"""Regenerates the README's AOT table: each paper config compiled for its TPU slice.

python experiments/aot_table.py [--rows=llama,bora] [--json_out=aot.json]

Needs `pip install -e ".[tpu-aot]"`; prints the markdown table (one compile per row, minutes each).
"""

import json
import os

from absl import app, flags, logging

flags.DEFINE_string(
  "rows", "", "Comma-separated row names (medjax.benchmarks.aot_table.ROWS); all if empty."
)
flags.DEFINE_string("json_out", None, "Also write every row's report as JSON here.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the TPU devices are compile-only

  from medjax.benchmarks import aot_table

  rows = aot_table.select(FLAGS.rows)
  reports = []
  for row in rows:
    reports.append(aot_table.analyze(row))
    logging.info("%s", aot_table.markdown_row(row, reports[-1]))  # progress; rows take minutes
  print(aot_table.table(rows, reports))
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump({row.name: r for row, r in zip(rows, reports)}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
