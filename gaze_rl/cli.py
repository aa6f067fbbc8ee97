"""The `gaze-rl` command: `gaze-rl train ...`, `gaze-rl eval ...` (`--help` on each)."""

from __future__ import annotations

import sys

import tyro

from gaze_rl.config import EvalConfig, TrainConfig


def main(argv: list[str] | None = None) -> None:
    try:
        config = tyro.extras.subcommand_cli_from_dict(
            {"train": TrainConfig, "eval": EvalConfig}, args=argv, prog="gaze-rl",
            description="Teach visual RL agents where to look (ManiSkill3 + SB3).",
        )
        if isinstance(config, TrainConfig):
            from gaze_rl.train import train

            train(config)
        else:
            from gaze_rl.evaluate import evaluate

            evaluate(config)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        # Bad input: one clear line, not a traceback.
        print(f"gaze-rl: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
