"""Turning runs into tables, figures and pages: metric tables (``tables``), a run's ``report.html``
(``run_report``), heat-map overlays (``overlays``), curve files and plots (``curves``, ``plots``), and the
research commands over finished runs: a sweep's table (``collect``), significance between runs (``compare``)
and the papers' tables beside ours (``reproduce``; ``paper_figures`` reads the papers' figures from each family's
folder).

Reads what runs wrote (``metrics.json``, ``scores/``, ``curves/``); never trains (``reproduce`` launches
``train.py`` as a separate process).
"""
