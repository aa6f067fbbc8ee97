# The two commands of README.md. Both set everything up first (scripts/setup.sh, idempotent).
VENV ?= .venv
TRAIN_ARGS ?=

.PHONY: setup train test test-fast lint

setup:
	bash scripts/setup.sh

# The main job on a sensible default: a short gaze-PPO run on PushCube-v1 from 64x64 pixels + state
# (end-effector control, where it learns within minutes on a CPU).
train: setup
	$(VENV)/bin/gaze-rl train --env-id PushCube-v1 --control-mode pd_ee_delta_pos --algo ppo --method gaze --total-timesteps 10000 $(TRAIN_ARGS)

# Lint the package, tests, benchmarks and results scripts, and type-check the package (seconds; settings in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/mypy gaze_rl

# The whole test-suite, slow tests (real ManiSkill3 rendering and training) included; lists the 15 slowest.
test: lint
	$(VENV)/bin/python -m pytest -q --durations=15

# Unit tests only (seconds).
test-fast: setup
	$(VENV)/bin/python -m pytest -q -m "not slow"
