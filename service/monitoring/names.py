"""Names the monitoring adds to answers and metrics, declared once."""

OOD_SCORE = "ood_score"  # the detector's score of each item (FP32)
IN_DISTRIBUTION = "in_distribution"  # score <= threshold (BOOL)
OOD_OUTPUTS = (OOD_SCORE, IN_DISTRIBUTION)
