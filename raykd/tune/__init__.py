"""Sweeps: Ray Tune + Optuna over the methods' own search spaces, the seeds stage, the reports, the sweep's teacher,
and declarative sweep specs with their command line."""
