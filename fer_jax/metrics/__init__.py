"""Evaluation metrics: classification, the paper's per-class aggregation, localisation
(CAM-COS, AU pointing game) and faithfulness (deletion / insertion AUC)."""
