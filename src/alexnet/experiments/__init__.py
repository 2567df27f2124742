"""The paper's claims, measured: each one's arms trained as ordinary runs, compared over seeds.

    >>> from alexnet.experiments import ExperimentOptions, run_experiment
    >>> run_experiment("lrn", ExperimentOptions(seeds=3))  # -> experiments/lrn (results.json, results.md)
"""

from .claims import CLAIMS, Claim, get_claim, list_claims
from .options import ExperimentOptions
from .runner import run_all, run_experiment

__all__ = ["CLAIMS", "Claim", "ExperimentOptions", "get_claim", "list_claims", "run_all", "run_experiment"]
