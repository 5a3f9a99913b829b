"""Coverage of ICD-10-CM billable codes by the span tiers, cumulatively (gold, + silver, + synthetic)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from ccl.icd.tabular import TabularList
from ccl.records import TIERS, SpanPair


def _ordered(spans: Mapping[str, Sequence[SpanPair]]) -> list[str]:
    return [t for t in TIERS if t in spans] + sorted(set(spans) - set(TIERS))


def _cumulative(
    tiers: list[str], codes_by_tier: dict[str, set[str]], universe: set[str]
) -> list[dict[str, Any]]:
    rows, covered = [], set()
    for i, tier in enumerate(tiers):
        new = (codes_by_tier[tier] & universe) - covered
        covered |= new
        rows.append({
            "tiers": "+".join(tiers[: i + 1]),
            "new_codes": len(new),
            "codes": len(covered),
            "share": round(len(covered) / len(universe), 6) if universe else 0.0,
        })
    return rows


def coverage_report(
    tab: TabularList,
    spans: Mapping[str, Sequence[SpanPair]],
    codes: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Billable codes with at least one pair, per tier and cumulatively.

    ``share`` is over all billable codes of the Tabular List; with ``codes``
    (e.g. the run's label space) the same is reported over that subset.
    """
    tiers = _ordered(spans)
    billable = set(tab.billable_codes())
    codes_by_tier = {t: {p.code for p in spans[t]} for t in tiers}
    report: dict[str, Any] = {
        "tabular_year": tab.year,
        "billable_total": len(billable),
        "by_tier": {
            t: {
                "pairs": len(spans[t]),
                "codes": len(codes_by_tier[t]),
                "billable_codes": len(codes_by_tier[t] & billable),
            }
            for t in tiers
        },
        "cumulative": _cumulative(tiers, codes_by_tier, billable),
    }
    if codes is not None:
        subset = {c for c in codes if c in billable}
        report["subset"] = {
            "codes": len(subset),
            "cumulative": _cumulative(tiers, codes_by_tier, subset),
            "uncovered_examples": sorted(subset - set().union(*codes_by_tier.values()))[:10],
        }
    return report


def print_coverage(report: dict[str, Any], console: Console, title: str = "Span coverage") -> None:
    """The cumulative coverage as a rich table."""
    table = Table(title=f"{title} ({report['billable_total']} billable codes)")
    for col in ("tiers", "new codes", "codes", "share of billable"):
        table.add_column(col)
    for row in report["cumulative"]:
        table.add_row(
            row["tiers"], str(row["new_codes"]), str(row["codes"]), f"{100 * row['share']:.2f}%"
        )
    if "subset" in report:
        for row in report["subset"]["cumulative"]:
            table.add_row(f"{row['tiers']} (label space, {report['subset']['codes']})", str(row["new_codes"]),
                          str(row["codes"]), f"{100 * row['share']:.2f}%")
    console.print(table)
