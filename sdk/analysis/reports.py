"""Experiment reports and KPIs over time from the decision and event log, as msgspec Structs:
one :class:`ExperimentReport` per experiment (overall and per segment) and a
:class:`KpiSeries`. Records come from :func:`sdk.logs.read_log`. This module is the public
surface; the code lives in the private modules of this package.

Must not import server or model_export; ``import sdk`` does not import this module.
"""

from __future__ import annotations

from sdk.analysis._design import HOLDOUT, design_of
from sdk.analysis._experiments import SRM_ALPHA, experiment_reports, summarize
from sdk.analysis._gather import UNKNOWN_SEGMENT
from sdk.analysis._kpis import kpis_over_time
from sdk.analysis._results import (
    ArmCount,
    ArmStats,
    Comparison,
    ExperimentList,
    ExperimentReport,
    ExperimentSummary,
    GroupReport,
    Interval,
    KpiPoint,
    KpiSeries,
    SrmCheck,
)

__all__ = [
    "HOLDOUT",
    "SRM_ALPHA",
    "UNKNOWN_SEGMENT",
    "ArmCount",
    "ArmStats",
    "Comparison",
    "ExperimentList",
    "ExperimentReport",
    "ExperimentSummary",
    "GroupReport",
    "Interval",
    "KpiPoint",
    "KpiSeries",
    "SrmCheck",
    "design_of",
    "experiment_reports",
    "kpis_over_time",
    "summarize",
]
