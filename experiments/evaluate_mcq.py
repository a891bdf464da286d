"""Multiple-choice evaluation of a decoder LM with prompting strategies (greedy, CoT, SC, ER, choice
shuffle, Medprompt), 5-shot with rationales as Med-PaLM 2 prompts.

python experiments/evaluate_mcq.py --checkpoint=DIR --dataset=medqa --manual_dir=RAW \
    --strategy=greedy,cot,sc,er,shuffle,medprompt --num_questions=100 --output=results.jsonl

--checkpoint: a medjax workdir (its saved config, or --config) or a Hugging Face directory. Writes one
JSONL record per question and strategy and prints a table per strategy (medjax.inference.mcq).
"""

import os

from absl import app, flags

from medjax.inference import mcq
from medjax.train.restore import load_model

flags.DEFINE_string(
  "checkpoint", None, "medjax workdir or Hugging Face model directory (DIR or hf:DIR)."
)
flags.DEFINE_string("config", None, "Config file:variant for a medjax workdir (default: saved).")
flags.DEFINE_enum("dataset", "synthetic_triage", mcq.DATASETS, "Dataset to evaluate.")
flags.DEFINE_string("dataset_config", None, "TFDS builder config, e.g. us (MedQA's 5 options).")
flags.DEFINE_string("manual_dir", None, "Directory with the raw dataset files (real datasets).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir (default ~/tensorflow_datasets).")
flags.DEFINE_string("split", "", "Split to evaluate ('': the reported one; MedMCQA: validation).")
flags.DEFINE_list(
  "strategy", ["greedy", "cot", "sc", "er"], "Strategies (also shuffle, medprompt)."
)
flags.DEFINE_integer("num_questions", 0, "Evaluate the first N questions (0: all).")
flags.DEFINE_integer("shots", 5, "Few-shot exemplars shown (Med-PaLM 2: 5).")
flags.DEFINE_string("exemplars", "", "JSONL: question, options, rationale, answer ('': default).")
flags.DEFINE_integer("pool_size", 0, "Training questions Medprompt explains (0: all).")
flags.DEFINE_integer("knn", 5, "Medprompt's exemplars per question (nearest self-explained ones).")
flags.DEFINE_integer("num_samples", 11, "SC samples / ER stage-1 generations.")
flags.DEFINE_integer("num_refinements", 33, "ER stage-2 generations.")
flags.DEFINE_integer("num_shuffles", 5, "Choice-shuffle repeats (shuffle, medprompt).")
flags.DEFINE_float("temperature", 0.7, "Sampling temperature for SC and ER.")
flags.DEFINE_integer("max_new_tokens", 0, "Tokens to generate (0: data.max_new_tokens, or 256).")
flags.DEFINE_integer("max_rows", 256, "Most sequences decoded at once.")
flags.DEFINE_string("output", None, "JSONL records (default CHECKPOINT/mcq_<dataset>.jsonl).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.mark_flags_as_required(["checkpoint"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  model, params, tokenizer, config = load_model(FLAGS.checkpoint, FLAGS.config)
  max_new = FLAGS.max_new_tokens or (config.data.max_new_tokens if config is not None else 256)
  names = "split num_questions shots exemplars pool_size knn data_dir manual_dir max_rows seed"
  names = names.split() + ["num_samples", "num_refinements", "num_shuffles", "temperature"]
  kw = {n: getattr(FLAGS, n) for n in names}
  kw.update(builder_config=FLAGS.dataset_config, max_new_tokens=max_new)
  examples, results = mcq.evaluate(model, params, tokenizer, FLAGS.dataset, FLAGS.strategy, **kw)
  where = FLAGS.checkpoint.removeprefix("hf:")
  output = FLAGS.output or os.path.join(where, f"mcq_{FLAGS.dataset}.jsonl")
  mcq.write_records(results, output)
  print(f"{FLAGS.dataset}: {len(examples)} questions; records in {output}")
  print(mcq.table(results))


if __name__ == "__main__":
  app.run(main)
