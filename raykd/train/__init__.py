"""Training: the one training function (setup, epoch, checkpoint), the tasks (data and evaluation), the one trial
path for 1..N workers, and MTKD's stage 1."""
