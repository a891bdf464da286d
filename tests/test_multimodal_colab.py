"""colabs/multimodal.ipynb runs end to end (parameters shrunk) and shows what it promises."""
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_colab_runs():
  import nbclient
  import nbformat
  nb = nbformat.read(os.path.join(ROOT, "colabs", "multimodal.ipynb"), as_version=4)
  params = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("# Parameters"))
  params.source = "STEPS_VQA, STEPS_SIGLIP, EXAMPLES, GENERATIONS = 2, 2, 2, 4"
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}}).execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  text = "\n".join(o.get("text", "") for o in outputs)
  for expected in ("question:", "predicted:", "answer:", "eval/generated_accuracy", "eval/i2t_recall@1",
                   "volume (8, 32, 32, 1)"):
    assert expected in text, expected
  images = sum("image/png" in o.get("data", {}) for o in outputs)
  assert images == 2 + 2  # a radiograph, the CT slices, one image per shown question
