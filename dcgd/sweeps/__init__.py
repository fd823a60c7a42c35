"""Ablation sweeps with Optuna, tracked in MLflow (``python -m dcgd sweep`` / ``compare``).

- ``spec``: the sweep spec (YAML): search space, sampler, objective, pruning, storage.
- ``space`` / ``objective``: the swept parameters and the number optimised.
- ``storage``: sqlite, PostgreSQL or journal-file studies, heartbeats, the workers' lock.
- ``runner``: the worker loop (exactly ``n_trials`` trials across any number of workers).
- ``tracking``: a parent MLflow run per study, a child run per trial.
- ``inference`` / ``training`` / ``function``: the three kinds of trial.
- ``pruning``: the Lightning callback that reports validation metrics to the trial.
- ``comparison``: tables and plots of a study's runs, for ``compare`` and the notebook.
"""
