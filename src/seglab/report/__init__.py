"""Comparison reports: tables, plots, a prediction gallery, report.html / report.md / results.json.

The report is built from run folders (``docs/internals.md``, "Runs") plus benchmark figures;
:mod:`seglab.compare` produces those and calls :func:`write_report`.
"""

from __future__ import annotations

from seglab.report.gallery import GallerySample
from seglab.report.runs import ModelResult, is_finished_run, load_run, recipe_differences
from seglab.report.tables import pareto_front
from seglab.report.writer import ReportFiles, ReportInfo, write_report

__all__ = [
    "GallerySample",
    "ModelResult",
    "ReportFiles",
    "ReportInfo",
    "is_finished_run",
    "load_run",
    "pareto_front",
    "recipe_differences",
    "write_report",
]
