"""Reports of trained models: metrics, markdown tables and figures (PNG).

Shared by the classical and the CNN stages: :mod:`fmadask.report.metrics` scores predictions,
:mod:`fmadask.report.tables` lays results out as markdown, :mod:`fmadask.report.plots` draws
confusion matrices and scatter plots with matplotlib's object API (no pyplot global state, so it
is safe in worker threads and needs no display). :mod:`fmadask.report.multilabel` scores the
multi-label task (``genres_all``): thresholds chosen on validation, the genre-tree rule, the
label-prior baseline, the per-label table and picture, the report section.
"""
