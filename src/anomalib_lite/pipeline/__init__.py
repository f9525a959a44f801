"""One run's orchestration over the library: the run config (``config``), training every category
(``training``), evaluation with its outputs (``evaluation``), what the run really ran (``setting``), a trained
model for inference (``inference``), scoring image files (``prediction``) and deployable files (``deploy``).

The command line (:mod:`anomalib_lite.cli`) is a thin layer over these; nothing here knows of Hydra.
"""
