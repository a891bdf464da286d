"""Evaluation metrics on generated text (VQA accuracy, BLEU, ROUGE-L); retrieval recall@K is in
`medjax.objectives.contrastive`."""
from medjax.eval.text_metrics import bleu, match_option, normalize_answer, report_metrics, rouge_l, vqa_accuracy

__all__ = ["bleu", "match_option", "normalize_answer", "report_metrics", "rouge_l", "vqa_accuracy"]
