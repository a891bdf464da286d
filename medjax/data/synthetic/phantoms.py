"""Synthetic phantom radiographs (2D) and CT volumes (3D) with templated reports and VQA.

2D radiograph [32, 32, 1]: body outline, two dark lungs, a bright heart. Findings (independent):
an opacity in one of four lung zones (side x upper/lower), cardiomegaly (a wide heart), a pleural
effusion on one side (the lung base filled in). 3D CT [8, 32, 32, 1]: the same anatomy extruded
along the slices plus a spine; findings: a nodule in one of six places (side x upper/middle/lower
slices) and an effusion in the posterior dependent slices of one side. Each example asks one
question, closed (yes/no) or open (one word), and has a templated report. A 3D example comes with
a scout image (the volume's mean projection), which shows every finding but the nodule's slice
level: only the volume answers the VOLUME_QUESTIONS (an example's `volume_only` flag). Sides are
written from the image's point of view ("left" = image left), so no laterality convention needs to
be learned.

Everything is a pure function of (seed, index): a split is a lazy, random-access sequence.
"""

import numpy as np

SIDES = ("left", "right")
ZONES_2D = ("upper", "lower")
LEVELS_3D = ("upper", "middle", "lower")
CLOSED, OPEN = 0, 1
VOLUME_QUESTIONS = ("at which level is the nodule?",)  # 3D questions the scout does not answer
IMAGE_SIZE = 32
FRAMES = 8

_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)


def _ellipse(cy, cx, ry, rx):
  return ((_YY - cy) / ry) ** 2 + ((_XX - cx) / rx) ** 2 <= 1.0


def _lung_centres(rng):
  jit = lambda: float(rng.uniform(-1.0, 1.0))
  return {"left": (15.0 + jit(), 10.0 + jit()), "right": (15.0 + jit(), 22.0 + jit())}


def _draw_chest(rng, heart_rx, effusion_side=None, effusion_from=None):
  """Body + lungs + heart slice; an effusion fills the chosen lung below row `effusion_from`."""
  img = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
  img[_ellipse(16 + rng.uniform(-0.5, 0.5), 16, 14, 15)] = 0.45
  lungs = _lung_centres(rng)
  masks = {}
  for side, (cy, cx) in lungs.items():
    masks[side] = _ellipse(cy, cx, 9.5, 4.5)
    img[masks[side]] = 0.08
  img[_ellipse(21, 16.5, 4, heart_rx)] = 0.8
  if effusion_side is not None:
    fill = masks[effusion_side] & (_YY >= effusion_from)
    img[fill] = 0.55
  return img, lungs


def make_radiograph(rng: np.random.Generator) -> dict:
  """One 2D example: image [32,32,1] float32 in [0,1] and its findings."""
  opacity = None
  if rng.random() < 0.5:
    opacity = (SIDES[rng.integers(2)], ZONES_2D[rng.integers(2)])
  cardiomegaly = bool(rng.random() < 0.5)
  effusion = SIDES[rng.integers(2)] if rng.random() < 0.5 else None
  heart_rx = rng.uniform(8.0, 9.5) if cardiomegaly else rng.uniform(4.5, 5.5)
  img, lungs = _draw_chest(rng, heart_rx, effusion, 19.5 + rng.uniform(-0.5, 0.5))
  if opacity is not None:
    cy, cx = lungs[opacity[0]]
    dy = -4.5 if opacity[1] == "upper" else 3.0
    img[_ellipse(cy + dy + rng.uniform(-1, 1), cx + rng.uniform(-1, 1), 2.8, 2.8)] = 1.0
  img = np.clip(img + rng.normal(0, 0.04, img.shape), 0, 1).astype(np.float32)
  return {
    "image": img[..., None],
    "opacity": opacity,
    "cardiomegaly": cardiomegaly,
    "effusion": effusion,
  }


def make_ct(rng: np.random.Generator) -> dict:
  """One 3D example: volume [8,32,32,1] float32 and its findings; `scout` is its mean projection."""
  nodule = None
  if rng.random() < 0.6:
    nodule = (SIDES[rng.integers(2)], LEVELS_3D[rng.integers(3)])
  effusion = SIDES[rng.integers(2)] if rng.random() < 0.5 else None
  heart_rx = rng.uniform(4.5, 5.5)
  slices, lungs = [], None
  state = rng.bit_generator.state
  for z in range(FRAMES):
    rng.bit_generator.state = state  # the same anatomy on every slice ...
    img, lungs = _draw_chest(rng, heart_rx * (0.6 if z in (0, FRAMES - 1) else 1.0), effusion, 21.0)
    img[_ellipse(28.5, 16, 1.8, 2.2)] = 1.0  # spine (posterior = image bottom)
    slices.append(img)
  rng = np.random.default_rng(rng.integers(2**32))  # ... then fresh randomness
  vol = np.stack(slices)
  if nodule is not None:
    z0 = {"upper": 1, "middle": 3, "lower": 5}[nodule[1]] + int(rng.integers(2))
    cy, cx = lungs[nodule[0]]
    cy, cx = cy + rng.uniform(-3, 3), cx + rng.uniform(-1, 1)
    for z in (z0 - 1, z0, z0 + 1):
      r = 2.8 if z == z0 else 1.8
      if 0 <= z < FRAMES:
        vol[z][_ellipse(cy, cx, r, r)] = 1.0
  vol = np.clip(vol + rng.normal(0, 0.04, vol.shape), 0, 1).astype(np.float32)
  return {
    "volume": vol[..., None],
    "scout": vol.mean(0)[..., None],
    "nodule": nodule,
    "effusion": effusion,
  }


def report_2d(f: dict) -> str:
  parts = [
    f"opacity in the {f['opacity'][0]} {f['opacity'][1]} zone." if f["opacity"] else "lungs clear.",
    "heart enlarged." if f["cardiomegaly"] else "heart normal.",
    f"{f['effusion']} effusion." if f["effusion"] else "no effusion.",
  ]
  return " ".join(parts)


def report_3d(f: dict) -> str:
  parts = [
    f"nodule in the {f['nodule'][0]} {f['nodule'][1]} lung." if f["nodule"] else "no nodule.",
    f"{f['effusion']} effusion." if f["effusion"] else "no effusion.",
  ]
  return " ".join(parts)


def _yn(v) -> str:
  return "yes" if v else "no"


def questions_2d(f: dict) -> list:
  """(question, answer, CLOSED|OPEN) about a radiograph."""
  op, eff = f["opacity"], f["effusion"]
  return [
    ("is there an opacity?", _yn(op), CLOSED),
    ("is the heart enlarged?", _yn(f["cardiomegaly"]), CLOSED),
    ("is there an effusion?", _yn(eff), CLOSED),
    ("which side is the opacity on?", op[0] if op else "none", OPEN),
    ("which zone is the opacity in?", op[1] if op else "none", OPEN),
    ("which side is the effusion on?", eff or "none", OPEN),
    ("what is the heart size?", "enlarged" if f["cardiomegaly"] else "normal", OPEN),
  ]


def questions_3d(f: dict) -> list:
  """(question, answer, CLOSED|OPEN) about a CT volume."""
  nod, eff = f["nodule"], f["effusion"]
  return [
    ("is there a nodule?", _yn(nod), CLOSED),
    ("is there an effusion?", _yn(eff), CLOSED),
    ("which side is the nodule on?", nod[0] if nod else "none", OPEN),
    ("at which level is the nodule?", nod[1] if nod else "none", OPEN),
    ("which side is the effusion on?", eff or "none", OPEN),
  ]


def make_example(rng: np.random.Generator, modality: str = "2d", mode: str = "vqa") -> dict:
  """One example. modality "2d": {image}; "3d": {scout image, volume}. mode "vqa" | "report".

  Returns dict(prompt (with "<image>" / "<volume>" placeholders), target, qtype, volume_only,
  media, report, findings).
  """
  if modality == "2d":
    f = make_radiograph(rng)
    media = {"image": [f.pop("image")], "volume": []}
    qs, report, prefix = questions_2d(f), report_2d(f), "<image>"
  elif modality == "3d":
    f = make_ct(rng)
    media = {"image": [f.pop("scout")], "volume": [f.pop("volume")]}
    qs, report, prefix = questions_3d(f), report_3d(f), "<image> <volume>"
  else:
    raise ValueError(f"modality: expected '2d' or '3d', got {modality!r}")
  if mode == "report":
    return {
      "prompt": f"{prefix} report:",
      "target": report,
      "qtype": OPEN,
      "volume_only": False,
      "media": media,
      "report": report,
      "findings": f,
    }
  if mode != "vqa":
    raise ValueError(f"mode: expected 'vqa' or 'report', got {mode!r}")
  q, a, kind = qs[int(rng.integers(len(qs)))]
  return {
    "prompt": f"{prefix} {q}",
    "target": a,
    "qtype": kind,
    "volume_only": modality == "3d" and q in VOLUME_QUESTIONS,
    "media": media,
    "report": report,
    "findings": f,
  }


SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}


def drop_scout(ex: dict) -> dict:
  """A 3D example without its scout image (and the prompt without its "<image>" placeholder)."""
  return dict(ex, prompt=ex["prompt"].replace("<image> ", ""), media=dict(ex["media"], image=[]))


class PhantomSource:
  """Random-access, deterministic examples: item i of split s comes from rng(seed, s, i).

  `scout_dropout`: the share of 3D training examples (train split only) given without their scout,
  so that every finding must also be read off the volume (drawn from its own rng(seed, s, i, 1)).
  """

  def __init__(
    self,
    split: str,
    size: int,
    modality: str = "2d",
    mode: str = "vqa",
    seed: int = 0,
    scout_dropout: float = 0.0,
  ):
    if split not in SPLIT_SEEDS:
      raise ValueError(f"split: expected one of {sorted(SPLIT_SEEDS)}, got {split!r}")
    if not 0.0 <= scout_dropout < 1.0 or (scout_dropout and modality != "3d"):
      raise ValueError(
        f"scout_dropout: expected a share in [0, 1) with modality '3d', got {scout_dropout!r} "
        f"(modality {modality!r})"
      )
    self.split, self.size, self.modality, self.mode, self.seed = split, size, modality, mode, seed
    self.scout_dropout = scout_dropout if split == "train" else 0.0

  def __len__(self):
    return self.size

  def __getitem__(self, i):
    if not 0 <= i < self.size:
      raise IndexError(i)
    key = (self.seed, SPLIT_SEEDS[self.split], int(i))
    ex = make_example(np.random.default_rng(key), self.modality, self.mode)
    if self.scout_dropout and np.random.default_rng(key + (1,)).random() < self.scout_dropout:
      ex = drop_scout(ex)
    return ex
