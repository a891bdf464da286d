"""SLAKE (Liu et al. 2021): bilingual (English / Chinese) medical VQA on 642 CT, MRI and X-ray images.

The release (Slake1.0/) has train.json, validate.json and test.json, each a list of records {img_id,
img_name ("xmlab1/source.jpg", relative to imgs/), question, answer, q_lang (en | zh), location,
modality, answer_type (CLOSED | OPEN), base_type, content_type, triple, qid}, and imgs/xmlabN/
folders (source.jpg, mask.png, detection.json). Configs keep English questions unless they say
otherwise (`languages`). Images are stored as in medjax.data.media_io.
"""

import dataclasses
import json

import tensorflow_datasets as tfds
from etils import epath

from medjax.data import media_io

SPLIT_FILES = {"train": "train.json", "validation": "validate.json", "test": "test.json"}
FIELDS = (
  "qid",
  "img_name",
  "question",
  "answer",
  "q_lang",
  "answer_type",
  "content_type",
  "modality",
  "location",
)
LANGUAGES = ("en", "zh")


@dataclasses.dataclass
class SlakeConfig(media_io.ImageConfig):
  languages: tuple[str, ...] = ("en",)


def parse_record(r: dict, where: str) -> dict:
  """One JSON record -> text fields of the schema (image added by the builder)."""
  media_io.require(r, FIELDS, where)
  if r["q_lang"] not in LANGUAGES:
    raise ValueError(f"{where}: q_lang: expected one of {LANGUAGES}, got {r['q_lang']!r}")
  return {
    "id": str(r["qid"]),
    "image_name": r["img_name"].strip(),
    "question": r["question"].strip(),
    "answer": str(r["answer"]).strip(),
    "answer_type": media_io.answer_type(r["answer_type"], where),
    **{k: str(r[k]).strip() for k in ("q_lang", "content_type", "modality", "location")},
  }


class Slake(tfds.core.GeneratorBasedBuilder):
  """SLAKE questions with their images (uint8 [size, size, channels])."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    SlakeConfig(name="default", description="English, 224x224 RGB"),
    SlakeConfig(name="tiny", image_size=32, channels=1, description="English, 32x32 grey"),
    SlakeConfig(
      name="bilingual", languages=LANGUAGES, description="English and Chinese, 224x224 RGB"
    ),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Unzip the SLAKE release (www.med-vqa.com/slake) and put the contents of Slake1.0 "
    "(train.json, validate.json, test.json, imgs/) in manual_dir."
  )
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      homepage="https://www.med-vqa.com/slake/",
      features=media_io.vqa_features(
        self.builder_config, "q_lang", "content_type", "modality", "location"
      ),
    )

  def _split_generators(self, dl_manager):
    cfg, root = self.builder_config, epath.Path(dl_manager.manual_dir)
    unknown = set(cfg.languages) - set(LANGUAGES)
    if unknown:
      raise ValueError(f"languages: expected a subset of {LANGUAGES}, got {cfg.languages}")
    root = root / "Slake1.0" if (root / "Slake1.0").exists() else root
    images = media_io.first_existing([root / "imgs"], "manual_dir (image folder)")
    out = {
      s: self._generate_examples(root / f, images)
      for s, f in SPLIT_FILES.items()
      if (root / f).exists()
    }
    if not out:
      raise ValueError(f"manual_dir: expected {list(SPLIT_FILES.values())} in {root}")
    return out

  def _generate_examples(self, path, images):
    load = media_io.image_loader(images, self.builder_config, "img_name")
    for i, raw in enumerate(json.loads(path.read_text())):
      r = parse_record(raw, f"{path.name}[{i}]")
      if r["q_lang"] in self.builder_config.languages:
        yield r["id"], {**r, "image": load(r["image_name"])}
