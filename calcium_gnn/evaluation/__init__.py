"""Evaluation of a fitted consensus model by simulation: metrics, spikes, fit quality, figures, results.json.

Entry point: :func:`calcium_gnn.evaluation.report.evaluate_fit`. The results.json contract is
documented in :mod:`calcium_gnn.evaluation.results`.
"""

from calcium_gnn.evaluation.quality import QualityRule
from calcium_gnn.evaluation.report import evaluate_fit
from calcium_gnn.evaluation.results import read_results, validate_results, write_results
from calcium_gnn.evaluation.spikes import SpikeRule

__all__ = ["QualityRule", "SpikeRule", "evaluate_fit", "read_results", "validate_results", "write_results"]
