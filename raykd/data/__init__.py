"""Data: classification and SR datasets, replayable views, MATLAB-compatible degradation, built-ins, downloads."""
