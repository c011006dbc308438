"""Teachers: specs, the Ray actors that host them, where trainers get their outputs, and the output cache."""
