"""colabs/multimodal.ipynb runs end to end (parameters shrunk) and shows what it promises."""

import pytest


@pytest.mark.slow
def test_colab_runs(run_colab):
  text, outputs = run_colab(
    "multimodal",
    # As many generations as shown examples: one decoding program serves both. One layer per
    # tower and batches of 8 (one per device) compile and run faster; the outputs are the same kind.
    "STEPS_VQA, STEPS_SIGLIP, EXAMPLES, GENERATIONS, EVAL_BATCHES = 2, 2, 2, 2, 1\n"
    "small = {'train.batch_size': 8, 'train.eval_batch_size': 8}\n"
    "OVERRIDES = {'tiny': {'model.lm.num_layers': 1, 'model.image.depth': 1, **small}, "
    "'tiny_siglip': {'model.vision.depth': 1, 'model.text.depth': 1, **small}}",
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
