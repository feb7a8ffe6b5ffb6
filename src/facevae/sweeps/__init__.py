"""Sweeps over training settings with Optuna.

* :mod:`~facevae.sweeps.search_space` -- ``--param NAME=V1,V2`` over the flags of ``facevae train``;
* :mod:`~facevae.sweeps.objectives` -- what a trial returns (ELBO, β-VAE score, MIG, DCI, ...);
* :mod:`~facevae.sweeps.study` -- the study, one trial, the workers;
* :mod:`~facevae.sweeps.storage` -- RDB storage with heartbeats; killed workers' trials are retried;
* :mod:`~facevae.sweeps.budget` -- a trial budget shared by every worker;
* :mod:`~facevae.sweeps.pruning` -- the Lightning callback that reports to Optuna and prunes;
* :mod:`~facevae.reporting.sweep_report` -- ``facevae sweep-report``.

The disentanglement suite of one trained run is :func:`facevae.metrics.run.compute_disentanglement`.
"""
