"""`make_vec_env`: a ManiSkill3 task id -> an SB3 VecEnv with `{rgb, state}` observations."""

from __future__ import annotations

import difflib
import functools
import signal
from collections.abc import Callable
from typing import Any

import torch
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecEnvWrapper

from gaze_rl.envs.batched import ManiSkillBatchedVecEnv
from gaze_rl.envs.fast_render import resolve_render_quality
from gaze_rl.envs.single import default_render_backend, make_single_env
from gaze_rl.envs.spec import OBS_MODES, SIM_BACKENDS, TESTED_ENV_IDS, EnvSpec, check_distract_strength
from gaze_rl.envs.variants import VARIANTS, task_env_id
from gaze_rl.errors import ConfigError
from gaze_rl.runtime import tune_malloc


class WorkerGuard(VecEnvWrapper):
    """Turns a dead env worker process into an error that names the task and seed (SB3 would
    raise a bare EOFError or BrokenPipeError from its pipe)."""

    def __init__(self, venv: VecEnv, env_id: str, seed: int | None):
        super().__init__(venv)
        self.env_id, self.seed_value = env_id, seed

    def _died(self, err: BaseException) -> RuntimeError:
        alive = [p.is_alive() for p in getattr(self.venv, "processes", [])]
        dead = [i for i, ok in enumerate(alive) if not ok]
        return RuntimeError(
            f"env worker process(es) {dead or '?'} of {self.env_id} (seed {self.seed_value}) died "
            f"({type(err).__name__}); check memory and the Vulkan driver, then resume with gaze-rl train --resume"
        )

    def reset(self):
        try:
            return self.venv.reset()
        except (EOFError, ConnectionError, BrokenPipeError) as err:
            raise self._died(err) from None

    def step_async(self, actions) -> None:
        try:
            self.venv.step_async(actions)
        except (EOFError, ConnectionError, BrokenPipeError) as err:
            raise self._died(err) from None

    def step_wait(self):
        try:
            return self.venv.step_wait()
        except (EOFError, ConnectionError, BrokenPipeError) as err:
            raise self._died(err) from None


def resolve_sim_backend(sim_backend: str) -> str:
    """Checks a backend name and resolves 'auto' for this machine."""
    if sim_backend not in SIM_BACKENDS:
        raise ConfigError(f"unknown sim_backend {sim_backend!r}; valid choices: {', '.join(SIM_BACKENDS)}")
    if sim_backend == "auto":
        return "physx_cuda" if torch.cuda.is_available() else "physx_cpu"
    return sim_backend


def check_env_id(env_id: str) -> None:
    """Raises a ConfigError listing the valid ids when `env_id` is not a registered ManiSkill3 task."""
    import mani_skill.envs  # noqa: F401  (registers the tasks)
    from mani_skill.utils.registration import REGISTERED_ENVS

    if env_id in REGISTERED_ENVS:
        return
    close = difflib.get_close_matches(env_id, REGISTERED_ENVS, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    # One short line: the registry holds ~100 ids (print them with mani_skill's REGISTERED_ENVS).
    raise ConfigError(
        f"unknown env id {env_id!r}.{hint} Tested: {', '.join(TESTED_ENV_IDS)}; "
        f"{len(REGISTERED_ENVS)} registered ManiSkill3 ids are listed by: python -c \"import mani_skill.envs; "
        "from mani_skill.utils.registration import REGISTERED_ENVS; print(*sorted(REGISTERED_ENVS))\""
    )


def check_spec(spec: EnvSpec) -> None:
    """Validates an EnvSpec before any process is started."""
    if spec.obs_mode not in OBS_MODES:
        raise ConfigError(f"unknown obs_mode {spec.obs_mode!r}; valid choices: {', '.join(OBS_MODES)}")
    if spec.num_envs < 1:
        raise ConfigError(f"num_envs must be >= 1 (got {spec.num_envs})")
    if spec.image_size < 16:
        raise ConfigError(f"image_size must be >= 16 pixels (got {spec.image_size}); 64 or 128 are usual")
    resolve_sim_backend(spec.sim_backend)
    check_env_id(spec.env_id)
    if spec.variant not in VARIANTS:
        raise ConfigError(f"unknown variant {spec.variant!r}; valid choices: {', '.join(VARIANTS)}")
    check_distract_strength(spec.distract_strength)
    try:
        resolve_render_quality(spec.render_quality, default_render_backend())
    except ValueError as err:  # names the choices
        raise ConfigError(str(err)) from None
    if spec.render_quality == "fast" and resolve_sim_backend(spec.sim_backend) == "physx_cuda":
        raise ConfigError("render_quality 'fast' is for CPU physics (one process per env); with physx_cuda "
                         "SAPIEN renders on the GPU: use render_quality 'full' or 'auto', or sim_backend 'physx_cpu'")
    if spec.variant == "distract" and resolve_sim_backend(spec.sim_backend) == "physx_cuda":
        raise ConfigError("variant 'distract' changes materials and lights per episode, which the sub-envs of a "
                          "GPU-batched sim share: use --sim-backend physx_cpu (GPU rendering still works)")
    if spec.gaze_targets and resolve_sim_backend(spec.sim_backend) == "physx_cuda":
        raise ConfigError("the oracle gaze's targets (method gaze-oracle) are projected per CPU env; "
                          "use --sim-backend physx_cpu (GPU rendering still works)")


def ignoring_ctrl_c(make_env: Callable[[], Any]) -> Any:
    """Builds an env inside a worker process that ignores Ctrl-C: the terminal sends it to every
    process, and SB3's worker would exit on it; the trainer stops the run at a rollout start.
    The worker gets gaze_rl's allocator setting too (gaze_rl.runtime.tune_malloc)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tune_malloc()
    return make_env()


def make_vec_env(spec: EnvSpec | None = None, *, seed: int | None = None, **overrides: Any) -> VecEnv:
    """Builds an SB3 VecEnv for a ManiSkill3 task rendered from pixels.

    Observations are `{"rgb": uint8 (H, W, 3 * cameras), "state": float32 (D,)}` ("state"
    only with obs_mode "rgb+state"). Each finished episode reports `episode` {r, l},
    `success_once`, `success_at_end` and `is_success` once, in the info of its last step.

    Example: `make_vec_env(env_id="PushT-v1", num_envs=2, image_size=64)`.
    """
    spec = EnvSpec(**{**(spec.__dict__ if spec else {}), **overrides})
    check_spec(spec)
    backend = resolve_sim_backend(spec.sim_backend)
    include_state = spec.obs_mode == "rgb+state"
    if backend == "physx_cuda":
        import gymnasium as gym
        import mani_skill.envs  # noqa: F401
        from mani_skill.utils.wrappers.flatten import FlattenRGBDObservationWrapper

        env = gym.make(
            task_env_id(spec.env_id, spec.variant), num_envs=spec.num_envs,
            obs_mode="rgb+state_dict" if spec.privileged_state else "rgb", sim_backend="physx_cuda",
            render_mode="rgb_array", control_mode=spec.control_mode,
            sensor_configs=dict(width=spec.image_size, height=spec.image_size), enhanced_determinism=True,
            **spec.env_kwargs,
        )
        env = FlattenRGBDObservationWrapper(env, rgb=True, depth=False, state=include_state)
        vec_env: VecEnv = ManiSkillBatchedVecEnv(
            env, ignore_terminations=spec.ignore_terminations, reward_scale=spec.reward_scale
        )
    else:
        # Render on the GPU when there is one, even with CPU physics.
        kwargs: dict[str, Any] = dict(
            image_size=spec.image_size, include_state=include_state, control_mode=spec.control_mode,
            reward_scale=spec.reward_scale, ignore_terminations=spec.ignore_terminations,
            render_quality=spec.render_quality, render_backend=default_render_backend(),
            env_kwargs={**spec.env_kwargs, **spec.variant_kwargs()},
            privileged_state=spec.privileged_state, gaze_targets=spec.gaze_targets,
        )
        env_fns = [lambda: make_single_env(spec.env_id, variant=spec.variant, **kwargs) for _ in range(spec.num_envs)]
        # physx_cpu holds one env per process; a single env stays in-process (cheaper, debuggable).
        if spec.num_envs > 1:
            worker_fns = [functools.partial(ignoring_ctrl_c, fn) for fn in env_fns]
            vec_env = WorkerGuard(SubprocVecEnv(worker_fns, start_method="forkserver"), spec.env_id, seed)
        else:
            vec_env = DummyVecEnv(env_fns)
    if seed is not None:
        vec_env.seed(seed)
    return vec_env
