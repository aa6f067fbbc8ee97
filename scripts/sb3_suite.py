"""Runs SB3's own tests with GazePPO / GazeSAC in place of PPO / SAC, nothing else changed.

SB3's tests ship in its sdist, not in the wheel:

    pip download --no-deps --no-binary :all: stable-baselines3==2.9.2 -d /tmp/sb3src
    tar xzf /tmp/sb3src/stable_baselines3-2.9.2.tar.gz -C /tmp/sb3src
    python scripts/sb3_suite.py /tmp/sb3src/stable_baselines3-2.9.2/tests [pytest args]

The chosen test files are copied into a temporary directory next to a conftest.py that sets
`stable_baselines3.PPO = GazePPO` and `stable_baselines3.SAC = GazeSAC` before the test modules
import them; the results are in results/sb3_suite/README.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FILES = ("test_cnn.py", "test_dict_env.py", "test_save_load.py", "test_predict.py", "test_callbacks.py")
CONFTEST = '''
import stable_baselines3
import torch

from gaze_rl import GazePPO, GazeSAC

torch.set_num_threads(1)
stable_baselines3.PPO, stable_baselines3.SAC = GazePPO, GazeSAC
'''


def main(argv: list[str]) -> int:
    if not argv or not (Path(argv[0]) / "test_cnn.py").is_file():
        print(__doc__)
        return 2
    source, pytest_args = Path(argv[0]), argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        for name in FILES:
            shutil.copy(source / name, tmp)
        (Path(tmp) / "conftest.py").write_text(CONFTEST)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # this checkout's gaze_rl
        return subprocess.call([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE",
                                *pytest_args, tmp], cwd=tmp, env=env)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
