"""Readable per-task hyperparameter presets (TOML), shipped as package data gaze_rl.experiments."""
