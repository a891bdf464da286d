"""Evaluation metrics: classification (AUC, F1, balanced accuracy, per-template accuracy), text against
references (VQA accuracy, BLEU, ROUGE-L), video caption faithfulness and FVD; retrieval recall@K is in
`medjax.objectives.contrastive`."""

from medjax.eval.classification import (
  balanced_accuracy,
  classification_metrics,
  f1_score,
  roc_auc,
  template_metrics,
)
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
  "balanced_accuracy",
  "classification_metrics",
  "f1_score",
  "roc_auc",
  "template_metrics",
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
