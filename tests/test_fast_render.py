"""Fast software rendering (level-of-detail meshes + cheap vertex shader): the geometry is
simplified where it should be and nowhere else, and frames and segmentation stay those of the
same simulated state."""

from __future__ import annotations

import types

import numpy as np
import pytest

from gaze_rl.envs.fast_render import (
    CELL_METRES,
    cluster_vertices,
    planar_quad,
    resolve_render_quality,
    simplify_render_bodies,
)


def grid(n: int, size: float = 2.0) -> tuple[np.ndarray, ...]:
    """A flat n x n quad grid in z = 0, UVs = 3 * (x, y) (tiled texture), facing +z."""
    xs = np.linspace(-size / 2, size / 2, n + 1)
    x, y = np.meshgrid(xs, xs, indexing="ij")
    vertices = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], axis=1).astype(np.float32)
    index = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = index[:-1, :-1].ravel(), index[1:, :-1].ravel(), index[1:, 1:].ravel(), index[:-1, 1:].ravel()
    triangles = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)]).astype(np.uint32)
    normals = np.tile(np.float32([0, 0, 1]), (len(vertices), 1))
    return vertices, triangles, normals, (3 * vertices[:, :2]).astype(np.float32)


def sphere(n: int = 60) -> tuple[np.ndarray, ...]:
    """A UV sphere of radius 0.1 m with ~2 n^2 triangles."""
    theta, phi = np.meshgrid(np.linspace(0, np.pi, n + 1), np.linspace(0, 2 * np.pi, n + 1), indexing="ij")
    normals = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], -1).reshape(-1, 3)
    index = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = index[:-1, :-1].ravel(), index[1:, :-1].ravel(), index[1:, 1:].ravel(), index[:-1, 1:].ravel()
    triangles = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)]).astype(np.uint32)
    uvs = np.stack([theta.ravel(), phi.ravel()], 1)
    return (0.1 * normals).astype(np.float32), triangles, normals.astype(np.float32), uvs.astype(np.float32)


def face_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    v = vertices[triangles]
    return np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])


def test_render_quality_auto_is_fast_only_in_software():
    assert resolve_render_quality("auto", "cpu") == "fast"
    assert resolve_render_quality("auto", "gpu") == "full"
    assert resolve_render_quality("full", "cpu") == "full"
    with pytest.raises(ValueError, match="valid choices: auto, fast, full"):
        resolve_render_quality("medium", "cpu")


def test_planar_grid_becomes_two_triangles_with_the_same_uv_mapping():
    vertices, triangles, normals, uvs = grid(100)
    quad = planar_quad(vertices, triangles, normals, uvs)
    assert quad is not None
    q_vertices, q_triangles, q_normals, q_uvs = quad
    assert len(q_triangles) == 2 and len(q_vertices) == 4
    np.testing.assert_allclose(q_uvs, 3 * q_vertices[:, :2], atol=1e-5)  # same affine UV map
    assert {tuple(np.round(v[:2], 5)) for v in q_vertices} == {(-1, -1), (1, -1), (1, 1), (-1, 1)}
    assert (face_normals(q_vertices, q_triangles) @ [0, 0, 1] > 0).all()  # same side faces the camera
    flipped = planar_quad(vertices, triangles[:, ::-1].copy(), -normals, uvs)
    assert (face_normals(flipped[0], flipped[1]) @ [0, 0, 1] < 0).all()


def test_non_planar_or_non_affine_meshes_are_not_quads():
    assert planar_quad(*sphere(10)) is None
    vertices, triangles, normals, uvs = grid(10)
    bent = uvs.copy()
    bent[:, 0] = vertices[:, 0] ** 2  # UVs not an affine function of position
    assert planar_quad(vertices, triangles, normals, bent) is None
    holed = triangles[: len(triangles) // 2 - 3]  # does not fill its bounding rectangle
    assert planar_quad(vertices, holed, normals, uvs) is None


def test_clustering_cuts_triangles_and_stays_on_the_surface():
    vertices, triangles, normals, uvs = sphere(60)
    v, t, n, uv = cluster_vertices(vertices, triangles, normals, uvs, cell=CELL_METRES)
    assert len(t) < len(triangles) / 4
    assert t.max() < len(v) and len(v) == len(n) == len(uv)
    assert len(np.unique(t)) == len(v)  # every vertex is used (lavapipe shades them all)
    # merged vertices stay within a cell of the sphere; normals stay unit and outward
    assert np.abs(np.linalg.norm(v, axis=1) - 0.1).max() < CELL_METRES
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1, atol=1e-5)
    assert ((v / np.linalg.norm(v, axis=1, keepdims=True) * n).sum(1) > 0.7).all()
    start = np.argmin(t, axis=1)[:, None]
    same_winding = np.take_along_axis(t, (start + np.arange(3)) % 3, axis=1)
    assert len(np.unique(same_winding, axis=0)) == len(t)  # no triangle drawn twice
    assert (t[:, 0] != t[:, 1]).all() and (t[:, 1] != t[:, 2]).all()
    # winding kept: faces still point outwards
    centres = v[t].mean(axis=1)
    assert ((face_normals(v, t) * centres).sum(1) > 0).mean() > 0.98


def test_scene_with_only_small_meshes_is_left_unchanged():
    import sapien

    scene = sapien.Scene()
    entity = sapien.Entity()
    body = sapien.render.RenderBodyComponent()
    body.attach(sapien.render.RenderShapeBox([0.02, 0.02, 0.02], sapien.render.RenderMaterial()))
    entity.add_component(body)
    scene.add_entity(entity)
    big = sapien.Entity()
    big_body = sapien.render.RenderBodyComponent()
    vertices, triangles, normals, uvs = sphere(80)
    big_body.attach(sapien.render.RenderShapeTriangleMesh(vertices, triangles, normals, uvs,
                                                           sapien.render.RenderMaterial()))
    big.add_component(big_body)
    scene.add_entity(big)
    before, after = simplify_render_bodies(types.SimpleNamespace(sub_scenes=[scene]))
    assert entity.find_component_by_type(sapien.render.RenderBodyComponent) is body  # small: untouched
    new_body = big.find_component_by_type(sapien.render.RenderBodyComponent)
    assert new_body is not big_body and before == 12 + len(triangles) and 12 < after < before / 4


# --------------------------------------------------------------------------------------------
# Real ManiSkill3 frames: fast vs full from the same simulated state
# --------------------------------------------------------------------------------------------


def render_same_state(env_id: str, quality: str, variant: str = "none", steps: int = 8) -> dict:
    from gaze_rl.envs.single import make_maniskill_env

    env = make_maniskill_env(env_id, obs_mode="rgb+segmentation", image_size=64, control_mode="pd_joint_delta_pos",
                             render_quality=quality, render_backend="cpu", variant=variant)
    try:
        obs, _ = env.reset(seed=3)
        rng = np.random.default_rng(0)
        for _ in range(steps):
            obs, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        camera = next(iter(obs["sensor_data"]))
        unwrapped = env.unwrapped
        return {
            "rgb": obs["sensor_data"][camera]["rgb"][0].numpy().astype(int),
            "seg": obs["sensor_data"][camera]["segmentation"][0, ..., 0].numpy(),
            "qpos": unwrapped.agent.robot.get_qpos().numpy(),
            "ids": {int(i): o.name for i, o in unwrapped.segmentation_id_map.items()},
            "triangles": getattr(unwrapped, "render_triangles", None),
        }
    finally:
        env.close()


# Mean |fast - full| per channel, in 0-255 units: measured 0.3-4.3 (PokeCube's table is smoother
# without its normal map); a wrong transform or lost material gives tens.
MAX_MEAN_ABS_DIFF = 8.0


@pytest.mark.slow
@pytest.mark.parametrize("env_id,variant", [("PushT-v1", "none"), ("PokeCube-v1", "none"), ("PushCube-v1", "none"),
                                            ("PickCube-v1", "none"), ("PushCube-v1", "clutter"), ("PushCube-v1", "distract")])
def test_fast_frames_match_full_frames_of_the_same_state(env_id, variant):
    full = render_same_state(env_id, "full", variant)
    fast = render_same_state(env_id, "fast", variant)
    np.testing.assert_array_equal(fast["qpos"], full["qpos"])  # rendering does not touch physics
    diff = np.abs(fast["rgb"] - full["rgb"]).mean()
    assert diff < MAX_MEAN_ABS_DIFF, f"{env_id} {variant}: mean |diff| {diff:.2f}"
    # the same objects under the same ids; pixels differ only on simplified silhouettes
    assert fast["ids"] == full["ids"]
    assert set(np.unique(fast["seg"])) == set(np.unique(full["seg"]))
    agree = (fast["seg"] == full["seg"]).mean()
    assert agree > 0.97, f"segmentation agrees on only {agree:.3f} of the pixels"
    # pixels of the task's own (small, unsimplified) objects are where they were
    small = [i for i, name in full["ids"].items() if not name.startswith("panda") and name not in ("ground", "table-workspace")]
    for i in small:
        mask_full, mask_fast = full["seg"] == i, fast["seg"] == i
        if mask_full.sum() >= 10:
            overlap = (mask_full & mask_fast).sum() / (mask_full | mask_fast).sum()
            assert overlap > 0.8, f"{full['ids'][i]}: IoU {overlap:.2f}"
    before, after = fast["triangles"]
    assert full["triangles"] is None and after < before / 5, (before, after)
