"""The `gaze-rl` command: `gaze-rl train|eval|analyze|bench|reference|demos|pretrain ...` (`--help` on each).

Each subcommand is a config dataclass (gaze_rl.configuration.commands) and a run function in gaze_rl.commands,
imported only once its subcommand is chosen, so that `--help` and bad options answer without
loading torch, SB3 or ManiSkill.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import tyro

from gaze_rl.configuration.commands import (
    AnalyzeConfig,
    BenchConfig,
    DemosConfig,
    EvalConfig,
    PretrainConfig,
    ReferenceConfig,
    TrainConfig,
)
from gaze_rl.errors import ConfigError, TrainingInterrupted
from gaze_rl.runtime import tune_malloc
from gaze_rl.validation import deferred_validation

# subcommand -> (its config, "module:function" that runs it)
COMMANDS: dict[str, tuple[type, str]] = {
    "train": (TrainConfig, "gaze_rl.commands.train:train"),
    "eval": (EvalConfig, "gaze_rl.commands.evaluate:evaluate"),
    "analyze": (AnalyzeConfig, "gaze_rl.commands.analyze:analyze"),
    "bench": (BenchConfig, "gaze_rl.commands.bench:bench"),
    "reference": (ReferenceConfig, "gaze_rl.commands.reference:reference"),
    "demos": (DemosConfig, "gaze_rl.commands.demos:generate"),
    "pretrain": (PretrainConfig, "gaze_rl.commands.pretrain:pretrain"),
}


def parse(argv: list[str] | None = None) -> Any:
    """The validated config of the chosen subcommand (tyro exits on --help and on parse errors;
    a bad value raises ConfigError here, outside tyro, so that it reads as one line)."""
    with deferred_validation():
        config = tyro.extras.subcommand_cli_from_dict(
            {name: config_class for name, (config_class, _) in COMMANDS.items()}, args=argv, prog="gaze-rl",
            description="Teach visual RL agents where to look (ManiSkill3 + SB3).",
        )
    config.validate()
    return config


def run(config: Any) -> None:
    """Runs the subcommand whose config this is."""
    target = next(where for config_class, where in COMMANDS.values() if type(config) is config_class)
    module, function = target.split(":")
    getattr(importlib.import_module(module), function)(config)


def main(argv: list[str] | None = None) -> None:
    tune_malloc()  # before torch allocates anything (gaze_rl.runtime)
    try:
        run(parse(argv))
    except (ConfigError, FileExistsError, FileNotFoundError) as err:
        # Bad input: one clear line, not a traceback (anything else keeps its traceback).
        print(f"gaze-rl: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except (TrainingInterrupted, KeyboardInterrupt) as err:
        # Ctrl-C: what was saved and how to go on, no traceback.
        print(f"\ngaze-rl: interrupted{': ' + str(err) if str(err) else ''}", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
