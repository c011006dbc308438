"""Data: datasets in their published layouts, the persistent store, splits decoded once, replayable views computed
for whole batches on the device, MATLAB-compatible degradation, built-in demos, downloads."""
