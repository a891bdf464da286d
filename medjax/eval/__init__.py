"""Evaluation metrics. Text against references (VQA accuracy, BLEU, ROUGE-L) is re-exported here;
retrieval recall@K is in `medjax.objectives.contrastive`."""
from medjax.eval.text_metrics import bleu, match_option, normalize_answer, report_metrics, rouge_l, vqa_accuracy

__all__ = ["bleu", "match_option", "normalize_answer", "report_metrics", "rouge_l", "vqa_accuracy"]
