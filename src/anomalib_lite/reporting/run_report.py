"""``report.html``: one self-contained page per run folder (images embedded as data URIs, no external
file, script or style sheet), readable offline: the run's setting, the metrics with the per-defect rows,
the curves and the overlays."""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from PIL import Image

from anomalib_lite.files import write_atomically
from anomalib_lite.metrics.catalogue import metric_columns
from anomalib_lite.reporting.tables import mean_metrics

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; padding: 0 16px; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
tr.defect td { color: #555; background: #fafafa; } tr.defect td:first-child { padding-left: 28px; }
tr.mean td { font-weight: bold; border-top: 2px solid #999; }
table.setting td { text-align: left; }
img { max-width: 100%; height: auto; }
.overlays { display: flex; flex-wrap: wrap; gap: 12px; }
.overlays figure { margin: 0; flex: 0 1 calc(50% - 12px); }
.overlays img { width: 100%; image-rendering: pixelated; }  /* small test images drawn large, not blurred */
figcaption { font-size: 0.8em; color: #555; }
.note { color: #555; font-size: 0.9em; }
"""


def data_uri(path: Path, jpeg: bool = False) -> str:
    """A ``data:`` URI holding the image file ``path`` (re-encoded as JPEG with ``jpeg``, for smaller pages)."""
    if not jpeg:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def setting_rows(config: dict[str, Any], categories: list[str]) -> list[tuple[str, str]]:
    """(name, value) rows of a run's setting from its plain config (as composed by Hydra and validated)."""
    model, data = config.get("model") or {}, config.get("data") or {}
    backbone, trainer = config.get("backbone") or {}, config.get("trainer") or {}
    epochs = ", ".join(f"{key} {value}" for key, value in model.items() if key.endswith("epochs"))
    if trainer.get("max_epochs") is not None:
        epochs += f" (capped at {trainer['max_epochs']} per stage)"
    evaluation = config.get("eval") or {}
    rows = [
        ("model", model.get("name")),
        ("backbone", f"{backbone.get('name')} (weights: {backbone.get('weights')})" if backbone else None),
        ("data", f"{data.get('name')} (root {data.get('root')})" if data else None),
        ("categories", ", ".join(categories)),
        ("image size", data.get("image_size")),
        ("metrics at", evaluation.get("map_size") or data.get("image_size")),
        ("AUPRO FPR limit", evaluation.get("fpr_limit")),
        ("epochs", epochs or None),
        ("precision", trainer.get("precision")),
        ("seed", config.get("seed")),
    ]
    return [(name, str(value)) for name, value in rows if value is not None]


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def metrics_table(per_category: dict[str, dict[str, Any]]) -> str:
    """An HTML table: each category, its per-defect rows (defect type against the good images), the mean."""
    columns = metric_columns(per_category)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("category", *columns, "images"))
    rows = []

    def row(name: str, metrics: dict[str, Any], css: str = "") -> str:
        cells = "".join(f"<td>{_cell(metrics.get(c))}</td>" for c in (*columns, "n_images"))
        return f'<tr class="{css}"><td>{html.escape(name)}</td>{cells}</tr>'

    for category, metrics in per_category.items():
        rows.append(row(category, metrics))
        for defect, values in (metrics.get("per_defect") or {}).items():
            rows.append(row(f"{defect} vs good", values, "defect"))
    if len(per_category) > 1:
        rows.append(row("mean", mean_metrics(per_category), "mean"))
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def render_report(folder: Path, config: dict[str, Any]) -> str:
    """The HTML page of the run in ``folder`` (its ``metrics.json``, ``curves/`` and ``maps/``)."""
    results = json.loads((folder / "metrics.json").read_text())
    per_category: dict[str, dict[str, Any]] = results.get("categories", {})
    title = f"{results.get('model', '?')} on {results.get('data', '?')}"
    setting = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{html.escape(v)}</td></tr>"
        for n, v in setting_rows(config, list(per_category))
    )
    notes = "".join(
        f'<p class="note">{html.escape(c)}: {html.escape(m["note"])}</p>'
        for c, m in per_category.items()
        if m.get("note")
    )
    curves, overlays = [], []
    for category in per_category:
        name = html.escape(category)
        figure = folder / "curves" / category / "curves.png"
        if figure.is_file():
            curves.append(f'<h3>{name}</h3><img alt="curves of {name}" src="{data_uri(figure)}">')
        elif (folder / "curves" / category).is_dir():
            curves.append(f'<h3>{name}</h3><p class="note">CSV only in curves/{name}/ (install the plots extra)</p>')
        panels = sorted(p for p in (folder / "maps" / category).glob("*.png") if not p.stem.endswith("_stages"))
        if panels:
            figures = "".join(
                f'<figure><img alt="{html.escape(p.stem)}" src="{data_uri(p, jpeg=True)}">'
                f"<figcaption>{html.escape(p.stem)}</figcaption></figure>"
                for p in panels
            )
            overlays.append(f'<h3>{name}</h3><div class="overlays">{figures}</div>')
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="note">Run folder {html.escape(str(folder.resolve()))}; report written {when}.</p>
<h2>Setting</h2>
<table class="setting">{setting}</table>
<h2>Metrics</h2>
<p class="note">Exact metrics (no binning). Indented rows: that defect type's test images against the good ones.
AUPRO up to the FPR limit above.</p>
{metrics_table(per_category)}
{notes}
<h2>Curves</h2>
<p class="note">Image ROC, pixel ROC and PRO (up to the FPR limit); the legend gives the area (AUROC, AUPRO).</p>
{"".join(curves) or '<p class="note">No curves (eval.curves=false).</p>'}
<h2>Overlays</h2>
<p class="note">Each panel: the test image, its ground-truth outline (green), the anomaly map on it (one colour
scale per category).</p>
{"".join(overlays) or '<p class="note">No overlays (eval.n_maps=0).</p>'}
</body></html>
"""


def write_report(folder: Path, config: dict[str, Any]) -> Path:
    """Write ``folder/report.html`` (see :func:`render_report`) atomically; return its path.

    Args:
        folder: a run folder holding ``metrics.json`` (and ``curves/``, ``maps/`` where written).
        config: the run's plain config (the setting shown).
    """
    page = render_report(folder, config).encode()
    path = folder / "report.html"
    write_atomically(path, lambda file: file.write(page))
    return path
