"""The `gaze-rl` subcommands, one module each, each with the function that runs its config:
train, evaluate (`eval`), analyze, bench, reference, demos, pretrain.

Commands build on gaze_rl.build and the packages under it (configuration, runs, bench, envs, ...); none imports another command as a
library (reference runs the train command, as bench's processes do).
"""
