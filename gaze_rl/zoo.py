"""rl_zoo3's `train` with GazePPO and GazeSAC as the algorithms `gaze_ppo` and `gaze_sac`:

    python -m gaze_rl.zoo --algo gaze_ppo --env PongNoFrameskip-v4 -conf gaze_rl.experiments.zoo

Every other option is rl_zoo3's (`python -m gaze_rl.zoo --help`). Needs `pip install rl_zoo3`.
"""

from __future__ import annotations

from gaze_rl.algos import GazePPO, GazeSAC
from gaze_rl.runtime import tune_malloc


def main() -> None:
    tune_malloc()  # gaze_rl.runtime
    from rl_zoo3.train import train
    from rl_zoo3.utils import ALGOS

    # rl_zoo3 looks algorithms up in this dict (its --algo choices come from it too).
    ALGOS.update(gaze_ppo=GazePPO, gaze_sac=GazeSAC)
    train()


if __name__ == "__main__":
    main()
