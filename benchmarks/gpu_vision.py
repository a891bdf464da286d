"""Vision families' speed on one GPU as one table (issue 20): the STDiT-XL/2 paper step in its
previous configuration (XLA attention, remat per block, batch 8) as the baseline row, then the
candidates; the Med-Gemini, OpenTSLM Flamingo / SoftPrompt and Anatomy-VLM paper steps (step time,
MFU, compiled memory); seconds per sampled 16-frame Bora clip (100 IDDPM steps with guidance, then
the SD-VAE decode). Random weights at the paper shapes; nothing is downloaded. Rows and how each is
measured: medjax.benchmarks.vision.

python benchmarks/gpu_vision.py [--profile_dir=DIR] [--budget_s=420] [--rows=NAME,...]
python benchmarks/gpu_vision.py --tiny   # CPU: tiny configs, a tiny VAE, no cuDNN rows
Each row is printed as it completes, then the whole table; rows not started within --budget_s are
reported as skipped, and a row that fails (e.g. out of memory) is reported and the next one runs.
"""

from absl import app, flags

from medjax.benchmarks import vision

flags.DEFINE_bool("tiny", False, "Tiny configs on one device (CPU smoke run).")
flags.DEFINE_integer("steps", 3, "Timed training steps per row (after one warm-up step).")
flags.DEFINE_float("budget_s", 420.0, "Rows not started within this many seconds are skipped.")
flags.DEFINE_list("rows", [], "Only these rows (names as printed; default: all).")
flags.DEFINE_string(
  "profile_dir", "", "Trace the baseline and cuDNN STDiT steps here; prints their top ops."
)
flags.DEFINE_integer("sample_clips", 1, "Clips sampled per call (seconds are per clip).")
flags.DEFINE_string("json_out", "", "Also append each row as a JSON line to this file.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  vision.run(
    tiny=FLAGS.tiny,
    steps=FLAGS.steps,
    budget_s=FLAGS.budget_s,
    json_out=FLAGS.json_out,
    profile_dir=FLAGS.profile_dir,
    only=FLAGS.rows,
    sample_clips=FLAGS.sample_clips,
  )


if __name__ == "__main__":
  app.run(main)
