"""colabs/multimodal.ipynb runs end to end (parameters shrunk) and shows what it promises."""

import pytest


@pytest.mark.slow
def test_colab_runs(run_colab):
  text, outputs = run_colab(
    "multimodal", "STEPS_VQA, STEPS_SIGLIP, EXAMPLES, GENERATIONS = 2, 2, 2, 4"
  )
  for expected in (
    "question:",
    "predicted:",
    "answer:",
    "eval/generated_accuracy",
    "eval/i2t_recall@1",
    "volume (8, 32, 32, 1)",
  ):
    assert expected in text, expected
  images = sum("image/png" in o.get("data", {}) for o in outputs)
  assert images == 2 + 2  # a radiograph, the CT slices, one image per shown question
