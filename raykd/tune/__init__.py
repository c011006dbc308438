"""Sweeps: Ray Tune + Optuna search spaces, the sweep driver, the shared script flags and the reports."""
