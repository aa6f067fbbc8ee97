"""SB3 algorithms with return-guided gaze: GazePPO and GazeSAC."""

from gaze_rl.algos.ppo import GazePPO
from gaze_rl.algos.sac import GazeSAC

__all__ = ["GazePPO", "GazeSAC"]
