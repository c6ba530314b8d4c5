"""Names the monitoring adds to answers and metrics, declared once."""

OOD_SCORE = "ood_score"  # the detector's score of each item (FP32)
IN_DISTRIBUTION = "in_distribution"  # score <= threshold (BOOL)
OOD_OUTPUTS = (OOD_SCORE, IN_DISTRIBUTION)
# Series that exist only once monitored traffic has flowed (a full drift window, a paired
# detector, a payload sink): tests/test_monitoring.py checks that the dashboard's and rules'
# uses of them are real, on servers that have that traffic.
METRICS = (
    "serving_drift_score",
    "serving_ood_items_total",
    "serving_payload_log_dropped_total",
    "serving_payload_log_written_total",
)
