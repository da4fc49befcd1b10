"""Asset metadata: markdown tables with small-count suppression, plots as embedded PNGs (Dagster 1.13 has no image
metadata type), and the source readers' reports. Nothing here may publish a subject's id or timeline (a test scans
every asset's metadata for them)."""

import base64
import io
import os
from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from ..eval.report import markdown_table


def min_published_count() -> int:
    """Counts below this are shown as "<N" in asset metadata (small-cell suppression, as disclosure rules for
    clinical data require). ``EHR_MIN_PUBLISHED_COUNT``, default 11; 0 or 1 turns it off."""
    raw = os.environ.get("EHR_MIN_PUBLISHED_COUNT", "11")
    try:
        return max(int(raw), 0)
    except ValueError:
        raise ValueError(f"EHR_MIN_PUBLISHED_COUNT must be an integer, got {raw!r}") from None


def published_count(n) -> int | str:
    """``n`` as published in metadata: ``"<11"`` when 0 < n < the threshold (0 stays 0: nothing to hide)."""
    k = min_published_count()
    n = int(n)
    return f"<{k}" if 0 < n < k else n


def meta_table(df: pd.DataFrame, counts: tuple[str, ...] = (), hides: dict[str, str] | None = None) -> dg.MetadataValue:
    """A markdown table for asset metadata; ``counts`` columns go through :func:`published_count`, and a column of
    ``hides`` (e.g. a rate) is blanked where the count it derives from (its value) was suppressed."""
    df = df.copy()
    for col, src in (hides or {}).items():
        small = df[src].map(lambda n: isinstance(published_count(n), str))
        df[col] = df[col].astype(object).where(~small, "")
    for c in counts:
        df[c] = df[c].map(published_count)
    return dg.MetadataValue.md(markdown_table(df))


def subject_count(df: pd.DataFrame) -> int:
    return int(df["subject_id"].nunique()) if len(df) else 0


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def png_md(png: bytes, title: str) -> dg.MetadataValue:
    """A PNG as a markdown image (base64 data URI)."""
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})")


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def loss_curve_md(curve: list[dict], title: str) -> dg.MetadataValue:
    """Loss curves and, when recorded, the collapse monitor (embedding std, effective rank) as a markdown image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mon = [r for r in curve if "emb_eff_rank" in r]
    fig, axes = plt.subplots(1, 2 if mon else 1, figsize=(9 if mon else 5, 3), dpi=90, squeeze=False)
    ax = axes[0][0]
    steps = [r["step"] for r in curve]
    for key in ("loss", "sft_loss", "jepa_loss", "jepa_loss_norm"):
        ys = [r.get(key, float("nan")) for r in curve]
        if any(y == y for y in ys):
            ax.plot(steps, ys, label=key)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend()
    if mon:
        ax = axes[0][1]
        ms = [r["step"] for r in mon]
        ax.plot(ms, [r["emb_eff_rank"] for r in mon], color="tab:purple", label="effective rank")
        ax.set_xlabel("step")
        ax.set_ylabel("effective rank")
        ax2 = ax.twinx()
        ax2.plot(ms, [r["emb_mean_std"] for r in mon], color="tab:gray", ls="--", label="mean dim std")
        ax2.set_ylabel("mean per-dim std")
        ax.set_title("collapse monitor (node embeddings)")
    fig.tight_layout()
    return png_md(figure_png(fig), title)


def source_metadata(reports: dict[str, dict]) -> dict:
    """Asset metadata from the source readers' reports: one JSON per member, malformed rows as a table."""
    md: dict = {}
    for member, rep in reports.items():
        if rep.get("kind") == "synthetic":
            continue
        prefix = f"source[{member}]"
        md[prefix] = dg.MetadataValue.json(
            {k: v for k, v in rep.items() if k not in ("malformed_rows", "timeline_files")}
        )
        if "timeline_files" in rep:
            md[f"{prefix} timeline files"] = meta_table(pd.DataFrame(rep["timeline_files"]))
        if "malformed_rows" in rep:
            bad = pd.DataFrame(rep["malformed_rows"], columns=["file", "reason", "rows", "first_line"])
            md[f"{prefix} malformed rows"] = meta_table(bad) if len(bad) else dg.MetadataValue.text("none")
            md[f"{prefix} malformed_rows_total"] = int(rep.get("malformed_rows_total", 0))
    return md
