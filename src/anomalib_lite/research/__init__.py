"""The research commands over finished runs: a sweep's table (``collect``, ``scripts/collect.py``), significance
between runs (``compare``, ``scripts/compare.py``) and the papers' tables beside ours (``reproduce``,
``scripts/reproduce.py``; ``paper_figures`` reads each family's ``paper_tables.yaml``).

They read what runs wrote (``metrics.json``, ``scores/``), and decide what is comparable from the setting each run
recorded (:mod:`anomalib_lite.pipeline.setting`); ``reproduce`` launches ``train.py`` as separate processes.
"""
