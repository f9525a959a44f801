"""A run's outputs for people: metric tables (``tables``), its ``report.html`` (``run_report``), heat-map
overlays (``overlays``) and the worst-case gallery they are drawn for (``gallery``), curve files and plots (``curves``,
``plots``; ``scripts/plot.py`` draws several runs' curves on one figure). The research commands that compare runs
and papers are in :mod:`anomalib_lite.research`.
"""
