"""Multiple-choice evaluation of a decoder LM with prompting strategies (greedy, CoT, SC, ER, Medprompt).

python experiments/evaluate_mcq.py --checkpoint=DIR --dataset=medqa --manual_dir=RAW \
    --strategy=greedy,cot,sc,er --num_questions=100 --output=results.jsonl

--checkpoint is a medjax training workdir (its config is read from the checkpoint, or pass --config)
or a Hugging Face directory (config.json + safetensors + tokenizer.json). --dataset is one of
synthetic_triage, medqa, medmcqa, pubmedqa; the real ones are built from --manual_dir with the TFDS
builders in data/<name>/. Writes one JSONL record per question and strategy, prints a table of
accuracy, unparseable rate and forward tokens (prefill + decoded) per strategy.
"""

import json
import os
import time

from absl import app, flags

from medjax.config_lib import config_from_file

FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags (defined only when run as a script, so other scripts can import this one)."""
  flags.DEFINE_string(
    "checkpoint", None, "medjax training workdir or Hugging Face model directory."
  )
  flags.DEFINE_string(
    "config", None, "Config file:variant for a medjax workdir (default: the saved config)."
  )
  flags.DEFINE_string(
    "dataset", "synthetic_triage", "synthetic_triage | medqa | medmcqa | pubmedqa."
  )
  flags.DEFINE_string("dataset_config", None, "TFDS builder config, e.g. us_4_options for MedQA.")
  flags.DEFINE_string("manual_dir", None, "Directory with the raw dataset files (real datasets).")
  flags.DEFINE_string("data_dir", None, "TFDS data_dir (default ~/tensorflow_datasets).")
  flags.DEFINE_string("split", "test", "Split to evaluate.")
  flags.DEFINE_list("strategy", ["greedy", "cot", "sc", "er"], "Comma-separated strategies.")
  flags.DEFINE_integer("num_questions", 0, "Evaluate the first N questions (0: all).")
  flags.DEFINE_integer(
    "shots", 3, "Few-shot exemplars from the train split (real datasets; kNN for medprompt)."
  )
  flags.DEFINE_integer("num_samples", 11, "SC samples / ER stage-1 generations.")
  flags.DEFINE_integer("num_refinements", 33, "ER stage-2 generations.")
  flags.DEFINE_integer("num_shuffles", 5, "Medprompt choice-shuffle repeats.")
  flags.DEFINE_float("temperature", 0.7, "Sampling temperature for SC and ER.")
  flags.DEFINE_integer(
    "max_new_tokens", 0, "Tokens to generate (0: the config's data.max_new_tokens, or 256)."
  )
  flags.DEFINE_integer("max_rows", 256, "Most sequences decoded at once.")
  flags.DEFINE_string(
    "output", None, "JSONL path for per-question records (default CHECKPOINT/mcq_<dataset>.jsonl)."
  )
  flags.DEFINE_integer("seed", 0, "Sampling seed.")


def saved_config(workdir: str):
  """The ml_collections config stored with the newest checkpoint of a medjax workdir."""
  import ml_collections
  import orbax.checkpoint as ocp

  mngr = ocp.CheckpointManager(
    os.path.join(workdir, "checkpoints"), item_names=("state", "data", "config")
  )
  step = mngr.latest_step()
  if step is None:
    raise ValueError(f"--checkpoint: no checkpoint under {workdir}/checkpoints")
  cfg = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
  mngr.close()
  return ml_collections.ConfigDict(cfg)


def load_model(checkpoint: str, config_spec: str | None):
  """-> (model, params, tokenizer, config or None) from a medjax workdir or a Hugging Face directory."""
  if os.path.exists(os.path.join(checkpoint, "config.json")):
    try:
      from medjax.checkpoints.hf_llm import load_hf_model
    except ImportError as e:
      raise ValueError(
        f"--checkpoint: {checkpoint} is a Hugging Face directory but the importer "
        f"medjax.checkpoints.hf_llm is unavailable ({e})"
      ) from e
    model, params, tokenizer = load_hf_model(checkpoint)
    if tokenizer is None:
      raise ValueError(
        f"--checkpoint: no tokenizer.json in the Hugging Face directory {checkpoint}"
      )
    return model, params, tokenizer, None
  if not os.path.isdir(os.path.join(checkpoint, "checkpoints")):
    raise ValueError(
      f"--checkpoint: expected a medjax workdir (with checkpoints/) or a Hugging Face "
      f"directory (with config.json), got {checkpoint}"
    )
  from medjax.train.loop import trained_params

  config = config_from_file(config_spec) if config_spec else saved_config(checkpoint)
  params, model, task, _, _, _ = trained_params(config, checkpoint)
  return model, params, task.tokenizer, config


def load_examples(dataset: str, split: str, *, data_dir=None, manual_dir=None, builder_config=None):
  """Examples {question, options, answer_idx, ...} of one split, through the dataset's TFDS builder."""
  from medjax.data import builders, pipeline

  if dataset == "synthetic_triage":
    from medjax.data.synthetic import tfds_builder

    source = tfds_builder.load_source(split, data_dir)
  elif dataset in builders.MCQ:
    source = builders.load_builder(
      dataset, split, data_dir=data_dir, manual_dir=manual_dir, config=builder_config
    )
  else:
    raise ValueError(
      f"--dataset: expected one of {['synthetic_triage', *builders.MCQ]}, got {dataset!r}"
    )
  return [pipeline.record_to_example(source[i]) for i in range(len(source))]


def run_strategies(generator, fmt, examples, names, **kw) -> dict:
  """name -> (StrategyResult, seconds) for each strategy in `names`."""
  from medjax.inference import strategies as S

  unknown = [n for n in names if n not in S.STRATEGIES]
  if unknown:
    raise ValueError(f"--strategy: expected names from {sorted(S.STRATEGIES)}, got {unknown}")
  args = {
    "sc": dict(num_samples=kw["num_samples"], temperature=kw["temperature"], seed=kw["seed"]),
    "er": dict(
      num_samples=kw["num_samples"],
      num_refinements=kw["num_refinements"],
      temperature=kw["temperature"],
      seed=kw["seed"],
    ),
    "medprompt": dict(num_shuffles=kw["num_shuffles"], seed=kw["seed"]),
  }
  out = {}
  for name in names:
    tick = time.time()
    fmt_n = kw.get("formats", {}).get(name, fmt)
    out[name] = (
      S.STRATEGIES[name](generator, fmt_n, examples, **args.get(name, {})),
      time.time() - tick,
    )
  return out


def table(results: dict) -> str:
  lines = [
    f"{'strategy':<10} {'accuracy':>8} {'unparse':>8} {'fwd tokens':>11} {'tok/q':>8} {'seconds':>8}"
  ]
  for name, (res, sec) in results.items():
    q = max(len(res.records), 1)
    lines.append(
      f"{name:<10} {res.accuracy:>8.3f} {res.unparseable:>8.3f} {res.forward_tokens:>11d} "
      f"{res.forward_tokens / q:>8.0f} {sec:>8.1f}"
    )
  return "\n".join(lines)


def main(argv):
  del argv

  from medjax.inference import strategies as S

  model, params, tokenizer, config = load_model(FLAGS.checkpoint, FLAGS.config)
  load = lambda split: load_examples(
    FLAGS.dataset,
    split,
    data_dir=FLAGS.data_dir,
    manual_dir=FLAGS.manual_dir,
    builder_config=FLAGS.dataset_config,
  )
  examples = load(FLAGS.split)
  if FLAGS.num_questions:
    examples = examples[: FLAGS.num_questions]
  formats = {}
  if FLAGS.dataset == "synthetic_triage":
    fmt = S.TriageFormat()
  else:
    pool = load("train") if FLAGS.shots else []
    fmt = S.FewShotFormat(shots=pool[: FLAGS.shots])
    if "medprompt" in FLAGS.strategy and pool:
      knn = S.KNNFewShot(
        pool, S.lm_embed_fn(model, params, tokenizer), k=min(FLAGS.shots, len(pool))
      )
      formats["medprompt"] = S.FewShotFormat(shots=knn)
  max_new = FLAGS.max_new_tokens or (config.data.max_new_tokens if config is not None else 256)
  stop = () if FLAGS.dataset == "synthetic_triage" else ("\n\nQuestion:", "\nQuestion:")
  gen = S.LMGenerator(
    model, params, tokenizer, max_new_tokens=max_new, stop=stop, max_rows=FLAGS.max_rows
  )
  results = run_strategies(
    gen,
    fmt,
    examples,
    FLAGS.strategy,
    num_samples=FLAGS.num_samples,
    num_refinements=FLAGS.num_refinements,
    num_shuffles=FLAGS.num_shuffles,
    temperature=FLAGS.temperature,
    seed=FLAGS.seed,
    formats=formats,
  )
  output = FLAGS.output or os.path.join(FLAGS.checkpoint, f"mcq_{FLAGS.dataset}.jsonl")
  with open(output, "w") as f:
    for name, (res, _) in results.items():
      for i, rec in enumerate(res.records):
        f.write(json.dumps({"strategy": name, "index": i, **rec}) + "\n")
  print(f"{FLAGS.dataset}/{FLAGS.split}: {len(examples)} questions; records in {output}")
  print(table(results))


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["checkpoint"])
  app.run(main)
