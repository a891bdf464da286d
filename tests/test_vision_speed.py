"""The vision GPU table's CPU path (benchmarks/gpu_vision.py --tiny)."""

import math

from medjax.benchmarks import vision
from medjax.config_lib import config_from_file
from medjax.tasks import get_task


def test_gpu_vision_rows_build_and_the_tiny_sampling_row_runs(capsys):
  """Every training row's config builds its task and model, at paper size and tiny (a mistyped
  override fails here, not on the GPU); the tiny sampling row (the task's sampler, then a tiny
  VAE's decode of every frame) runs and makes the table."""
  for tiny in (False, True):
    for row in vision.runs(tiny):
      if not callable(row[1]):
        get_task(config_from_file(row[1], row[2])).build_model()
  (r,) = vision.run(tiny=True, steps=1, only=("bora sample xla",))
  assert r["row"] == "bora sample xla" and r["frames"] == 8 and r["video_shape"] == [8, 32, 32, 3]
  assert r["s_per_clip"] > r["vae_decode_s"] > 0 and math.isfinite(r["compile_s"])
  table = capsys.readouterr().out.rsplit("row ", 1)[1]
  assert "s_per_clip" in table and "\nbora sample xla " in table
