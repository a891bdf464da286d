"""Evaluation metrics: text against references (VQA accuracy, BLEU, ROUGE-L), video caption faithfulness and
FVD; retrieval recall@K is in `medjax.objectives.contrastive`."""

from medjax.eval.faithfulness import FaithfulnessClassifier, video_features
from medjax.eval.fvd import frechet_distance, fvd, gaussian_stats
from medjax.eval.text_metrics import (
  bleu,
  match_option,
  normalize_answer,
  report_metrics,
  rouge_l,
  vqa_accuracy,
)

__all__ = [
  "FaithfulnessClassifier",
  "bleu",
  "frechet_distance",
  "fvd",
  "gaussian_stats",
  "match_option",
  "normalize_answer",
  "report_metrics",
  "rouge_l",
  "video_features",
  "vqa_accuracy",
]
