"""Fast software rendering: level-of-detail meshes and a cheap vertex shader (`render_quality="fast"`).

On a CPU, SAPIEN renders through Mesa's lavapipe, and a 64 px frame of a ManiSkill3 task costs
~30-40 ms, almost all of it vertex work: ~155k triangles per frame (the Panda's visual meshes
~128k, the ground a 100x100 grid) through a vertex shader that inverts a 4x4 matrix and builds
a tangent frame per vertex. Two changes cut a frame's CPU 8-10x with real frames, and an env
step's 4-6x (results/speed section 4; what remains is mostly ManiSkill's own task code):

1. **Level-of-detail meshes.** After every reconfigure, for every sub-scene, each render body
   with a shape of >= `MIN_TRIANGLES` triangles gets a copy of its meshes simplified by vertex
   clustering (vertices merged per `CELL_METRES` cell and normal direction, below a pixel at
   the task cameras' distance); a flat, affinely UV-mapped grid (the ground) becomes 2
   triangles with the same UV mapping. Materials, local poses, visibility and the entity (so
   the segmentation id) are kept; only the triangles change.
2. **A cheap vertex shader.** `shaders/fast` is SAPIEN's "minimal" pack with a vertex shader
   computing `V*M*p` and `mat3(V)*mat3(M)*n` (no inverse, no tangent frame; normal maps are
   ignored), selected through ManiSkill's camera `shader_config` with the minimal pack's
   picture formats. Fragment shading, hence segmentation, is the minimal pack's, less the
   image-based-lighting terms (environment maps are ignored; ManiSkill's tasks set none).

Frames stay real SAPIEN renders of the simulated scene. `render_quality="full"` is stock
ManiSkill. Set `LP_NUM_THREADS=0` (done by `make_vec_env` for fast CPU rendering) to keep
lavapipe's rasteriser in the calling thread: at 64 px its worker threads cost more than they
give on 2 cores.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

RENDER_QUALITIES = ("auto", "fast", "full")
SHADER_DIR = Path(__file__).parent / "shaders" / "fast"
# Shapes below this many triangles are cheap already (cubes, tees, goal discs): left as they are.
MIN_TRIANGLES = 1000
# Clustering cell: 15 mm is under a pixel at 64-128 px for ManiSkill's tabletop cameras
# (10 mm costs ~70% more time; 20 mm gains nothing more).
CELL_METRES = 0.015
# Normal directions per axis in the clustering key (round(n * 2)): keeps sharp edges sharp.
NORMAL_BINS = 2.0


def resolve_render_quality(render_quality: str, render_backend: str) -> str:
    """'auto' -> 'fast' where SAPIEN renders in software (the 'cpu' backend: lavapipe), else 'full'."""
    if render_quality not in RENDER_QUALITIES:
        raise ValueError(f"unknown render_quality {render_quality!r}; valid choices: {', '.join(RENDER_QUALITIES)}")
    if render_quality == "auto":
        return "fast" if render_backend == "cpu" else "full"
    return render_quality


@cache
def fast_shader_config() -> Any:
    """ManiSkill `ShaderConfig` of the fast pack: the minimal pack's textures and transforms."""
    from mani_skill.render.shaders import PREBUILT_SHADER_CONFIGS

    return dataclasses.replace(PREBUILT_SHADER_CONFIGS["minimal"], shader_pack=str(SHADER_DIR))


def use_minimal_picture_formats() -> None:
    """The picture formats the minimal pack (and so the fast pack) writes. ManiSkill sets them
    only for cameras whose pack is named "minimal"; they are process-wide, so set them once
    before any fast camera is created."""
    import sapien

    sapien.render.set_picture_format("Color", "r8g8b8a8unorm")
    sapien.render.set_picture_format("ColorRaw", "r8g8b8a8unorm")
    sapien.render.set_picture_format("PositionSegmentation", "r16g16b16a16sint")


def cluster_vertices(
    vertices: np.ndarray, triangles: np.ndarray, normals: np.ndarray, uvs: np.ndarray, cell: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vertex clustering: one vertex per (cell, normal direction), at the cluster's mean.

    :param cell: cell size per axis, in the mesh's own units.
    :return: (vertices, triangles, normals, uvs) with degenerate and repeated triangles dropped,
        and no vertex that no triangle uses.
    """
    cells = np.floor(vertices / cell).astype(np.int64)
    directions = np.round(normals * NORMAL_BINS).astype(np.int64)
    _, cluster, counts = np.unique(np.concatenate([cells, directions], axis=1), axis=0,
                                   return_inverse=True, return_counts=True)
    cluster = cluster.reshape(-1)

    def mean(values: np.ndarray) -> np.ndarray:
        sums = np.zeros((len(counts), values.shape[1]), dtype=np.float64)
        np.add.at(sums, cluster, values)
        return (sums / counts[:, None]).astype(np.float32)

    new_normals = mean(normals)
    new_normals /= np.maximum(np.linalg.norm(new_normals, axis=1, keepdims=True), 1e-12)
    tris = cluster[triangles]
    keep = (tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 0] != tris[:, 2])
    tris = tris[keep]
    # The same triangle in the same winding, made by several source triangles: draw it once.
    start = np.argmin(tris, axis=1)[:, None]
    tris = np.unique(np.take_along_axis(tris, (start + np.arange(3)) % 3, axis=1), axis=0)
    # Only the vertices a triangle uses: lavapipe shades every vertex of the buffer (~100 ns each
    # here), and clusters whose triangles all collapsed are a third of them on the Panda.
    used, tris = np.unique(tris, return_inverse=True)
    return mean(vertices)[used], tris.reshape(-1, 3).astype(np.uint32), new_normals[used], mean(uvs)[used]


def planar_quad(
    vertices: np.ndarray, triangles: np.ndarray, normals: np.ndarray, uvs: np.ndarray, tol: float = 1e-5
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """A flat grid whose UVs are an affine function of position -> the same rectangle as 2
    triangles with the same UV mapping; None if the mesh is not such a grid."""
    normal = normals.mean(axis=0)
    if np.linalg.norm(normal) < 1e-6 or np.abs(normals - normals[0]).max() > tol:
        return None
    normal = normal / np.linalg.norm(normal)
    origin = vertices.mean(axis=0)
    if np.abs((vertices - origin) @ normal).max() > tol * max(1.0, np.abs(vertices).max()):
        return None
    # In-plane axes; the grid must fill its bounding rectangle in them.
    axis_u = np.cross(normal, [0.0, 0.0, 1.0] if abs(normal[2]) < 0.9 else [1.0, 0.0, 0.0])
    axis_u /= np.linalg.norm(axis_u)
    axis_v = np.cross(normal, axis_u)
    plane = np.stack([(vertices - origin) @ axis_u, (vertices - origin) @ axis_v], axis=1)
    area = 0.5 * np.abs(np.cross(plane[triangles[:, 1]] - plane[triangles[:, 0]],
                                 plane[triangles[:, 2]] - plane[triangles[:, 0]])).sum()
    lo, hi = plane.min(axis=0), plane.max(axis=0)
    if abs(area - np.prod(hi - lo)) > 1e-4 * np.prod(hi - lo):
        return None
    design = np.concatenate([plane, np.ones((len(plane), 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, uvs.astype(np.float64), rcond=None)
    if np.abs(design @ coef - uvs).max() > 1e-4:
        return None
    corners = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    quad = origin + corners[:, :1] * axis_u + corners[:, 1:] * axis_v
    tris = np.array([[0, 1, 2], [0, 2, 3]], dtype=np.uint32)
    # Keep the source's winding (the side that faces the camera).
    source_face = np.cross(vertices[triangles[0, 1]] - vertices[triangles[0, 0]],
                           vertices[triangles[0, 2]] - vertices[triangles[0, 0]]) @ normal
    if (np.cross(quad[1] - quad[0], quad[2] - quad[0]) @ normal > 0) != (source_face > 0):
        tris = tris[:, ::-1].copy()
    quad_uvs = np.concatenate([corners, np.ones((4, 1))], axis=1) @ coef
    return (quad.astype(np.float32), tris, np.repeat(normal[None].astype(np.float32), 4, axis=0),
            quad_uvs.astype(np.float32))


def _triangle_count(shape: Any) -> int:
    return sum(len(part.get_triangles()) for part in shape.get_parts())


def _simplified_shapes(shape: Any, cell: float) -> list[Any]:
    """Simplified copies of one render shape: one triangle mesh per part (parts keep their materials)."""
    import sapien

    scale = np.asarray(shape.get_scale(), dtype=np.float64) if hasattr(shape, "get_scale") else np.ones(3)
    shapes = []
    for part in shape.get_parts():
        data = (part.get_vertices(), part.get_triangles(), part.get_vertex_normal(), part.get_vertex_uv())
        simple = planar_quad(*data) or cluster_vertices(*data, cell=cell / np.abs(scale))
        vertices, triangles, normals, uvs = simple
        if len(triangles) == 0:
            continue
        new = sapien.render.RenderShapeTriangleMesh(vertices=vertices, triangles=triangles, normals=normals,
                                                    uvs=uvs, material=part.get_material())
        new.set_scale(scale)
        new.set_local_pose(shape.get_local_pose())
        new.set_front_face(shape.get_front_face())
        new.set_name(shape.get_name())
        shapes.append(new)
    return shapes


def simplify_render_bodies(scene: Any, min_triangles: int = MIN_TRIANGLES, cell: float = CELL_METRES) -> tuple[int, int]:
    """Replaces, in every sub-scene of a ManiSkill scene, each render body that has a shape of
    >= `min_triangles` triangles by one with simplified copies of its large shapes.

    :return: (triangles before, triangles after) over all render bodies.
    """
    import sapien

    before = after = 0
    for sub_scene in scene.sub_scenes:
        for entity in sub_scene.entities:
            body = entity.find_component_by_type(sapien.render.RenderBodyComponent)
            if body is None:
                continue
            counts = [_triangle_count(shape) for shape in body.render_shapes]
            before += sum(counts)
            if max(counts, default=0) < min_triangles:
                after += sum(counts)
                continue
            new_body = sapien.render.RenderBodyComponent()
            new_body.set_name(body.get_name())
            for shape, count in zip(body.render_shapes, counts):
                for new in _simplified_shapes(shape, cell) if count >= min_triangles else [shape.clone()]:
                    new_body.attach(new)
            after += sum(_triangle_count(shape) for shape in new_body.render_shapes)
            new_body.visibility = body.visibility
            new_body.shading_mode = body.shading_mode
            if body.is_render_id_disabled:
                new_body.disable_render_id()
            entity.remove_component(body)
            entity.add_component(new_body)
    return before, after


def fast_render_class(base: type) -> type:
    """`base` (a ManiSkill task class) with level-of-detail meshes after every reconfigure."""

    class FastRender(base):
        def _after_reconfigure(self, options: dict) -> None:
            super()._after_reconfigure(options)
            if self.scene.can_render():
                self.render_triangles = simplify_render_bodies(self.scene)

    return FastRender
