"""gaze_rl: teach visual RL agents where to look.

A foveal Gaussian gaze on the CNN's last feature map, trained by return-guided contrastive
learning ("Gaze on the Prize", arXiv 2510.08442), as drop-in SB3 PPO and SAC on ManiSkill3.
"""

from gaze_rl.algos import GazePPO, GazeSAC
from gaze_rl.contrastive.learner import ContrastiveConfig
from gaze_rl.envs import EnvSpec, make_vec_env
from gaze_rl.methods import METHOD_NAMES as METHODS
from gaze_rl.nets.extractor import GazeExtractor, gaze_policy_kwargs

__all__ = ["METHODS", "ContrastiveConfig", "EnvSpec", "GazeExtractor", "GazePPO", "GazeSAC",
           "gaze_policy_kwargs", "make_vec_env"]
__version__ = "0.1.0"
