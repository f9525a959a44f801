"""``report.html``: one self-contained page per run folder (images embedded as data URIs, no external
file, script or style sheet), readable offline, to debug a run from: the setting that really ran, the metrics
(readable names, per-defect rows), the training losses and timings, and per category the score histogram, the
worst-case gallery (with its colour bar), the model's intermediate stages and the curves."""

from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from anomalib_lite.files import write_atomically
from anomalib_lite.metrics.catalogue import METRICS, metric_columns
from anomalib_lite.reporting.gallery import GROUPS, read_gallery
from anomalib_lite.reporting.plots import Histogram, plot_histogram, plot_losses, score_histogram
from anomalib_lite.reporting.tables import mean_metrics

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; padding: 0 16px; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 1.6em; }
h4 { margin: 1em 0 0.3em; }
nav a { margin-right: 12px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
tr.defect td { color: #555; background: #fafafa; } tr.defect td:first-child { padding-left: 28px; }
tr.mean td, tr.total td { font-weight: bold; border-top: 2px solid #999; }
table.setting td { text-align: left; }
img { max-width: 100%; height: auto; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; }
.gallery figure { margin: 0; flex: 0 1 calc(50% - 12px); }
.gallery.stages figure { flex-basis: 100%; }  /* five tiles side by side: one per row */
.gallery img, .colourbar img { width: 100%; image-rendering: pixelated; }  /* small images drawn large, not blurred */
figcaption { font-size: 0.82em; color: #333; margin-top: 2px; }
figcaption .file { color: #777; }
.wrong { color: #fff; background: #c0392b; padding: 0 4px; border-radius: 3px; }
.colourbar { position: relative; max-width: 520px; margin: 6px 0 34px; }
.colourbar img { height: 14px; display: block; border: 1px solid #999; }
.tick { position: absolute; top: 18px; transform: translateX(-50%); font-size: 0.78em; white-space: nowrap; }
.tick:first-of-type { transform: none; } .tick:last-of-type { transform: translateX(-100%); }
.marker { position: absolute; top: -2px; height: 20px; border-left: 2px solid #000; }
.marker span { position: absolute; top: 34px; transform: translateX(-50%); font-size: 0.78em; white-space: nowrap; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border: 2px solid #000; vertical-align: middle; }
.note { color: #555; font-size: 0.9em; }
"""
# Image files up to this size are embedded as they are (PNG); larger ones are re-encoded as JPEG (smaller pages).
PNG_LIMIT = 96 * 1024


def png_uri(data: bytes) -> str:
    """A ``data:`` URI holding the PNG bytes ``data``."""
    return "data:image/png;base64," + base64.b64encode(data).decode()


def data_uri(path: Path) -> str:
    """A ``data:`` URI holding the PNG file ``path``: as it is up to :data:`PNG_LIMIT` bytes, else re-encoded
    as JPEG (quality 90)."""
    data = path.read_bytes()
    if len(data) <= PNG_LIMIT:
        return png_uri(data)
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _text(value: Any) -> str:
    return html.escape(str(value))


def _number(value: Any, digits: int = 4) -> str:
    """A number as the report shows it: ``-`` when undefined, else ``digits`` significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else _text(value)


def _mebibytes(value: float | None) -> str:
    """A memory figure in MiB to one decimal place (a CPU's peak growth can be a few KiB), ``-`` when absent."""
    return "-" if value is None else f"{value:.1f}"


def _count(n: Any, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _anchor(category: str) -> str:
    return "category-" + re.sub(r"[^A-Za-z0-9_-]", "_", category)


def epochs_text(model: dict[str, Any], max_epochs: int | None) -> str | None:
    """The model's epoch options: ``15`` for ``epochs``, ``ie_epochs 10, expert_epochs 5`` for several, with
    the cap ``trainer.max_epochs`` when set."""
    keys = [key for key in model if key.endswith("epochs")]
    if not keys:
        return None
    text = str(model["epochs"]) if keys == ["epochs"] else ", ".join(f"{key} {model[key]}" for key in keys)
    return text + (f" (capped at {max_epochs} per stage by trainer.max_epochs)" if max_epochs is not None else "")


def schedule_text(schedule: dict[str, list[dict[str, Any]]]) -> str | None:
    """The stages the engine ran (``setting.schedule``: per category, ``stage``, ``epochs``, ``steps``): one line
    when every category ran the same, else one per category."""
    lines = {
        category: "; ".join(
            f"{s.get('stage')} {_count(s.get('epochs'), 'epoch')} ({s.get('steps')} steps)" for s in stages
        )
        for category, stages in schedule.items()
        if stages
    }
    if not lines:
        return None
    if len(set(lines.values())) == 1:
        return next(iter(lines.values()))
    return " | ".join(f"{category}: {line}" for category, line in lines.items())


def setting_rows(
    config: dict[str, Any], categories: list[str], setting: dict[str, Any] | None = None
) -> list[tuple[str, str]]:
    """(name, value) rows of a run's setting: what ran, from ``metrics.json``'s ``setting`` (the backbone used,
    the precision used, the device, the schedule, the commit) where given, else from the plain config (as composed
    by Hydra and validated)."""
    setting = setting or {}
    model, data = config.get("model") or {}, config.get("data") or {}
    backbone, trainer = config.get("backbone") or {}, config.get("trainer") or {}
    evaluation = config.get("eval") or {}
    used = setting.get("backbone") or {}
    if used:
        stand_in = f", standing in for {used.get('requested')}" if used.get("stand_in") else ""
        backbone_text = f"{used.get('used')} (weights: {used.get('weights')}{stand_in})"
    else:
        backbone_text = f"{backbone.get('name')} (weights: {backbone.get('weights')})" if backbone else None
    requested = trainer.get("precision")
    if setting.get("precision"):
        precision = setting["precision"] + (f" (trainer.precision={requested})" if requested else "")
    else:
        precision = f"{requested} (as requested; the precision used is not recorded)" if requested else None
    rows = [
        ("model", setting.get("model") or model.get("name")),
        ("backbone", backbone_text),
        ("data", f"{data.get('name')} (root {data.get('root')})" if data else setting.get("dataset")),
        ("categories", ", ".join(categories)),
        ("image size", setting.get("image_size") or data.get("image_size")),
        ("metrics at", setting.get("map_size") or evaluation.get("map_size") or data.get("image_size")),
        ("AUPRO FPR limit", setting.get("fpr_limit") or evaluation.get("fpr_limit")),
        ("epochs", epochs_text(model, trainer.get("max_epochs"))),
        ("stages run", schedule_text(setting.get("schedule") or {})),
        ("precision", precision),
        ("device", setting.get("device")),
        ("seed", setting.get("seed", config.get("seed"))),
        ("commit", setting.get("commit")),
    ]
    return [(name, str(value)) for name, value in rows if value is not None]


def metric_title(name: str) -> str:
    """The readable name of the metric ``name`` (the catalogue's title), or ``name`` itself when unknown."""
    metric = METRICS.get(name)
    return metric.title if metric else name


def metrics_table(per_category: dict[str, dict[str, Any]]) -> str:
    """An HTML table: each category, its per-defect rows (defect type against the good images), the mean; the
    columns named by the catalogue's titles."""
    columns = metric_columns(per_category)
    head = "".join(f"<th>{_text(c)}</th>" for c in ("category", *map(metric_title, columns), "images"))
    rows = []

    def row(name: str, metrics: dict[str, Any], css: str = "") -> str:
        cells = "".join(f"<td>{METRICS[c].format(metrics.get(c))}</td>" for c in columns)
        cells += f"<td>{_number(metrics.get('n_images'))}</td>"
        return f'<tr class="{css}"><td>{_text(name)}</td>{cells}</tr>'

    for category, metrics in per_category.items():
        rows.append(row(category, metrics))
        for defect, values in (metrics.get("per_defect") or {}).items():
            rows.append(row(f"{defect} vs good", values, "defect"))
    if len(per_category) > 1:
        rows.append(row("mean", mean_metrics(per_category), "mean"))
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


TIMING_COLUMNS = (
    "category",
    "stage",
    "epochs",
    "batch size",
    "learning rate",
    "time (s)",
    "images/s",
    "peak memory (MiB)",
    "last epoch's loss",
    "inference (ms/image)",
)


def timings_table(per_category: dict[str, dict[str, Any]]) -> str:
    """An HTML table of each category's training stages (``training.stages`` of ``metrics.json``), its training
    time and its inference time per test image; ``""`` when no category recorded either."""
    rows = []
    for category, metrics in per_category.items():
        training = metrics.get("training") or {}
        inference = metrics.get("inference_ms_per_image")
        if not training and inference is None:
            continue
        for stage in training.get("stages") or []:
            loss = stage.get("loss") or []
            cells = (
                category,
                stage.get("name"),
                stage.get("epochs"),
                stage.get("batch_size"),
                _number(stage.get("learning_rate")),
                _number(stage.get("seconds"), 3),
                _number(stage.get("images_per_second"), 3),
                _mebibytes(stage.get("peak_memory_mib")),
                _number(loss[-1] if loss else None),
                "",
            )
            rows.append("<tr>" + "".join(f"<td>{_text(c)}</td>" for c in cells) + "</tr>")
        seconds = _number(training["seconds"], 3) if "seconds" in training else ""
        total = (category, "all" if training else "", "", "", "", seconds, "", "", "", _number(inference, 3))
        rows.append('<tr class="total">' + "".join(f"<td>{_text(c)}</td>" for c in total) + "</tr>")
    if not rows:
        return ""
    head = "".join(f"<th>{_text(c)}</th>" for c in TIMING_COLUMNS)
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def read_score_groups(path: Path) -> tuple[list[float], list[str]] | None:
    """The scores of ``scores/<category>.csv`` and each image's group: its ``defect`` (``good`` for normal images),
    or ``good``/``anomalous`` from its label where the file has no defect column; ``None`` when absent or empty."""
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    scores = [float(r["score"]) for r in rows]
    groups = [r.get("defect") or ("anomalous" if int(r["label"]) else "good") for r in rows]
    return scores, groups


def score_section(histogram: Histogram, threshold: float | None, category: str) -> str:
    """The score histogram (a figure with the plots extra, its counts in a table either way) and a summary per
    group: images, min / median / max score, and how many the image ``threshold`` flags as anomalous."""
    figure = plot_histogram(histogram, threshold, f"{category}: image scores")
    summary = []
    for name, values in histogram.scores.items():
        flagged = "-" if threshold is None else str(int(np.sum(values >= threshold)))
        cells = (name, len(values), *(_number(float(f(values))) for f in (np.min, np.median, np.max)), flagged)
        summary.append("<tr>" + "".join(f"<td>{_text(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{c}</th>" for c in ("group", "images", "min", "median", "max", "score ≥ image threshold"))
    bins = [
        "<tr><td>"
        + f"{_number(float(low))} – {_number(float(high))}</td>"
        + "".join(f"<td>{int(counts[b])}</td>" for counts in histogram.counts.values())
        + "</tr>"
        for b, (low, high) in enumerate(zip(histogram.edges[:-1], histogram.edges[1:]))
    ]
    bin_head = "".join(f"<th>{_text(c)}</th>" for c in ("score bin", *histogram.counts))
    threshold_text = (
        f"image threshold {_number(threshold)} (F1-optimal on the test set; score ≥ it: predicted anomalous)"
        if threshold is not None
        else "no image threshold (a single class in the test split)"
    )
    picture = (
        f'<img alt="score histogram of {_text(category)}" src="{png_uri(figure)}">'
        if figure
        else '<p class="note">No histogram figure (install the plots extra); the counts are below.</p>'
    )
    return (
        f"<h4>Scores</h4>{picture}"
        f'<p class="note">Good test images against each defect type; {threshold_text}.</p>'
        f'<table class="scores"><tr>{head}</tr>{"".join(summary)}</table>'
        f"<details{'' if figure else ' open'}><summary>Histogram counts</summary>"
        f'<table class="histogram"><tr>{bin_head}</tr>{"".join(bins)}</table></details>'
    )


def colour_bar_html(gallery: dict[str, Any], folder: Path) -> str:
    """The colour bar of a category's overlays: its image, five values from the scale's min to its max, and a
    marker at the pixel threshold when there is one within the scale."""
    vmin, vmax = gallery["vmin"], gallery["vmax"]
    ticks = "".join(
        f'<span class="tick" style="left:{100 * t:g}%">{_number(vmin + t * (vmax - vmin))}</span>'
        for t in (0, 0.25, 0.5, 0.75, 1)
    )
    marker = ""
    threshold = gallery.get("pixel_threshold")
    if threshold is not None and vmin <= threshold <= vmax and vmax > vmin:
        left = 100 * (threshold - vmin) / (vmax - vmin)
        marker = f'<div class="marker" style="left:{left:.3f}%"><span>pixel threshold {_number(threshold)}</span></div>'
    image = folder / gallery["colour_bar"]
    picture = f'<img alt="colour bar" src="{data_uri(image)}">' if image.is_file() else ""
    return (
        f'<div class="colourbar" data-vmin="{vmin!r}" data-vmax="{vmax!r}">{picture}{ticks}{marker}</div>'
        f'<p class="note">Colours: {_text(gallery["colour_map"])}; one scale for every overlay of the category, '
        f"from the lowest to the highest value of all its test anomaly maps.</p>"
    )


def _caption(entry: dict[str, Any]) -> str:
    """An image's caption: its score, label, predicted label (marked when wrong) and file."""
    predicted = entry.get("predicted")
    wrong = ""
    if predicted is not None and (predicted == "anomalous") != entry["anomalous"]:
        wrong = f' <span class="wrong">false {"positive" if predicted == "anomalous" else "negative"}</span>'
    return (
        f"<b>score {_number(entry['score'])}</b> · label: {_text(entry['label'])} · "
        f"predicted: {_text(predicted or 'no threshold')}{wrong}"
        f'<br><span class="file">{_text(Path(entry["path"]).parent.name)}/{_text(Path(entry["path"]).name)}</span>'
    )


def _figure(folder: Path, file: str, entry: dict[str, Any]) -> str:
    path = folder / file
    if not path.is_file():
        return ""
    return (
        f'<figure><img alt="{_text(path.stem)}" src="{data_uri(path)}">'
        f"<figcaption>{_caption(entry)}</figcaption></figure>"
    )


def gallery_section(gallery: dict[str, Any], folder: Path) -> str:
    """A category's gallery (``maps/<category>/gallery.json``): the colour bar, the worst cases, the sample, and the
    model's intermediate stages where it has some."""
    pixel = gallery.get("pixel_threshold")
    outline = gallery.get("predicted_outline") or [0, 255, 255]
    swatch = f'<span class="swatch" style="background:rgb({",".join(map(str, outline))})"></span>'
    predicted = (
        f"its predicted mask (map ≥ the pixel threshold {_number(pixel)}) outlined {swatch}"
        if pixel is not None
        else "no predicted-mask outline: metrics.json records no pixel_threshold for this category"
    )
    parts = [
        colour_bar_html(gallery, folder),
        '<p class="note">Each panel: the test image | its ground truth outlined '
        '<span class="swatch" style="background:#fff"></span> (white line, black rim) | the anomaly map on it, '
        f"{predicted}. Under it: the image score, the label (good or the defect type) and the label predicted at "
        f"the image threshold {_number(gallery.get('image_threshold'))}.</p>",
    ]
    shown: set[str] = set()
    for group, title in GROUPS.items():
        entries = [e for e in gallery["groups"].get(group, []) if group != "sample" or e["file"] not in shown]
        figures = "".join(_figure(folder, e["file"], e) for e in entries)
        shown.update(e["file"] for e in entries)
        if figures:
            parts.append(f'<h4>{_text(title)}</h4><div class="gallery {group}">{figures}</div>')
    tiles = gallery.get("stage_tiles")
    entries = {e["file"]: e for group in GROUPS for e in gallery["groups"].get(group, [])}
    figures = "".join(_figure(folder, e["stages"], e) for e in entries.values() if e.get("stages"))
    if tiles and figures:
        parts.append(
            f'<h4>Model stages</h4><p class="note">Left to right: {_text(" | ".join(tiles))} '
            f'(the map on the colour bar\'s scale).</p><div class="gallery stages">{figures}</div>'
        )
    return "<h4>Gallery</h4>" + "".join(parts)


def category_section(folder: Path, category: str, metrics: dict[str, Any]) -> str:
    """Everything the report shows of one category below the tables: the score histogram, the gallery (or the
    plain overlays of a run written before ``gallery.json``), the loss curves and the ROC/PRO curves."""
    name = _text(category)
    parts = [f'<h2 id="{_anchor(category)}">{name}</h2>']
    scores = read_score_groups(folder / "scores" / f"{category}.csv")
    if scores:
        parts.append(score_section(score_histogram(*scores), metrics.get("image_threshold"), category))
    maps = folder / "maps" / category
    gallery = read_gallery(maps)
    if gallery:
        parts.append(gallery_section(gallery, maps))
    elif maps.is_dir():  # a run written before gallery.json: its overlays, without scores
        panels = sorted(p for p in maps.glob("*.png") if not p.stem.endswith("_stages"))
        figures = "".join(
            f'<figure><img alt="{_text(p.stem)}" src="{data_uri(p)}"><figcaption>{_text(p.stem)}</figcaption></figure>'
            for p in panels
        )
        parts.append(f'<h4>Overlays</h4><div class="gallery">{figures}</div>')
    stages = (metrics.get("training") or {}).get("stages") or []
    losses = plot_losses(stages, f"{category}: training loss")
    if losses:
        parts.append(f'<h4>Training loss</h4><img alt="training loss of {name}" src="{png_uri(losses)}">')
    elif any(stage.get("loss") for stage in stages):
        parts.append('<p class="note">No loss figure (install the plots extra); the last loss is in Timings.</p>')
    figure = folder / "curves" / category / "curves.png"
    if figure.is_file():
        parts.append(f'<h4>Curves</h4><img alt="curves of {name}" src="{data_uri(figure)}">')
    elif (folder / "curves" / category).is_dir():
        parts.append(f'<h4>Curves</h4><p class="note">CSV only in curves/{name}/ (install the plots extra)</p>')
    return "".join(parts)


def render_report(folder: Path, config: dict[str, Any]) -> str:
    """The HTML page of the run in ``folder`` (its ``metrics.json``, ``scores/``, ``curves/`` and ``maps/``)."""
    results = json.loads((folder / "metrics.json").read_text())
    per_category: dict[str, dict[str, Any]] = results.get("categories", {})
    title = f"{results.get('model', '?')} on {results.get('data', '?')}"
    setting = "".join(
        f"<tr><td>{_text(n)}</td><td>{_text(v)}</td></tr>"
        for n, v in setting_rows(config, list(per_category), results.get("setting"))
    )
    notes = "".join(
        f'<p class="note">{_text(c)}: {_text(m["note"])}</p>' for c, m in per_category.items() if m.get("note")
    )
    timings = timings_table(per_category)
    timing_section = (
        f'<h2 id="timings">Training and timings</h2><p class="note">Per stage: wall time, throughput, peak memory '
        f"(CUDA's peak on a GPU; on a CPU the growth of the process's peak resident set) and the mean loss "
        f"of its last epoch; per category (bold): the whole training time and the "
        f"inference time per test image.</p>{timings}"
        if timings
        else ""
    )
    links = [("setting", "Setting"), ("metrics", "Metrics")] + ([("timings", "Timings")] if timings else [])
    links += [(_anchor(c), c) for c in per_category]
    nav = "".join(f'<a href="#{a}">{_text(t)}</a>' for a, t in links)
    sections = "".join(category_section(folder, c, m) for c, m in per_category.items())
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_text(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{_text(title)}</h1>
<p class="note">Run folder {_text(folder.resolve())}; report written {when}.</p>
<nav>{nav}</nav>
<h2 id="setting">Setting</h2>
<table class="setting">{setting}</table>
<h2 id="metrics">Metrics</h2>
<p class="note">Exact metrics (no binning). Indented rows: that defect type's test images against the good ones.
AUPRO up to the FPR limit above.</p>
{metrics_table(per_category)}
{notes}
{timing_section}
{sections}
</body></html>
"""


def write_report(folder: Path, config: dict[str, Any]) -> Path:
    """Write ``folder/report.html`` (see :func:`render_report`) atomically; return its path.

    Args:
        folder: a run folder holding ``metrics.json`` (and ``scores/``, ``curves/``, ``maps/`` where written).
        config: the run's plain config (the setting shown where ``metrics.json`` has no ``setting``).
    """
    page = render_report(folder, config).encode()
    path = folder / "report.html"
    write_atomically(path, lambda file: file.write(page))
    return path
