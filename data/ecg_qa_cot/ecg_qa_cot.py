"""ECG-QA-CoT (OpenTSLM): questions about 12-lead PTB-XL ECGs with a chain-of-thought rationale and
the ECG-QA answer; OpenTSLM stage 5.

The public release is ecg_qa_cot_{train,val,test}.csv with columns ecg_id (e.g. "[1234]"; a list
for comparison questions), question, answer, template_id, question_type, clinical_context and
rationale (extra columns are ignored). The signals are the PTB-XL WFDB records
records500/BBBBB/NNNNN_hr (500 Hz, taken at every 5th sample, as OpenTSLM does) or else
records100/BBBBB/NNNNN_lr (100 Hz): 12 leads x 1000 samples, in mV. The answer options of each
template come from ECG-QA's answers_for_each_template.csv (columns template_id, classes), when
present. Records use the common OpenTSLM schema of medjax/data/timeseries_io.py, with template_id,
plus question, question_type, ecg_id and options.
"""

import ast
import functools
import re

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from medjax.data import timeseries_io as tsio
from medjax.inference.parsing import answer_label

COT_URL = "https://polybox.ethz.ch/index.php/s/D5QaJSEw4dXkzXm/download/ecg_qa_cot_final.zip"
SPLIT_FILES = {
  "train": "ecg_qa_cot_train.csv",
  "validation": "ecg_qa_cot_val.csv",
  "test": "ecg_qa_cot_test.csv",
}
COLUMNS = ("ecg_id", "question", "answer", "template_id", "question_type", "rationale")
ANSWERS_FILE = "answers_for_each_template.csv"
FS = 100  # Hz of the stored series
DEFAULT_CONTEXT = "12-lead ECG recording."
MANUAL_DOWNLOAD_INSTRUCTIONS = f"""Put into manual_dir: the ecg_qa_cot_*.csv files of {COT_URL}
(or the folder ecg_qa_cot holding them), PTB-XL 1.0.3 from physionet.org/content/ptb-xl as a folder
ptbxl (holding records500/ or records100/), and optionally ECG-QA's ecgqa/ptbxl/{ANSWERS_FILE}
(github.com/Jwoo5/ecg-qa)."""


def read_wfdb(base) -> tuple[np.ndarray, float, list[str]]:
  """(physical signals float32 [n_sig, n_samples], sampling frequency, signal names) of the WFDB record
  `base`.hea/.dat; samples in format 16 (interleaved little-endian int16), as PTB-XL stores them."""
  hea = epath.Path(f"{base}.hea")
  lines = [l.split("#")[0].strip() for l in hea.read_text().splitlines()]
  lines = [l for l in lines if l]
  head = lines[0].split()
  if len(head) < 4:
    raise ValueError(
      f"{hea.name}: record line: expected 'name n_sig fs n_samples', got {lines[0]!r}"
    )
  n_sig, fs, n = int(head[1]), float(head[2].split("/")[0]), int(head[3])
  sigs = [l.split() for l in lines[1 : 1 + n_sig]]
  if len(sigs) != n_sig or any(len(s) < 5 for s in sigs):
    raise ValueError(
      f"{hea.name}: expected {n_sig} signal lines of >= 5 fields, got {[len(s) for s in sigs]}"
    )
  formats, files = sorted({s[1] for s in sigs}), sorted({s[0] for s in sigs})
  if formats != ["16"] or len(files) != 1:
    raise ValueError(
      f"{hea.name}: format: expected all signals in one format-16 file, got formats "
      f"{formats} in files {files}"
    )
  gains, baselines = [], []
  for s in sigs:
    m = re.fullmatch(r"([-+.\deE]+)(?:\((-?\d+)\))?(?:/\S*)?", s[2])
    if m is None:
      raise ValueError(f"{hea.name}: gain: expected 'gain(baseline)/units', got {s[2]!r}")
    gains.append(float(m[1]) or 200.0)  # WFDB: gain 0 means the default 200
    baselines.append(int(m[2]) if m[2] else int(s[4]))  # no baseline: the ADC zero
  raw = np.frombuffer((hea.parent / files[0]).read_bytes(), "<i2")
  if raw.size != n_sig * n:
    raise ValueError(f"{files[0]}: expected {n_sig} x {n} int16 samples, got {raw.size}")
  digital = raw.reshape(n, n_sig).T
  for s, d in zip(sigs, digital):
    if len(s) > 6 and (int(d.sum(dtype=np.int64)) - int(s[6])) % 65536:
      raise ValueError(
        f"{files[0]}: signal {s[-1]}: checksum {int(s[6])} of the header does not match the samples"
      )
  physical = (digital - np.array(baselines)[:, None]) / np.array(gains)[:, None]
  return (
    physical.astype(np.float32),
    fs,
    [" ".join(s[8:]) or f"signal {i}" for i, s in enumerate(sigs)],
  )


def ptbxl_root(manual_dir) -> epath.Path | None:
  """The PTB-XL folder (holding records500/ or records100/) in manual_dir, else None."""
  for sub in (
    "ptbxl",
    "ptb-xl",
    "ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3",
    "",
  ):
    root = epath.Path(manual_dir) / sub
    if (root / "records500").exists() or (root / "records100").exists():
      return root
  return None


@functools.lru_cache(maxsize=1024)
def load_ecg(root: str, ecg_id: int) -> tuple[np.ndarray, list[str]]:
  """(signals [12, 1000] at FS Hz in mV, lead names) of one PTB-XL record (500 Hz record preferred)."""
  bucket = f"{ecg_id // 1000 * 1000:05d}"
  for sub, suffix in (("records500", "hr"), ("records100", "lr")):
    base = epath.Path(root) / sub / bucket / f"{ecg_id:05d}_{suffix}"
    if epath.Path(f"{base}.hea").exists():
      signals, fs, names = read_wfdb(base)
      if fs % FS:
        raise ValueError(
          f"{base.name}: sampling frequency: expected a multiple of {FS} Hz, got {fs}"
        )
      return signals[:, :: int(fs) // FS], names
  raise ValueError(
    f"ecg_id {ecg_id}: no PTB-XL record {bucket}/{ecg_id:05d}_hr or _lr under {root}"
  )


def parse_ids(text: str, where: str) -> list[int]:
  """'[1234]', '1234' or '[12, 34]' -> [ids]."""
  parts = [p.strip() for p in text.strip().strip("[]").split(",")]
  if not all(p.isdigit() for p in parts):
    raise ValueError(f"{where}: ecg_id: expected a PTB-XL id or a list of ids, got {text!r}")
  return [int(p) for p in parts]


def read_template_answers(path) -> dict[int, list[str]]:
  """template_id -> answer options, from ECG-QA's answers_for_each_template.csv."""
  out = {}
  for where, row in tsio.read_csv(path, ("template_id", "classes")):
    try:
      out[int(row["template_id"])] = [str(c).strip() for c in ast.literal_eval(row["classes"])]
    except (ValueError, SyntaxError) as e:
      raise ValueError(
        f"{where}: expected an integer template_id and a list of classes, got "
        f"{row['template_id']!r}, {row['classes'][:40]!r}"
      ) from e
  return out


def prompts(question: str, context: str, options: list[str]) -> tuple[str, str]:
  """(pre_prompt, post_prompt) of one question."""
  pre = (
    f"You are an expert cardiologist analysing an ECG.\nClinical context: {context}\nQuestion: {question}\n"
    "Analyse the signal without assuming an answer, reason step by step about morphology, intervals and "
    "abnormalities in one paragraph, and name the answer only at the very end.\n"
  )
  choose = f"Select your answer from: {', '.join(options)}. " if options else "Give your answer. "
  return pre, choose + 'End your response with "Answer: ".'


def parse_rows(path, root, template_answers: dict[int, list[str]]):
  """Yields (key, record) for every row of one ecg_qa_cot_*.csv file (lazily: a split of 12 x 1000
  series per row does not fit in memory at once)."""
  for i, (where, row) in enumerate(tsio.read_csv(path, COLUMNS)):
    ids = parse_ids(row["ecg_id"], where)
    try:
      template_id = int(float(row["template_id"]))
    except ValueError as e:
      raise ValueError(
        f"{where}: template_id: expected an integer, got {row['template_id']!r}"
      ) from e
    series, names = [], []
    for k, ecg_id in enumerate(ids):
      signals, leads = load_ecg(str(root), ecg_id)
      series += list(signals)
      names += [
        f"ECG lead {lead}" + (f" (recording {k + 1})" if len(ids) > 1 else "") for lead in leads
      ]
    question = tsio.field(row, "question", where)
    options = template_answers.get(template_id, [])
    pre, post = prompts(
      question, (row.get("clinical_context") or "").strip() or DEFAULT_CONTEXT, options
    )
    key = f"{epath.Path(path).stem}-{i}"
    yield (
      key,
      tsio.make_example(
        key,
        series,
        names,
        pre_prompt=pre,
        post_prompt=post,
        rationale=tsio.field(row, "rationale", where),
        label=answer_label(tsio.field(row, "answer", where)),
        template_id=template_id,
        question=question,
        question_type=tsio.field(row, "question_type", where),
        ecg_id=np.array(ids, np.int32),
        options=options,
      ),
    )


class EcgQaCot(tfds.core.GeneratorBasedBuilder):
  """ECG-QA-CoT: 12 ECG leads x 1000 samples per recording, question, rationale, answer, template id."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      homepage="https://github.com/StanfordBDHG/OpenTSLM",
      features=tsio.features(
        question=text(),
        question_type=text(),
        options=tfds.features.Sequence(text()),
        ecg_id=tfds.features.Tensor(shape=(None,), dtype=np.int32),
      ),
    )

  def _split_generators(self, dl_manager):
    manual = dl_manager.manual_dir
    root = ptbxl_root(manual)
    if root is None:
      raise ValueError(
        f"manual_dir: no PTB-XL folder (ptbxl/records500 or ptbxl/records100) under {manual}"
      )
    answers = tsio.find_file(
      manual, ANSWERS_FILE, ("ecgqa/ptbxl", "ecg-qa/ecgqa/ptbxl", "ecg_qa/ecgqa/ptbxl")
    )
    template_answers = read_template_answers(answers) if answers else {}
    out = {}
    for split, name in SPLIT_FILES.items():
      path = tsio.find_file(manual, name, ("ecg_qa_cot",))
      if path:
        out[split] = self._generate_examples(path, root, template_answers)
    if not out:
      raise ValueError(f"manual_dir: no ecg_qa_cot_*.csv files under {manual}")
    return out

  def _generate_examples(self, path, root, template_answers):
    yield from parse_rows(path, root, template_answers)
