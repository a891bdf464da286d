"""Llama-3.2-1B / Gemma-3-1B speed on one GPU as one table (issue 19): training, decoding against
the bandwidth roofline, ensemble refinement against greedy. Rows: medjax.benchmarks.gpu_lm.

PYTHONPATH=. python benchmarks/gpu_lm.py [--profile_dir=DIR] [--rows=...] [--flag_rows=NAME@SET,...]
PYTHONPATH=. python benchmarks/gpu_lm.py --tiny --flag_rows=   # CPU: tiny presets and shapes
"""

import dataclasses
import os
import sys

from absl import app, flags

from medjax.benchmarks import gpu_lm

S = gpu_lm.Settings()
flags.DEFINE_list("rows", list(gpu_lm.ROW_NAMES), "Rows to run, in order (gpu_lm.ROW_NAMES).")
flags.DEFINE_list(
  "flag_rows",
  list(gpu_lm.DEFAULT_FLAG_ROWS),
  f"NAME@SET rows run in child processes with XLA flag set SET of {sorted(gpu_lm.XLA_FLAG_SETS)}.",
)
flags.DEFINE_string(
  "xla_flags", "", "A set name of XLA_FLAG_SETS or raw flags, added to XLA_FLAGS for the run."
)
flags.DEFINE_string("mem_fraction", "0.92", "XLA_PYTHON_CLIENT_MEM_FRACTION where unset.")
flags.DEFINE_bool("tiny", False, "Tiny presets and shapes (CPU smoke run).")
flags.DEFINE_integer("seq_len", S.seq_len, "Training tokens per example.")
flags.DEFINE_integer("steps", S.steps, "Timed training steps per row (after one warm-up).")
flags.DEFINE_integer("logits_chunk", S.logits_chunk, "model.logits_chunk of the chunked-CE rows.")
flags.DEFINE_integer("prompt_len", S.prompt_len, "Decode / ER prompt tokens.")
flags.DEFINE_integer("new_tokens", S.new_tokens, "Tokens generated per row.")
flags.DEFINE_integer("num_samples", S.num_samples, "ER stage-1 generations (N).")
flags.DEFINE_integer("num_refinements", S.num_refinements, "ER stage-2 generations (M).")
flags.DEFINE_integer("repeats", S.repeats, "Timed decode / ER calls (median) after a warm-up.")
flags.DEFINE_float("budget_s", 330.0, "Rows not started within this many seconds are skipped.")
flags.DEFINE_float("grace_s", 60.0, "A child still running this long after the budget is killed.")
flags.DEFINE_string("profile_dir", "", "Write a jax.profiler trace of --profile_rows here.")
flags.DEFINE_list("profile_rows", ["train.llama.base"], "Training rows traced into --profile_dir.")
flags.DEFINE_bool(
  "in_process", False, "Run the rows in this process (default: in child processes)."
)
flags.DEFINE_bool("json_rows", False, "Print each row as a 'ROW_JSON {...}' line, no table.")
flags.DEFINE_string("json_out", "", "Also append each row as a JSON line to this file.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  gpu_lm.set_xla_env(FLAGS.mem_fraction, FLAGS.xla_flags)
  names = [f.name for f in dataclasses.fields(gpu_lm.Settings) if f.name != "tiny"]
  given = {n: FLAGS[n].value for n in names if FLAGS[n].present}
  settings = gpu_lm.Settings.tiny_run(**given) if FLAGS.tiny else gpu_lm.Settings(**given)
  gpu_lm.run(
    settings,
    rows=FLAGS.rows,
    flag_rows=FLAGS.flag_rows,
    budget_s=FLAGS.budget_s,
    grace_s=FLAGS.grace_s,
    argv0=(sys.executable, os.path.abspath(__file__)),
    in_process=FLAGS.in_process,
    profile_dir=FLAGS.profile_dir,
    profile_rows=FLAGS.profile_rows,
    json_rows=FLAGS.json_rows,
    json_out=FLAGS.json_out,
  )


if __name__ == "__main__":
  app.run(main)
