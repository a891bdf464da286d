"""Classification metrics on the host (numpy): ROC AUC, balanced accuracy, F1, and accuracy /
macro-F1 of predicted labels, overall and per question template."""

import numpy as np
import scipy.stats


def roc_auc(labels, scores) -> float:
  """Mann-Whitney AUC (ties count one half); nan without both classes."""
  labels, scores = np.asarray(labels, bool), np.asarray(scores, np.float64)
  pos, neg = scores[labels], scores[~labels]
  if not len(pos) or not len(neg):
    return float("nan")
  ranks = scipy.stats.rankdata(np.concatenate([pos, neg]))
  return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def balanced_accuracy(labels, preds) -> float:
  """Mean of the true-positive and true-negative rates; nan without both classes."""
  labels, preds = np.asarray(labels, bool), np.asarray(preds, bool)
  if labels.all() or not labels.any():
    return float("nan")
  return float((np.mean(preds[labels]) + np.mean(~preds[~labels])) / 2)


def f1_score(labels, preds) -> float:
  """F1 of the positive class; nan when there are no positives, predicted or true."""
  labels, preds = np.asarray(labels, bool), np.asarray(preds, bool)
  tp = np.sum(labels & preds)
  denom = 2 * tp + np.sum(~labels & preds) + np.sum(labels & ~preds)
  return float(2 * tp / denom) if denom else float("nan")


def classification_metrics(preds, labels, label_set) -> dict:
  """Accuracy and macro-F1 over `label_set`; out-of-set predictions are false negatives only."""
  preds, labels = np.asarray(preds, object), np.asarray(labels, object)
  f1s = [np.nan_to_num(f1_score(labels == c, preds == c)) for c in label_set]
  return {"accuracy": float(np.mean(preds == labels)), "macro_f1": float(np.mean(f1s))}


def template_metrics(records, sets: dict) -> dict:
  """Accuracy and macro-F1 per template of records {"template", "prediction", "label"}; overall accuracy
  and macro-F1 (the mean of the templates'); chance (the mean of 1 / #answers over templates)."""
  out, f1s, chance = {}, [], []
  for name, labels in sets.items():
    rows = [r for r in records if r["template"] == name]
    if not rows:
      continue
    m = classification_metrics([r["prediction"] for r in rows], [r["label"] for r in rows], labels)
    f1s.append(m["macro_f1"])
    chance.append(1.0 / len(labels))
    if len(sets) > 1:
      out.update({f"{name}/{k}": v for k, v in m.items()})
  out["accuracy"] = float(np.mean([r["prediction"] == r["label"] for r in records]))
  out["macro_f1"], out["chance"] = float(np.mean(f1s)), float(np.mean(chance))
  return out
