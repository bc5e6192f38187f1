"""The CDNOW 1/10 sample (``tests/fixtures/cdnow``, a real order history: see its README) and
its classic split: 39 calibration weeks, 39 holdout weeks."""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import Path

FILE = Path(__file__).parent / "fixtures" / "cdnow" / "CDNOW_sample.txt"
#: The last day of the calibration period and of the holdout.
CALIBRATION_END = date(1997, 9, 30)
HOLDOUT_END = date(1998, 6, 30)


@cache
def orders() -> tuple[tuple[str, date, float], ...]:
    """Every order as ``(customer id, day, dollar value)``."""
    rows = []
    for line in FILE.read_text().splitlines():
        customer, _, day, _, value = line.split()
        rows.append((customer, date(int(day[:4]), int(day[4:6]), int(day[6:])), float(value)))
    return tuple(rows)


def holdout_occasions() -> dict[str, int]:
    """Purchase occasions (days with an order) per customer in the holdout period."""
    days: dict[str, set[date]] = {}
    for customer, day, _ in orders():
        if CALIBRATION_END < day <= HOLDOUT_END:
            days.setdefault(customer, set()).add(day)
    return {customer: len(d) for customer, d in days.items()}
