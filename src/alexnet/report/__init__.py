"""Pictures of a run and the page that shows them.

    >>> from alexnet.report import build_report, build_comparison
    >>> build_report("runs/alexnet_small28-fashion-mnist-20250101-120000")  # -> .../report.html
    >>> build_comparison(["runs/a", "runs/b"], "comparison.html")

A run folder gains ``report.html`` (self-contained: figures embedded) and ``figures/*.png``.
"""

from .experiment import build_experiment_report, is_experiment_folder
from .html import build_comparison, build_figures, build_report, read_run

__all__ = ["build_comparison", "build_experiment_report", "build_figures", "build_report", "is_experiment_folder",
           "read_run"]
