"""Sensitive categories and paths at training: the catalogue may not target them, and the data
a bundle learns from does not hold them.

:func:`check_catalogue` refuses a catalogue whose rules (lifecycle, offer eligibility and
category, slot variants, experiments) or persona signatures target a sensitive category or
path (:meth:`sdk.sensitive.Sensitivity.rule_violations` is the one check, also run at bundle
load). :func:`scrub_inputs` drops sensitive categories and URLs from a customer's clean
transactions and events as soon as they are read, before profiles, summaries, labels or any
model see them. The training run scrubs every request it builds rows from as well
(:func:`model_export.training.train`), so the synthetic demo is covered too.

Must not import server.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import polars as pl

from model_export.errors import ModelExportError
from model_export.inputs._ingest_core import IngestResult
from sdk.sensitive import RuleSource, Sensitivity

__all__ = ["SensitiveTargetingError", "check_catalogue", "scrub_inputs"]

#: Columns of the clean frames (:mod:`model_export.inputs.ingest`) that name a category, and
#: those that hold a URL.
_CATEGORY_COLUMNS = ("category",)
_URL_COLUMNS = ("url", "referrer")


class SensitiveTargetingError(ModelExportError):
    """The rules or persona signatures of a catalogue (or the experiments of a bundle policy)
    target a sensitive category or path; the message names every such rule."""


def check_catalogue(
    source: RuleSource,
    sensitivity: Sensitivity,
    signatures: Mapping[str, Mapping[str, float]] | None = None,
) -> None:
    """Refuse rules and persona signatures that target a sensitive category or path.

    Args:
        source: the catalogue (or manifest) whose rules are checked.
        sensitivity: its sensitive categories and paths.
        signatures: persona template id -> signature (feature weights): a weight on the
            share feature of a sensitive category (``cat_<name>``) is refused.

    Raises:
        SensitiveTargetingError: naming each offending rule and the category or path.
    """
    refused = sensitivity.rule_violations(source)
    for persona, signature in (signatures or {}).items():
        refused += [
            f"persona template {persona!r} signature weighs {feature!r}, the share of a "
            "sensitive category"
            for feature in signature
            if feature.startswith("cat_") and sensitivity.is_sensitive_category(feature[4:])
        ]
    if refused:
        raise SensitiveTargetingError(
            "rules target sensitive categories or paths: " + "; ".join(refused)
        )


def _sensitive_values(column: pl.Series, test: Callable[[object], bool]) -> list[str]:
    """The distinct values of ``column`` that ``test`` (a Sensitivity method) calls sensitive."""
    return [v for v in column.drop_nulls().unique().to_list() if test(v)]


def _scrub_frame(
    frame: pl.DataFrame, sensitivity: Sensitivity, dropped: dict[str, int]
) -> pl.DataFrame:
    exprs = []
    for column in frame.columns:
        test: Callable[[object], bool]
        if column in _CATEGORY_COLUMNS:
            test = sensitivity.is_sensitive_category
        elif column in _URL_COLUMNS:
            test = sensitivity.is_sensitive_path
        else:
            continue
        bad = _sensitive_values(frame.get_column(column), test)
        if not bad:
            continue
        hit = pl.col(column).is_in(bad)
        dropped[column] = dropped.get(column, 0) + int(frame.select(hit.sum()).item())
        exprs.append(pl.when(hit).then(None).otherwise(pl.col(column)).alias(column))
    return frame.with_columns(exprs) if exprs else frame


def scrub_inputs(
    results: Mapping[str, IngestResult], sensitivity: Sensitivity
) -> tuple[dict[str, IngestResult], dict[str, int]]:
    """The clean inputs without sensitive categories and URLs.

    A row keeps its place (a purchase still counts, with its amount) but a sensitive
    ``category`` becomes null, and so does a ``url`` or ``referrer`` whose path is under a
    sensitive prefix (on any site): profiles, category mixes, recent categories, the last
    landing page, the summaries in the manifest and every label then never hold them.

    Returns:
        The scrubbed results by kind, and how many values were dropped per column (an
        aggregate: it goes into the manifest's ``training.data.sensitive``).
    """
    dropped: dict[str, int] = {}
    if not sensitivity:
        return dict(results), dropped
    out = {
        kind: dataclasses.replace(result, frame=_scrub_frame(result.frame, sensitivity, dropped))
        if kind in ("transactions", "events")
        else result
        for kind, result in results.items()
    }
    return out, dropped
