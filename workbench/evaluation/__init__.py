"""Evaluation stage: confusion matrices and IoU (metrics), per-pixel error kinds (error_kinds), flip
consistency (flip_consistency), prediction readers for analysis (sources) and the one pass that scores
a source (evaluate)."""
