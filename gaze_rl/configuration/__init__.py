"""What a command is told: the commands' configs (commands: tyro dataclasses, one field docstring
per `--help` line), the method table (methods) and the per-task presets of experiments/*.toml
(presets). Torch-free, so that the CLI parses without loading the heavy stack; the configs'
validation style and error type are gaze_rl.validation and gaze_rl.errors."""
