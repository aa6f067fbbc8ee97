"""The `gaze-rl` command: `gaze-rl train|eval|analyze|bench|reference|demos|pretrain ...` (`--help` on each).

Each subcommand is a config dataclass (gaze_rl.config) and a function that runs it; the
functions import their modules lazily so that `--help` and bad input answer fast.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import tyro

from gaze_rl.config import AnalyzeConfig, BenchConfig, DemosConfig, EvalConfig, PretrainConfig, ReferenceConfig, TrainConfig


def _train(cfg: TrainConfig) -> None:
    from gaze_rl.train import train

    train(cfg)


def _eval(cfg: EvalConfig) -> None:
    from gaze_rl.evaluate import evaluate

    evaluate(cfg)


def _analyze(cfg: AnalyzeConfig) -> None:
    from gaze_rl.analysis import analyze

    analyze(cfg)


def _bench(cfg: BenchConfig) -> None:
    from gaze_rl.bench import bench

    bench(cfg)


def _reference(cfg: ReferenceConfig) -> None:
    from gaze_rl.reference import check_all

    if any(check_all(cfg.regenerate).values()):
        raise SystemExit(1)


def _demos(cfg: DemosConfig) -> None:
    from gaze_rl.imitation.demos import generate

    generate(cfg)


def _pretrain(cfg: PretrainConfig) -> None:
    from gaze_rl.imitation.bc import pretrain

    pretrain(cfg)


COMMANDS: dict[str, tuple[type, Callable[[Any], None]]] = {
    "train": (TrainConfig, _train),
    "eval": (EvalConfig, _eval),
    "analyze": (AnalyzeConfig, _analyze),
    "bench": (BenchConfig, _bench),
    "reference": (ReferenceConfig, _reference),
    "demos": (DemosConfig, _demos),
    "pretrain": (PretrainConfig, _pretrain),
}


def main(argv: list[str] | None = None) -> None:
    from gaze_rl.train import TrainingInterrupted

    try:
        config = tyro.extras.subcommand_cli_from_dict(
            {name: config_class for name, (config_class, _) in COMMANDS.items()}, args=argv, prog="gaze-rl",
            description="Teach visual RL agents where to look (ManiSkill3 + SB3).",
        )
        runner = next(run for config_class, run in COMMANDS.values() if type(config) is config_class)
        runner(config)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        # Bad input: one clear line, not a traceback.
        print(f"gaze-rl: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except (TrainingInterrupted, KeyboardInterrupt) as err:
        # Ctrl-C: what was saved and how to go on, no traceback.
        print(f"\ngaze-rl: interrupted{': ' + str(err) if str(err) else ''}", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
