"""Fusion of the classical and the CNN stages: one model from the best of each.

- :mod:`fmadask.fusion.pool` -- the pooling rule and its weight fitted on validation (numpy only);
- :mod:`fmadask.fusion.stage` -- :func:`fuse`: reads a run folder's classical and CNN outputs,
  writes ``RUN_DIR/fusion`` (a model ``fmadask predict`` accepts, ``results.csv``,
  ``report.md``); :func:`predict_fusion` scores audio files with both parts.

This package sits above the two stages, like :mod:`fmadask.predict`, :mod:`fmadask.run` and the
CLI: it reads what they wrote and imports both (their loaders and predictors). Neither
:mod:`fmadask.ml` nor :mod:`fmadask.dl` imports it, or each other.
"""
