"""A run stopped after its metrics, while writing its curves and maps: resuming it writes what was missing."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from anomalib_lite.configs import CONFIG_DIR
from anomalib_lite.pipeline import evaluation
from anomalib_lite.pipeline.training import run_config, train_run

from conftest import TINY


class Images(HTMLParser):
    """The ``src`` of every ``<img>`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def report_images(folder: Path) -> list[str]:
    page = Images()
    page.feed((folder / "report.html").read_text())
    return page.sources


def outputs(folder: Path) -> dict[str, bytes]:
    """Every file a run wrote but its TensorBoard logs (their names hold the time), with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.parts[len(folder.parts)] != "tensorboard"
    }


def metrics_without_timing(folder: Path) -> dict:
    results = json.loads((folder / "metrics.json").read_text())
    for metrics in results["categories"].values():
        metrics.pop("inference_ms_per_image")
        training = metrics.get("training", {})
        training.pop("seconds", None)
        for stage in training.get("stages", []):  # the losses stay: a resumed run repeats them
            for measured in ("seconds", "images_per_second", "peak_memory_mib"):
                stage.pop(measured)
    return results


@pytest.mark.slow
def test_a_run_stopped_while_writing_its_maps_resumes_to_the_outputs_of_an_uninterrupted_one(tmp_path, monkeypatch):
    args = [*TINY, "category=brick", f"data.root={tmp_path / 'data'}"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        straight, stopped = tmp_path / "straight", tmp_path / "stopped"
        for folder in (straight, stopped):
            folder.mkdir()
        train_run(*run_config(compose("train", overrides=args)), straight)

        def killed(*args, **kwargs):  # the process dies after metrics.json and the curve CSVs, before the maps
            raise KeyboardInterrupt

        with monkeypatch.context() as patch:
            patch.setattr(evaluation, "save_maps", killed)
            with pytest.raises(KeyboardInterrupt):
                train_run(*run_config(compose("train", overrides=args)), stopped)
        assert (stopped / "metrics.json").is_file() and (stopped / "curves" / "brick" / "pixel_roc.csv").is_file()
        assert not (stopped / "maps").exists() and not (stopped / "curves" / "brick" / "curves.png").exists()

        train_run(*run_config(compose("train", overrides=[*args, "trainer.resume=true"])), stopped)

    expected, written = outputs(straight), outputs(stopped)
    assert sorted(written) == sorted(expected)
    gallery = json.loads(expected["maps/brick/gallery.json"])
    drawn = {f"maps/brick/{e['file']}" for group in gallery["groups"].values() for e in group}
    assert {name for name in expected if name.startswith("maps/brick/")} == drawn | {
        "maps/brick/gallery.json",
        "maps/brick/colorbar.png",
    }
    assert {"curves/brick/curves.png", "curves/brick/pro.csv", "report.html"} <= set(expected)
    for name in expected:
        if name.startswith(("maps/", "curves/", "scores/")):
            assert written[name] == expected[name], name
    assert metrics_without_timing(stopped) == metrics_without_timing(straight)  # no pending list left either
    # The score histogram, the colour bar, each overlay, the curves, the training loss.
    assert report_images(stopped) == report_images(straight) and len(report_images(straight)) == 4 + len(drawn)
    assert list((stopped / "tensorboard" / "brick").glob("events.out.tfevents.*"))
