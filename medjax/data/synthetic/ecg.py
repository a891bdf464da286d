"""Synthetic ECG-QA-CoT: 3-lead ECG-like strips (4 s at 50 Hz) with templated questions.

Five findings: normal sinus rhythm, sinus tachycardia (120-160 bpm), sinus bradycardia (35-48 bpm),
atrial fibrillation (irregular RR, no P waves, fibrillatory baseline) and ST elevation (a raised
segment after each QRS). Each beat is a sum of Gaussians (P, Q, R, S, T) with lead-specific gains,
plus baseline wander and noise. Each lead is then recorded with a random electrode offset and a
random gain (automatic gain control) drawn independently of the finding: a lead is `offset + gain *
shape`, with `shape` its z-normalised waveform, so the leads' means and stds, written into the
prompt (as in OpenTSLM), carry no label information. As in ECG-QA, every example asks one of several question
templates; each template has its own answer set, and metrics are reported per template. Series are
z-normalised with their mean and std written into the prompt (as in OpenTSLM).
"""

import numpy as np

from medjax.data.synthetic.har import TS, normalize

FS = 50
LENGTH = 200
LEADS = ("I", "II", "V2")
FINDINGS = ("normal", "tachycardia", "bradycardia", "atrial fibrillation", "st elevation")
# finding -> (bpm range, RR jitter fraction, P waves, ST elevation)
RHYTHMS = {
  "normal": ((65, 85), 0.03, True, False),
  "tachycardia": ((120, 160), 0.03, True, False),
  "bradycardia": ((35, 48), 0.03, True, False),
  "atrial fibrillation": ((80, 110), 0.4, False, False),
  "st elevation": ((65, 85), 0.03, True, True),
}
# template -> (question, answer set, finding -> answer)
TEMPLATES = {
  "finding": ("Which rhythm or finding?", FINDINGS, lambda f: f),
  "rate": (
    "Is the heart rate slow, normal or fast?",
    ("slow", "normal", "fast"),
    lambda f: {"tachycardia": "fast", "bradycardia": "slow"}.get(f, "normal"),
  ),
  "regularity": (
    "Is the rhythm regular?",
    ("yes", "no"),
    lambda f: "no" if f == "atrial fibrillation" else "yes",
  ),
  "st": (
    "Is the ST segment elevated?",
    ("yes", "no"),
    lambda f: "yes" if f == "st elevation" else "no",
  ),
}
LABEL_SETS = {name: t[1] for name, t in TEMPLATES.items()}
RATIONALES = {
  "normal": "Regular, normal rate, P waves, flat ST.",
  "tachycardia": "Regular, fast rate, P waves, flat ST.",
  "bradycardia": "Regular, slow rate, P waves, flat ST.",
  "atrial fibrillation": "Irregular, no P waves, flat ST.",
  "st elevation": "Regular, normal rate, P waves, raised ST.",
}
# lead -> gains of (P, Q, R, S, T, ST)
LEAD_GAINS = {
  "I": (0.10, -0.05, 0.7, -0.10, 0.20, 0.20),
  "II": (0.15, -0.10, 1.0, -0.20, 0.30, 0.30),
  "V2": (0.08, -0.05, 0.5, -0.60, 0.40, 0.40),
}
# wave -> (offset from R in s, width in s)
WAVES = ((-0.16, 0.025), (-0.03, 0.012), (0.0, 0.018), (0.03, 0.012), (0.28, 0.05))
OFFSET = 0.3  # electrode offset in mV, uniform in +-OFFSET
GAIN = (0.15, 0.3)  # range of a lead's std in mV (log-uniform), whatever the finding
PRE_PROMPT = "ECG, 50 Hz, 4 s, 3 leads.\n"


def _beats(rng, finding) -> np.ndarray:
  """R-peak times in seconds covering the strip."""
  (lo, hi), jitter, _, _ = RHYTHMS[finding]
  rr = 60.0 / rng.uniform(lo, hi)
  t, out = -rng.uniform(0, rr), []
  while t < LENGTH / FS + 0.5:
    out.append(t)
    t += rr * rng.uniform(1 - jitter, 1 + jitter)
  return np.array(out)


def make_example(rng: np.random.Generator) -> dict:
  """{"series": float32 [3, 200] in mV, "finding", "template", "label"}."""
  finding = FINDINGS[int(rng.integers(len(FINDINGS)))]
  template = tuple(TEMPLATES)[int(rng.integers(len(TEMPLATES)))]
  _, _, p_waves, st = RHYTHMS[finding]
  t = np.arange(LENGTH) / FS
  since = t[:, None] - _beats(rng, finding)[None]  # [sample, beat]: time since each R peak
  st_amp = rng.uniform(0.25, 0.4) if st else 0.0
  series = []
  for lead in LEADS:
    gains = np.array(LEAD_GAINS[lead]) * rng.uniform(0.8, 1.2)
    x = np.zeros(LENGTH)
    for i, (off, width) in enumerate(WAVES):
      if i or p_waves:
        x += gains[i] * np.exp(-0.5 * ((since - off) / width) ** 2).sum(1)
    seg = (since > 0.05) & (since < 0.28)  # the ST segments, raised as smooth plateaus
    plateau = np.sin(np.pi * np.clip((since - 0.05) / 0.23, 0, 1)) ** 0.5
    x += st_amp * gains[5] / 0.3 * (seg * plateau).sum(1)
    if not p_waves:  # fibrillatory baseline
      x += 0.12 * np.sin(2 * np.pi * rng.uniform(5, 7) * t + rng.uniform(0, 2 * np.pi))
    x += 0.1 * np.sin(
      2 * np.pi * rng.uniform(0.1, 0.3) * t + rng.uniform(0, 2 * np.pi)
    )  # baseline wander
    x += rng.normal(0, rng.uniform(0.01, 0.03), LENGTH)
    gain = np.exp(rng.uniform(*np.log(GAIN)))
    series.append(rng.uniform(-OFFSET, OFFSET) + gain * (x - x.mean()) / x.std())
  label = TEMPLATES[template][2](finding)
  return {
    "series": np.stack(series).astype(np.float32),
    "finding": finding,
    "template": template,
    "label": label,
  }


def example(seed: int, index: int) -> dict:
  """The deterministic example `index` of the stream `seed`."""
  return make_example(np.random.default_rng([seed, index]))


def format_example(ex: dict) -> tuple[str, list[np.ndarray], str]:
  """(prompt with one TS placeholder per lead, normalised leads, rationale + "Answer: <label>")."""
  parts, normed = [PRE_PROMPT], []
  for lead, s in zip(LEADS, ex["series"]):
    z, mean, std = normalize(s)
    normed.append(z)
    parts.append(f"{TS} {lead}: mean {mean:.2f} std {std:.2f}\n")
  parts.append(TEMPLATES[ex["template"]][0])
  return "".join(parts), normed, f" {RATIONALES[ex['finding']]} Answer: {ex['label']}"
