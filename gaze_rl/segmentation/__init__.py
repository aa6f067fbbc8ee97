"""What the task is in a frame, and how much of the policy's attention is on it.

- `envs`: the RL env with ManiSkill segmentation, camera matrices and actor positions on the side;
- `targets`: task-relevant actors, their pixel masks, their coverage of feature-grid cells;
- `on_target`: the policy's spatial attention and the fraction of it on the targets.

Used by imitation (oracle saliency), `eval`, `analyze` and RL training (attention-on-target probes).
"""
