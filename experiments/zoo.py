"""rl_zoo3 hyperparameters for the gaze architecture on Atari, SB3's standard image envs
(84x84 grayscale, 4 stacked frames, `CnnPolicy`): rl_zoo3's own PPO Atari entry with the gaze
extractor in policy_kwargs. Needs `pip install rl_zoo3 ale-py`.

    # plain SB3 PPO with the gaze network (method foveal: the gaze trained by RL)
    python -m rl_zoo3.train --algo ppo --env PongNoFrameskip-v4 -conf gaze_rl.experiments.zoo
    # GazePPO (method gaze: + the return-guided contrastive loss), same hyperparameters
    python -m gaze_rl.zoo --algo gaze_ppo --env PongNoFrameskip-v4 -conf gaze_rl.experiments.zoo

rl_zoo3 reads `hyperparams` (a module path, as above, or this file's path); its "atari" entry
applies to every Atari id. GazePPO takes the same entry (its contrastive loss uses the defaults
of ContrastiveConfig; add e.g. `contrastive={"buffer_size": 50_000}` for it).
"""

from gaze_rl.nets.extractor import gaze_policy_kwargs

hyperparams = {
    # rl_zoo3 2.9's hyperparams/ppo.yml "atari" entry, plus the gaze extractor.
    "atari": dict(
        env_wrapper=["stable_baselines3.common.atari_wrappers.AtariWrapper"],
        frame_stack=4,
        policy="CnnPolicy",
        n_envs=8,
        n_steps=128,
        n_epochs=4,
        batch_size=256,
        n_timesteps=10_000_000,
        learning_rate="lin_2.5e-4",
        clip_range="lin_0.1",
        vf_coef=0.5,
        ent_coef=0.01,
        policy_kwargs=gaze_policy_kwargs("foveal"),
    ),
}
