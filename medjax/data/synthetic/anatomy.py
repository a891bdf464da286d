"""Synthetic chest radiographs with anatomical region boxes, regional findings and region phrases.

Each phantom (grayscale, [size, size, 1] in [0, 1]) has jittered position, scale and per-lung shape,
so the region boxes differ per image. Findings are drawn inside specific regions. Lung findings are
compositions of visual attributes (size: small / large; shape: round spot / linear band / diffuse
area; density: dense / lucent), and each finding's knowledge description names its attributes
("a small round dense spot"). The held-out findings (`HELD_OUT`: a large round dense spot, a small
round lucent spot) never occur in training images; every pair of their attribute words occurs in
some seen finding's description (mass: bulla, opacity, nodule; bleb: nodule, bulla, emphysema), so they
are recognisable zero-shot. Region
phrases are knowledge-enriched: a finding is named ("nodule in the left mid lung zone"), described
("a small round dense spot in ..."), or described by a random part of its description ("a dense spot
in ..."); 20% are rephrased or negated. Each region also gets hard negative phrases and each image a report.
"""

import dataclasses

import numpy as np
import tokenizers

from medjax.data.tokenizers import HFTokenizer

LUNG_ZONES = tuple(
  f"{side} {level} lung zone" for side in ("right", "left") for level in ("upper", "mid", "lower")
)
REGIONS = LUNG_ZONES + (
  "cardiac silhouette",
  "mediastinum",
  "trachea",
  "right costophrenic angle",
  "left costophrenic angle",
)

# The 29 anatomical regions of Chest ImaGenome scene graphs (the paper's M).
CHEST_IMAGENOME_REGIONS = (
  "right lung",
  "right upper lung zone",
  "right mid lung zone",
  "right lower lung zone",
  "right hilar structures",
  "right apical zone",
  "right costophrenic angle",
  "right hemidiaphragm",
  "left lung",
  "left upper lung zone",
  "left mid lung zone",
  "left lower lung zone",
  "left hilar structures",
  "left apical zone",
  "left costophrenic angle",
  "left hemidiaphragm",
  "trachea",
  "spine",
  "right clavicle",
  "left clavicle",
  "aortic arch",
  "mediastinum",
  "upper mediastinum",
  "svc",
  "cardiac silhouette",
  "cavoatrial junction",
  "right atrium",
  "carina",
  "abdomen",
)
# Finding labels of the Chest ImaGenome silver scene graphs (attribute names, "category|yes/no|name")
# that the Chest ImaGenome task scores zero-shot: 20 common anatomical findings and diseases. The
# paper's 20 zero-shot classes are not listed in it; these are medjax's pick.
CHEST_IMAGENOME_FINDINGS = (
  "lung opacity",
  "pleural effusion",
  "atelectasis",
  "enlarged cardiac silhouette",
  "pulmonary edema/hazy opacity",
  "pneumothorax",
  "consolidation",
  "fluid overload/heart failure",
  "pneumonia",
  "vascular congestion",
  "linear/patchy atelectasis",
  "lobar/segmental collapse",
  "elevated hemidiaphragm",
  "costophrenic angle blunting",
  "hyperaeration",
  "mass/nodule (not otherwise specified)",
  "copd/emphysema",
  "enlarged hilum",
  "interstitial lung disease",
  "spinal degenerative changes",
)


@dataclasses.dataclass(frozen=True)
class Finding:
  description: str  # knowledge description (the zero-shot prompt): "a " + attributes + noun
  regions: tuple  # where it can occur
  synonyms: tuple  # names used in phrases and reports
  attributes: tuple = ()  # visual attribute words of the description (dropped at random in sub-phrases)


def _lesion(size, shape, density, synonyms, regions=LUNG_ZONES) -> Finding:
  noun = {"round": "spot", "linear": "band", "diffuse": "area"}[shape]
  attrs = (size, shape, density)
  return Finding(f"a {' '.join(attrs)} {noun}", regions, synonyms, attrs)


_LOWER = tuple(r for r in LUNG_ZONES if "lower" in r)
FINDINGS = {
  "nodule": _lesion("small", "round", "dense", ("nodule", "small nodule")),
  "bulla": _lesion("large", "round", "lucent", ("bulla", "bullous lesion")),
  "opacity": _lesion("large", "diffuse", "dense", ("opacity", "consolidation")),
  "pneumothorax": _lesion(
    "large",
    "diffuse",
    "lucent",
    ("pneumothorax", "collapsed lung"),
    tuple(r for r in LUNG_ZONES if "upper" in r),
  ),
  "atelectasis": _lesion("small", "linear", "dense", ("atelectasis", "linear atelectasis")),
  "emphysema": _lesion("small", "diffuse", "lucent", ("emphysema", "focal emphysema")),
  "effusion": Finding(
    "dense fluid with a flat level at the base",
    _LOWER + ("right costophrenic angle", "left costophrenic angle"),
    ("effusion", "pleural effusion"),
  ),
  "cardiomegaly": Finding(
    "an enlarged heart", ("cardiac silhouette",), ("cardiomegaly", "enlarged heart")
  ),
  "mass": _lesion("large", "round", "dense", ("mass", "lung mass")),
  "bleb": _lesion("small", "round", "lucent", ("bleb", "small bleb")),
}
HELD_OUT = ("mass", "bleb")
SEEN = tuple(f for f in FINDINGS if f not in HELD_OUT)
FINDING_NAMES = tuple(FINDINGS)

_PHRASE = ("{f} in the {r}",)
_REPHRASED = ("the {r} shows {f}", "there is {f} in the {r}", "{r} with {f}")
_NEGATED = ("no {f} in the {r}", "the {r} shows no {f}")
_CLEAR = "the {r} is clear"


def check_regions(regions) -> tuple:
  """Validates region names against the known sets; returns them as a tuple."""
  regions = tuple(regions)
  known = set(REGIONS) | set(CHEST_IMAGENOME_REGIONS)
  for r in regions:
    if r not in known:
      raise ValueError(f"regions: unknown region name {r!r}; expected one of {sorted(known)}")
  if not regions:
    raise ValueError("regions: expected at least one region name, got none")
  return regions


def check_boxes(boxes, name: str = "boxes") -> np.ndarray:
  """[..., 4] normalised cxcywh boxes that lie inside the image (with 1e-3 slack)."""
  boxes = np.asarray(boxes, np.float32)
  if boxes.shape[-1:] != (4,):
    raise ValueError(f"{name}: expected [..., 4] cxcywh boxes, got shape {boxes.shape}")
  x0, y0 = boxes[..., 0] - boxes[..., 2] / 2, boxes[..., 1] - boxes[..., 3] / 2
  x1, y1 = boxes[..., 0] + boxes[..., 2] / 2, boxes[..., 1] + boxes[..., 3] / 2
  bad = (
    (x0 < -1e-3)
    | (y0 < -1e-3)
    | (x1 > 1 + 1e-3)
    | (y1 > 1 + 1e-3)
    | (boxes[..., 2] <= 0)
    | (boxes[..., 3] <= 0)
  )
  if np.any(bad):
    i = tuple(int(j) for j in np.argwhere(bad)[0])
    raise ValueError(
      f"{name}: expected non-empty boxes inside the image [0, 1]^2, got box {boxes[i].tolist()} "
      f"(x0 y0 x1 y1 = {x0[i]:.3f} {y0[i]:.3f} {x1[i]:.3f} {y1[i]:.3f}) at index {i}"
    )
  return boxes


def check_phrases(phrases, name: str = "phrases") -> list:
  phrases = list(phrases)
  if not phrases or any(not isinstance(p, str) or not p.strip() for p in phrases):
    raise ValueError(f"{name}: expected a non-empty list of non-empty strings, got {phrases!r}")
  return phrases


def _xyxy_to_cxcywh(b):
  b = np.clip(np.asarray(b, np.float32), 0.0, 1.0)
  return np.stack(
    [
      (b[..., 0] + b[..., 2]) / 2,
      (b[..., 1] + b[..., 3]) / 2,
      b[..., 2] - b[..., 0],
      b[..., 3] - b[..., 1],
    ],
    -1,
  )


# ---------------------------------------------------------------------------------------------------
# Rendering.
# ---------------------------------------------------------------------------------------------------
def _anatomy(rng, enlarged_heart: bool) -> dict:
  """Region name -> xyxy box (normalised) of a jittered phantom."""
  cx, cy = 0.5 + rng.uniform(-0.05, 0.05), 0.5 + rng.uniform(-0.04, 0.04)
  s = rng.uniform(0.85, 1.08)
  out = {}
  for side, sign in (("right", -1), ("left", 1)):
    inner, outer = cx + sign * s * rng.uniform(0.05, 0.07), cx + sign * s * rng.uniform(0.36, 0.42)
    top, bottom = cy - s * rng.uniform(0.34, 0.39), cy + s * rng.uniform(0.28, 0.36)
    x0, x1 = min(inner, outer), max(inner, outer)
    out[f"{side} lung"] = (x0, top, x1, bottom)
    h = (bottom - top) / 3
    for k, level in enumerate(("upper", "mid", "lower")):
      out[f"{side} {level} lung zone"] = (x0, top + k * h, x1, top + (k + 1) * h)
    w = 0.35 * (x1 - x0)
    cpx0, cpx1 = (x0, x0 + w) if side == "right" else (x1 - w, x1)
    out[f"{side} costophrenic angle"] = (cpx0, bottom - 0.2 * (bottom - top), cpx1, bottom)
  out["mediastinum"] = (cx - s * 0.07, cy - s * 0.36, cx + s * 0.07, cy + s * 0.12)
  out["trachea"] = (cx - s * 0.025, cy - s * 0.46, cx + s * 0.025, cy - s * 0.14)
  hw, hh = s * rng.uniform(0.12, 0.15), s * rng.uniform(0.1, 0.12)
  if enlarged_heart:
    hw, hh = hw * 1.45, hh * 1.2
  hx, hy = cx + s * 0.04, cy + s * 0.17
  out["cardiac silhouette"] = (hx - hw, hy - hh, hx + hw, hy + hh)
  return {k: tuple(min(max(float(v), 0.0), 1.0) for v in b) for k, b in out.items()}


def _ellipse(xx, yy, box):
  x0, y0, x1, y1 = box
  return (
    ((xx - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2 + ((yy - (y0 + y1) / 2) / ((y1 - y0) / 2)) ** 2
  ) <= 1


def _smooth_noise(rng, size, scale):
  """Low-frequency texture ("lung markings")."""
  coarse = rng.normal(size=(size // 4 + 2, size // 4 + 2))
  idx = np.arange(size) / 4
  i0 = np.floor(idx).astype(int)
  f = idx - i0
  rows = coarse[i0] * (1 - f)[:, None] + coarse[i0 + 1] * f[:, None]
  return scale * (rows[:, i0] * (1 - f) + rows[:, i0 + 1] * f)


_RADIUS = {"small": (0.045, 0.055), "large": (0.085, 0.1)}
_HALF_WIDTH = {"small": (0.01, 0.014), "large": (0.022, 0.028)}


def _draw_finding(img, xx, yy, rng, name, box, lung_mask):
  """Adds finding `name` inside `box` (xyxy) to img [size, size] in place."""
  if name not in FINDINGS:
    raise ValueError(f"finding: unknown finding {name!r}; expected one of {FINDING_NAMES}")
  x0, y0, x1, y1 = box
  w, h = x1 - x0, y1 - y0
  px, py = rng.uniform(x0 + 0.3 * w, x1 - 0.3 * w), rng.uniform(y0 + 0.3 * h, y1 - 0.3 * h)
  r2 = (xx - px) ** 2 + (yy - py) ** 2
  inside = (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1) & lung_mask
  if name == "effusion":
    img += 0.45 * (inside & (yy >= y0 + rng.uniform(0.45, 0.65) * h))
    return
  if name == "cardiomegaly":
    return  # drawn as an enlarged cardiac silhouette
  size, shape, density = FINDINGS[name].attributes
  if shape == "round":
    weight = (r2 <= rng.uniform(*_RADIUS[size]) ** 2).astype(np.float64)
  elif shape == "linear":
    slope = rng.uniform(-0.3, 0.3)
    weight = (
      inside & (np.abs(yy - py - slope * (xx - px)) <= rng.uniform(*_HALF_WIDTH[size]))
    ).astype(np.float64)
  else:
    sig = (0.3 if size == "large" else 0.15) * max(w, h)
    weight = (
      inside
      * np.clip(1.2 * np.exp(-r2 / (2 * sig**2)), 0, 1)
      * (1 + 0.2 * rng.normal(size=img.shape))
    )
  if density == "dense":
    img += 0.45 * weight
  else:  # air: the lung darkens towards black, its markings vanish
    img *= 1 - np.clip(weight, 0, 1) * lung_mask


def render(rng, size: int, boxes: dict, findings) -> np.ndarray:
  """Draws the phantom with its `findings` [(finding, region)] -> [size, size, 1] float32 in [0, 1]."""
  yy, xx = np.meshgrid(
    (np.arange(size) + 0.5) / size, (np.arange(size) + 0.5) / size, indexing="ij"
  )
  img = np.full((size, size), 0.04)
  rl, ll = boxes["right lung"], boxes["left lung"]
  body = (min(rl[0], ll[0]) - 0.06, min(rl[1], ll[1]) - 0.08, max(rl[2], ll[2]) + 0.06, 1.2)
  img[_ellipse(xx, yy, body)] = 0.38
  lungs = _ellipse(xx, yy, rl) | _ellipse(xx, yy, ll)
  img = np.where(lungs, 0.22 + _smooth_noise(rng, size, 0.03), img)
  img[
    _ellipse(xx, yy, boxes["mediastinum"])
    | (
      (xx >= boxes["mediastinum"][0])
      & (xx <= boxes["mediastinum"][2])
      & (yy >= boxes["mediastinum"][1])
      & (yy <= boxes["mediastinum"][3])
    )
  ] = 0.55
  t = boxes["trachea"]
  img[(xx >= t[0]) & (xx <= t[2]) & (yy >= t[1]) & (yy <= t[3])] = 0.16
  img[_ellipse(xx, yy, boxes["cardiac silhouette"])] = 0.62
  for name, region in findings:
    _draw_finding(img, xx, yy, rng, name, boxes[region], lungs)
  img += rng.normal(0, 0.02, img.shape)
  return np.clip(img, 0, 1).astype(np.float32)[..., None]


# ---------------------------------------------------------------------------------------------------
# Examples.
# ---------------------------------------------------------------------------------------------------
def mention(rng, finding: str, partial: bool = True) -> str:
  """How a phrase refers to a finding: a name (40%), its knowledge description (30%) or, with `partial`,
  a random part of the description ("a dense spot"; 30%, true whenever the full description is)."""
  d = FINDINGS[finding]
  u = rng.random()
  if u < 0.4:
    return d.synonyms[int(rng.integers(len(d.synonyms)))]
  if u < 0.7 or not partial or not d.attributes:
    return d.description
  keep = rng.random(len(d.attributes)) < 0.5
  keep[int(rng.integers(len(keep)))] = True
  words = [w for w, k in zip(d.attributes, keep) if k]
  return " ".join(["a", *words, d.description.split()[-1]])


def region_phrase(rng, region: str, finding: str | None, negatives_pool=()) -> str:
  """A positive phrase for `region` (finding or None = normal); 20% rephrased / negated."""
  if finding is not None:
    templates = _REPHRASED if rng.random() < 0.2 else _PHRASE
    return templates[int(rng.integers(len(templates)))].format(f=mention(rng, finding), r=region)
  if negatives_pool and rng.random() < 0.2:
    f = FINDINGS[negatives_pool[int(rng.integers(len(negatives_pool)))]].synonyms[0]
    return _NEGATED[int(rng.integers(len(_NEGATED)))].format(f=f, r=region)
  return _CLEAR.format(r=region)


def hard_negative(rng, region: str, present: set, allowed) -> str | None:
  """A phrase about `region` that is false for this image (None where no finding can occur there)."""
  absent = [f for f in allowed if f not in present and region in FINDINGS[f].regions]
  if present and (not absent or rng.random() < 0.5):
    if rng.random() < 0.5:
      return _CLEAR.format(r=region)
    f = sorted(present)[int(rng.integers(len(present)))]
    return _NEGATED[int(rng.integers(len(_NEGATED)))].format(f=FINDINGS[f].synonyms[0], r=region)
  if not absent:
    return None
  f = absent[int(rng.integers(len(absent)))]
  return _PHRASE[0].format(f=mention(rng, f, partial=False), r=region)


def make_example(
  rng,
  *,
  regions=REGIONS,
  findings=SEEN,
  size: int = 64,
  num_negatives: int = 2,
  p_normal: float = 0.3,
  max_findings: int = 3,
) -> dict:
  """One phantom: image, boxes [M,4] cxcywh, labels [F] over FINDING_NAMES, region_labels [M,F],
  phrases (M positives), negatives (M lists of up to num_negatives hard negatives), report, findings."""
  regions = check_regions(regions)
  for r in regions:
    if r not in REGIONS:
      raise ValueError(f"regions: the synthetic phantom draws only {REGIONS}, got {r!r}")
  for f in findings:
    if f not in FINDINGS:
      raise ValueError(f"findings: unknown finding {f!r}; expected one of {FINDING_NAMES}")
  candidates = [(f, r) for f in findings for r in FINDINGS[f].regions if r in regions]
  chosen = []
  if candidates and rng.random() >= p_normal:
    k = int(rng.integers(1, max_findings + 1))
    for i in rng.permutation(len(candidates)):
      f, r = candidates[i]
      if all(r != r2 for _, r2 in chosen) and len(chosen) < k:
        chosen.append((f, r))
  boxes = _anatomy(rng, any(f == "cardiomegaly" for f, _ in chosen))
  image = render(rng, size, boxes, chosen)
  region_labels = np.zeros((len(regions), len(FINDING_NAMES)), np.float32)
  for f, r in chosen:
    region_labels[regions.index(r), FINDING_NAMES.index(f)] = 1
  phrases, negatives = [], []
  for i, r in enumerate(regions):
    present = {FINDING_NAMES[j] for j in np.nonzero(region_labels[i])[0]}
    pool = [f for f in findings if r in FINDINGS[f].regions]
    phrases.append(region_phrase(rng, r, sorted(present)[0] if present else None, pool))
    negs = [hard_negative(rng, r, present, findings) for _ in range(num_negatives)]
    negatives.append([n for n in negs if n is not None])
  sentences = [region_phrase(rng, r, f) for f, r in chosen] or [
    "no acute cardiopulmonary abnormality"
  ]
  return {
    "image": image,
    "boxes": check_boxes(_xyxy_to_cxcywh(np.array([boxes[r] for r in regions]))),
    "labels": region_labels.max(0),
    "region_labels": region_labels,
    "phrases": phrases,
    "negatives": negatives,
    "report": ". ".join(sentences) + ".",
    "findings": chosen,
  }


def make_examples(n: int, seed: int, **kw) -> list[dict]:
  rng = np.random.default_rng(seed)
  return [make_example(rng, **kw) for _ in range(n)]


def prompts(regions=REGIONS) -> dict:
  """Zero-shot prompts: finding -> knowledge description; (finding, region) -> regional phrase;
  region -> its normal phrase (the reference a regional finding prompt is scored against)."""
  image = {f: d.description for f, d in FINDINGS.items()}
  regional = {
    (f, r): f"{d.description} in the {r}"
    for f, d in FINDINGS.items()
    for r in d.regions
    if r in regions
  }
  return {"image": image, "region": regional, "normal": {r: _CLEAR.format(r=r) for r in regions}}


# ---------------------------------------------------------------------------------------------------
# Words.
# ---------------------------------------------------------------------------------------------------
def vocabulary() -> list[str]:
  """Every word the generator writes (plus pad/eos/unk), in a fixed order."""
  texts = list(REGIONS) + list(CHEST_IMAGENOME_REGIONS)
  for d in FINDINGS.values():
    texts += [d.description, *d.synonyms]
  texts += list(_PHRASE + _REPHRASED + _NEGATED) + [_CLEAR, "no acute cardiopulmonary abnormality"]
  words = sorted({w for t in texts for w in t.replace("{f}", " ").replace("{r}", " ").split()})
  return ["<pad>", "<eos>", "<unk>"] + words


def word_tokenizer() -> HFTokenizer:
  """A word-level tokenizer over `vocabulary()` (a `medjax.data.tokenizers.HFTokenizer`)."""
  vocab = {w: i for i, w in enumerate(vocabulary())}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  return HFTokenizer(tok, bos_id=None, eos_id=vocab["<eos>"], pad_id=vocab["<pad>"])


def encode_phrases(phrases, tokenizer, max_len: int, name: str = "phrases") -> np.ndarray:
  """Strings (any shape of nested lists) -> int32 tokens [..., max_len], right-padded, truncated."""
  arr = np.asarray(phrases, dtype=object)
  flat = check_phrases(arr.reshape(-1).tolist(), name)
  out = np.full((len(flat), max_len), tokenizer.pad_id, np.int32)
  for i, p in enumerate(flat):
    ids = tokenizer.encode(p)[:max_len]
    out[i, : len(ids)] = ids
  return out.reshape(arr.shape + (max_len,))
