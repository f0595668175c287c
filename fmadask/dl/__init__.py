"""The CNN stage: PyTorch DDP on the featurize job's log-mel spectrogram shards.

- :mod:`fmadask.dl.config` -- :class:`TrainConfig`, the architectures' names, CLI options;
- :mod:`fmadask.dl.dataset` -- memory-mapped segments of the shards (random for training,
  covering each clip for evaluation);
- :mod:`fmadask.dl.nets` -- ``naive``, ``naive_bn`` (the study's), ``shortchunk_res`` and
  ``vgg_gap`` (the default of new work);
- :mod:`fmadask.dl.trainer` -- the function each DDP rank runs (also ``python -m
  fmadask.dl.trainer`` under torchrun); :mod:`fmadask.dl.ranks` (a rank's place, device and
  failure), :mod:`fmadask.dl.checkpoint` (resume and checkpoints), :mod:`fmadask.dl.callbacks`
  (hooks into its loop);
- :mod:`fmadask.dl.launch` -- :func:`run_cnn`: one rank per Dask worker;
- :mod:`fmadask.dl.evaluate` -- segment votes and scores; :mod:`fmadask.dl.predict` -- saved
  models and :func:`~fmadask.dl.predict.predict_cnn` (``fmadask predict`` reaches it through
  :mod:`fmadask.predict`).

The spectrograms are read through :mod:`fmadask.runfolder`; this package imports neither
:mod:`fmadask.pipeline` nor :mod:`fmadask.ml` (nor do they import it). Nothing is imported here,
so that importing the package does not import torch (:mod:`fmadask.dl.config`, the options and
the architectures' names, is torch-free).
"""
