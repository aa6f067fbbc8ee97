"""A run's files: what a training run writes (runlog: run directory, TensorBoard, curve CSV;
checkpoints: crash-safe saves and resume), the episode loop that runs a saved policy (episodes),
and attention drawn over frames (visualize)."""
