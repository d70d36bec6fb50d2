"""Shared pieces of the Dagster layer: owners, automation conditions, metadata helpers."""

from __future__ import annotations

import dagster as dg
import polars as pl

OWNER_DATA = "team:data-platform"
OWNER_ML = "team:ml-engineering"
OWNER_RISK = "team:model-risk"
OWNER_LLM = "team:llm-platform"

# Reusable automation conditions (named, as in dagster-open-platform).
# Feature assets follow raw data; assets behind a gate also wait for the gate's blocking checks,
# because eager() alone ignores a check that failed in an earlier run.
FOLLOW_UPSTREAM = dg.AutomationCondition.eager()
FOLLOW_UPSTREAM_WHEN_GATES_PASS = (
    dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
)

_POLARS_TO_TYPE = {
    pl.String: "string", pl.Date: "date", pl.Datetime: "timestamp", pl.Float64: "double",
    pl.Float32: "float", pl.Int64: "bigint", pl.Int32: "int", pl.Int8: "tinyint", pl.Boolean: "boolean",
}


def type_name(dtype: pl.DataType) -> str:
    for base, name in _POLARS_TO_TYPE.items():
        if dtype == base:
            return name
    return str(dtype).lower()


def table_schema(df: pl.DataFrame, descriptions: dict[str, str] | None = None) -> dg.TableSchema:
    descriptions = descriptions or {}
    return dg.TableSchema(columns=[
        dg.TableColumn(name=c, type=type_name(t), description=descriptions.get(c)) for c, t in df.schema.items()
    ])


def markdown_table(df: pl.DataFrame, max_rows: int = 30, float_fmt: str = "{:.4g}") -> dg.MetadataValue:
    """A small polars frame as a markdown table for the Dagster UI."""
    df = df.head(max_rows)
    header = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    rows = []
    for row in df.iter_rows():
        cells = [float_fmt.format(v) if isinstance(v, float) else str(v) for v in row]
        rows.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return dg.MetadataValue.md(header + "\n".join(rows))


def png_markdown(png: bytes, alt: str = "plot") -> dg.MetadataValue:
    """An inline image (keep under ~100 KB: metadata lives in the event log)."""
    from mlops_assets.evaluation.plots import markdown_image

    return dg.MetadataValue.md(markdown_image(png, alt))


def date_range(df: pl.DataFrame, column: str = "date") -> str:
    if df.is_empty():
        return "empty"
    return f"{df[column].min()} .. {df[column].max()}"
