"""Imitation pretraining with attention objectives (`gaze-rl demos`, `gaze-rl pretrain`).

- demos.py: demonstrations from ManiSkill3's motion planners (or a ManiSkill trajectory file),
  re-rendered in the RL env with segmentation on the side;
- saliency.py: oracle saliency from segmentation, user heatmaps, temporal aggregation, mapping to
  the feature grid;
- objectives.py: gaze-KL (gaze-regularised VLAs) and saliency-MSE (AutoFocus-IL), or none;
- bc.py: the behaviour-cloning loss, training tensors and evaluation; checkpoint.py: the file
  `gaze-rl train --init-from` loads (what must match: gaze_rl.build.train_architecture).

The commands themselves: gaze_rl.commands.demos and gaze_rl.commands.pretrain.

The segmented env, the task-relevant actors and attention-on-target live in gaze_rl.segmentation
(also used by eval, analyze and RL training).

Modules import ManiSkill lazily; import what you need from the submodules.
"""
