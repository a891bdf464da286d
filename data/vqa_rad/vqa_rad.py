"""VQA-RAD (Lau et al. 2018): 3,515 clinician-written questions on 315 radiology images (MedPix).

The public release (OSF) has "VQA_RAD Dataset Public.json", a list of records {qid, image_name
("synpic54610.jpg"), image_organ (HEAD | CHEST | ABD), question, answer, answer_type (CLOSED | OPEN),
question_type (PRES, ABN, ...), phrase_type, question_rephrase, ...}, and "VQA_RAD Image Folder".
The test split is the usual one: phrase_type test_freeform / test_para; every other record is train.
Images are stored as in medjax.data.media_io (whole image, centred square, no flips).
"""

import json

import tensorflow_datasets as tfds
from etils import epath

from medjax.data import media_io

JSON_NAME = "VQA_RAD Dataset Public.json"
IMAGE_DIRS = ("VQA_RAD Image Folder", "images")
FIELDS = (
  "qid",
  "image_name",
  "image_organ",
  "question",
  "answer",
  "answer_type",
  "question_type",
  "phrase_type",
)


def parse_record(r: dict, where: str) -> dict:
  """One JSON record -> text fields of the schema (image added by the builder)."""
  media_io.require(r, FIELDS, where)
  return {
    "id": str(r["qid"]),
    "image_name": r["image_name"].strip(),
    "question": r["question"].strip(),
    "answer": str(r["answer"]).strip(),
    "answer_type": media_io.answer_type(r["answer_type"], where),
    "image_organ": r["image_organ"].strip(),
    "question_type": r["question_type"].strip(),
    "phrase_type": r["phrase_type"].strip(),
  }


class VqaRad(tfds.core.GeneratorBasedBuilder):
  """VQA-RAD questions with their images (uint8 [size, size, channels])."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = media_io.IMAGE_CONFIGS
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f"Download the VQA-RAD release from osf.io/89kps and put '{JSON_NAME}' and "
    f"'{IMAGE_DIRS[0]}' in manual_dir."
  )
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      homepage="https://osf.io/89kps/",
      features=media_io.vqa_features(
        self.builder_config, "image_organ", "question_type", "phrase_type"
      ),
    )

  def _split_generators(self, dl_manager):
    root = epath.Path(dl_manager.manual_dir)
    path = media_io.first_existing([root / JSON_NAME], "manual_dir")
    images = media_io.first_existing([root / d for d in IMAGE_DIRS], "manual_dir (image folder)")
    records = [
      parse_record(r, f"{JSON_NAME}[{i}]") for i, r in enumerate(json.loads(path.read_text()))
    ]
    test = [r for r in records if r["phrase_type"].startswith("test")]
    train = [r for r in records if not r["phrase_type"].startswith("test")]
    return {
      "train": self._generate_examples(train, images),
      "test": self._generate_examples(test, images),
    }

  def _generate_examples(self, records, images):
    load = media_io.image_loader(images, self.builder_config, "image_name")
    for r in records:
      yield r["id"], {**r, "image": load(r["image_name"])}
