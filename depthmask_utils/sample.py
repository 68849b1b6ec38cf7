"""The bundled sample world: indoor rooms with exact depth, and people-like figures.

Everything is generated in code from a seed, so every chapter runs offline and the depth
chapter has exact ground truth to compare teachers against.

* Rooms are ray-cast in perspective: a box-shaped room (floor, walls, ceiling, windows, door,
  skirting) furnished with axis-aligned boxes (sofas, tables, shelves, rugs, pictures), lit by a
  ceiling light with hard shadows plus ambient light, and supersampled 2x for smooth edges.
  The z-depth (metres along the camera axis) of every pixel centre is saved beside the photo.
* People are drawn as 2-D figures (head, hair, torso, arms, legs, shoes) in random poses and
  clothing, at 4x resolution and downsampled, which gives them soft anti-aliased alpha edges.

Layout written by :func:`make_sample_world`::

    DIR/bg/room_000.jpg          RGB photos, 4:3, height = size
    DIR/bg_depth/room_000.png    uint16 z-depth in millimetres, same size as the photo
    DIR/bg_floor/room_000.png    uint8 floor mask (255 where a person could stand), same size
    DIR/fg/person_000.png        RGBA figures with soft alpha
    DIR/fg/person_007.jpg        the last few figures: RGB on a plain backdrop, no alpha
    DIR/world.json               the parameters used
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .config import from_profile
from .parallel import run_tasks
from .storage import atomic_write_json

WORLD_FOLDERS = ("bg", "bg_depth", "bg_floor", "fg")  # what make_sample_world writes, besides world.json
DEPTH_SCALE_MM = 1000.0  # bg_depth PNGs store millimetres: uint16 covers 0..65.535 m


# --------------------------------------------------------------------------- noise

def value_noise(u: np.ndarray, v: np.ndarray, seed: int, octaves: int = 3) -> np.ndarray:
    """Smooth lattice noise in [0, 1] at coordinates (u, v); same shape as ``u``."""
    table = np.random.default_rng(seed).random(4096)
    out = np.zeros_like(u, dtype=np.float64)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        iu, iv = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
        fu, fv = u - iu, v - iv
        fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)

        def lattice(a, b):
            return table[(a * 1619 + b * 31337 + o * 6971) & 4095]

        top = lattice(iu, iv) * (1 - fu) + lattice(iu + 1, iv) * fu
        bot = lattice(iu, iv + 1) * (1 - fu) + lattice(iu + 1, iv + 1) * fu
        out += amp * (top * (1 - fv) + bot * fv)
        total += amp
        u, v, amp = u * 2.03, v * 2.03, amp * 0.5
    return out / total


# --------------------------------------------------------------------------- rooms

@dataclass
class Box:
    """An axis-aligned box in room coordinates (metres; y is up, z points away from the door)."""

    lo: np.ndarray
    hi: np.ndarray
    color: np.ndarray  # linear RGB albedo in [0, 1]
    texture: str  # "fabric", "wood", "metal", "picture", "rug"


@dataclass
class Room:
    """One room drawn by :func:`random_room`, in metres: x across (centred on 0), y up (floor at 0), z away
    from the camera. Colours are linear RGB in 0..1. The camera sits at ``cam_pos``, turned by ``yaw``
    and tilted down by ``pitch`` (radians), with horizontal field of view ``fov_deg`` (degrees).
    """
    width: float
    height: float
    depth: float
    wall_color: np.ndarray
    accent_color: np.ndarray
    floor_kind: str
    floor_color: np.ndarray
    windows: list  # (wall, u0, u1, v0, v1): wall in {"left", "right", "back"}
    door: tuple  # (wall, u0, u1)
    boxes: list
    light: np.ndarray
    cam_pos: np.ndarray
    yaw: float
    pitch: float
    fov_deg: float
    seed: int


def _srgb_to_linear(c) -> np.ndarray:
    return np.asarray(c, dtype=np.float64) ** 2.2


def _random_color(rng: np.random.Generator, palette: list) -> np.ndarray:
    base = np.asarray(palette[rng.integers(len(palette))], dtype=np.float64) / 255.0
    return _srgb_to_linear(np.clip(base * rng.uniform(0.85, 1.1), 0, 1))


WALL_PALETTE = [(235, 228, 214), (214, 222, 226), (232, 219, 200), (205, 214, 196), (240, 236, 230),
                (222, 205, 196), (190, 205, 220), (236, 224, 180)]
FABRIC_PALETTE = [(120, 60, 50), (60, 80, 120), (80, 110, 80), (150, 140, 120), (70, 70, 75),
                  (170, 120, 60), (110, 90, 130), (200, 190, 170)]
WOOD_PALETTE = [(150, 100, 60), (120, 80, 50), (180, 140, 95), (95, 65, 40), (200, 170, 130)]


def random_room(seed: int) -> Room:
    """Draw the layout of one furnished room from ``seed``."""
    rng = np.random.default_rng([seed, 7001])
    W, H, D = rng.uniform(4.0, 6.5), rng.uniform(2.5, 3.1), rng.uniform(5.0, 8.0)
    boxes: list[Box] = []

    def add(lo, hi, color, texture):
        boxes.append(Box(np.array(lo, float), np.array(hi, float), color, texture))

    # Sofa against the back wall or a side wall.
    fabric = _random_color(rng, FABRIC_PALETTE)
    sw = rng.uniform(1.6, 2.4)
    if rng.random() < 0.6:
        x0 = rng.uniform(-W / 2 + 0.2, W / 2 - 0.2 - sw)
        add([x0, 0, D - 0.9], [x0 + sw, 0.45, D], fabric, "fabric")
        add([x0, 0.45, D - 0.25], [x0 + sw, 0.9, D], fabric * 0.9, "fabric")
    else:
        side = -1 if rng.random() < 0.5 else 1
        z0 = rng.uniform(2.0, D - sw - 0.3)
        xa, xb = (-W / 2, -W / 2 + 0.9) if side < 0 else (W / 2 - 0.9, W / 2)
        add([xa, 0, z0], [xb, 0.45, z0 + sw], fabric, "fabric")
        xa2, xb2 = (-W / 2, -W / 2 + 0.25) if side < 0 else (W / 2 - 0.25, W / 2)
        add([xa2, 0.45, z0], [xb2, 0.9, z0 + sw], fabric * 0.9, "fabric")
    # Coffee or dining table with legs.
    wood = _random_color(rng, WOOD_PALETTE)
    tw, td, th = rng.uniform(0.8, 1.6), rng.uniform(0.5, 0.9), rng.choice([0.45, 0.75])
    tx, tz = rng.uniform(-W / 2 + 0.6, W / 2 - 0.6 - tw), rng.uniform(2.2, D - 1.6)
    add([tx, th - 0.05, tz], [tx + tw, th, tz + td], wood, "wood")
    for lx in (tx + 0.03, tx + tw - 0.08):
        for lz in (tz + 0.03, tz + td - 0.08):
            add([lx, 0, lz], [lx + 0.05, th - 0.05, lz + 0.05], wood * 0.8, "wood")
    # A tall shelf or cabinet against a side wall.
    side = -1 if rng.random() < 0.5 else 1
    ch, cw = rng.uniform(0.8, 2.0), rng.uniform(0.6, 1.4)
    cz = rng.uniform(1.5, D - cw - 0.2)
    xa, xb = (-W / 2, -W / 2 + 0.4) if side < 0 else (W / 2 - 0.4, W / 2)
    add([xa, 0, cz], [xb, ch, cz + cw], _random_color(rng, WOOD_PALETTE), "wood")
    # A rug on the floor and a couple of pictures on the walls.
    rw, rd = rng.uniform(1.5, 2.8), rng.uniform(1.2, 2.2)
    rx, rz = rng.uniform(-W / 2 + 0.3, W / 2 - 0.3 - rw), rng.uniform(1.8, D - rd - 0.3)
    add([rx, 0, rz], [rx + rw, 0.01, rz + rd], _random_color(rng, FABRIC_PALETTE), "rug")
    for _ in range(rng.integers(1, 3)):
        pw, ph = rng.uniform(0.4, 1.0), rng.uniform(0.3, 0.7)
        py = rng.uniform(1.3, min(2.2, H - ph - 0.1))
        px = rng.uniform(-W / 2 + 0.2, W / 2 - 0.2 - pw)
        add([px, py, D - 0.03], [px + pw, py + ph, D], _random_color(rng, FABRIC_PALETTE), "picture")
    # A floor lamp: pole and shade.
    lx, lz = rng.uniform(-W / 2 + 0.3, W / 2 - 0.5), rng.uniform(2.0, D - 0.4)
    add([lx, 0, lz], [lx + 0.04, 1.5, lz + 0.04], np.array([0.05, 0.05, 0.05]), "metal")
    add([lx - 0.18, 1.45, lz - 0.18], [lx + 0.22, 1.75, lz + 0.22], _srgb_to_linear([0.95, 0.9, 0.75]), "fabric")

    windows = []
    for _ in range(rng.integers(1, 3)):
        wall = ["left", "right", "back"][rng.integers(3)]
        span = W if wall == "back" else D
        ww = rng.uniform(0.8, 1.6)
        u0 = rng.uniform(0.3, span - ww - 0.3) - (W / 2 if wall == "back" else 0)
        v0 = rng.uniform(0.8, 1.1)
        windows.append((wall, u0, u0 + ww, v0, min(H - 0.25, v0 + rng.uniform(1.0, 1.5))))
    door_wall = ["left", "right"][rng.integers(2)]
    du0 = rng.uniform(1.0, D - 1.2)
    door = (door_wall, du0, du0 + 0.9)
    floor_kind = ["planks", "tiles", "carpet"][rng.integers(3)]
    floor_color = _random_color(rng, WOOD_PALETTE if floor_kind == "planks" else WALL_PALETTE + FABRIC_PALETTE[4:5])
    cam = np.array([rng.uniform(-W / 4, W / 4), rng.uniform(1.3, 1.7), 0.15])
    return Room(W, H, D, _random_color(rng, WALL_PALETTE), _random_color(rng, WALL_PALETTE), floor_kind,
                floor_color, windows, door, boxes,
                np.array([rng.uniform(-W / 4, W / 4), H - 0.05, rng.uniform(D * 0.35, D * 0.65)]),
                cam, math.radians(rng.uniform(-18, 18)), math.radians(rng.uniform(4, 14)),
                rng.uniform(60, 75), seed)


def _camera_rays(room: Room, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Rays through pixel centres; directions have unit z in camera space, so t is z-depth."""
    f = 0.5 * width / math.tan(math.radians(room.fov_deg) / 2)
    j, i = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    d = np.stack([(j - width / 2) / f, -(i - height / 2) / f, np.ones_like(i)], axis=-1)
    cp, sp, cy, sy = math.cos(room.pitch), math.sin(room.pitch), math.cos(room.yaw), math.sin(room.yaw)
    pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return np.broadcast_to(room.cam_pos, d.shape).reshape(-1, 3), d.reshape(-1, 3) @ (yaw @ pitch).T


def _hit_boxes(o: np.ndarray, d: np.ndarray, boxes: list, t_max: np.ndarray):
    """Nearest box hit per ray closer than t_max: (t, box index or -1, hit axis)."""
    safe = np.where(np.abs(d) < 1e-12, 1e-12, d)
    # One contiguous column per axis: numpy reduces an (N, 3) array along its short axis several
    # times slower than it combines three (N,) arrays, and max/min give the same values either way.
    o_ax, d_ax = [np.ascontiguousarray(o[:, a]) for a in range(3)], [np.ascontiguousarray(safe[:, a]) for a in range(3)]
    best_t, best_k, best_axis = t_max.copy(), np.full(len(o), -1), np.zeros(len(o), dtype=np.int64)
    for k, b in enumerate(boxes):
        near, far = [], []
        for a in range(3):
            t1, t2 = (b.lo[a] - o_ax[a]) / d_ax[a], (b.hi[a] - o_ax[a]) / d_ax[a]
            near.append(np.minimum(t1, t2))
            far.append(np.maximum(t1, t2))
        tmin = np.maximum(np.maximum(near[0], near[1]), near[2])
        tmax = np.minimum(np.minimum(far[0], far[1]), far[2])
        hit = (tmax >= tmin) & (tmin > 1e-4) & (tmin < best_t)
        # the axis argmax would pick: the first of the three that reaches tmin
        axis = np.where(near[0] >= tmin, 0, np.where(near[1] >= tmin, 1, 2))
        best_t = np.where(hit, tmin, best_t)
        best_k = np.where(hit, k, best_k)
        best_axis = np.where(hit, axis, best_axis)
    return best_t, best_k, best_axis


def _trace(room: Room, o: np.ndarray, d: np.ndarray):
    """First surface hit by each ray: (t, box index or -1 for the room shell, hit axis)."""
    lo = np.array([-room.width / 2, 0.0, -1.0])
    hi = np.array([room.width / 2, room.height, room.depth])
    safe = np.where(np.abs(d) < 1e-12, 1e-12, d)
    t_exit = np.where(safe > 0, (hi - o) / safe, (lo - o) / safe)
    axis = t_exit.argmin(axis=1)
    t = t_exit.min(axis=1)
    t, k, box_axis = _hit_boxes(o, d, room.boxes, t)
    return t, k, np.where(k >= 0, box_axis, axis)


def _shade_room_shell(room: Room, p: np.ndarray, axis: np.ndarray, d: np.ndarray):
    """Albedo and emission of the floor, ceiling and walls at points p."""
    n = len(p)
    albedo, emit = np.zeros((n, 3)), np.zeros((n, 3))
    floor = (axis == 1) & (d[:, 1] < 0)
    ceiling = (axis == 1) & (d[:, 1] >= 0)
    side = axis == 0
    back = axis == 2
    s = room.seed
    if floor.any():
        x, z = p[floor, 0], p[floor, 2]
        if room.floor_kind == "planks":
            plank = np.floor(x / 0.18)
            offset = value_noise(plank * 3.1, plank * 0.7, s + 1, 1) * 3
            grain = value_noise(x * 40, (z + offset) * 3, s + 2)
            tint = 0.8 + 0.35 * value_noise(plank, np.floor((z + offset) / 1.3), s + 3, 1)
            seam = (np.abs(x / 0.18 - np.round(x / 0.18)) < 0.04)
            f = tint * (0.75 + 0.4 * grain) * np.where(seam, 0.55, 1.0)
        elif room.floor_kind == "tiles":
            gx, gz = np.abs(x / 0.5 - np.round(x / 0.5)), np.abs(z / 0.5 - np.round(z / 0.5))
            grout = (gx < 0.03) | (gz < 0.03)
            f = np.where(grout, 0.6, 0.9 + 0.15 * value_noise(x * 6, z * 6, s + 4))
        else:
            f = 0.8 + 0.25 * value_noise(x * 25, z * 25, s + 5, 2)
        albedo[floor] = room.floor_color * f[:, None]
    albedo[ceiling] = _srgb_to_linear([0.93, 0.93, 0.9])
    # Walls: u runs along the wall, v is the height above the floor.
    for mask, u in ((side, p[:, 2]), (back, p[:, 0])):
        if not mask.any():
            continue
        uu, v = u[mask], p[mask, 1]
        color = np.where(back[mask][:, None], room.accent_color, room.wall_color)
        f = 0.92 + 0.1 * value_noise(uu * 3, v * 3, s + 6)
        a = color * f[:, None]
        a[v < 0.1] = _srgb_to_linear([0.9, 0.9, 0.88])  # skirting board
        e = np.zeros_like(a)
        wall_name = np.where(back[mask], "back", np.where(p[mask, 0] < 0, "left", "right"))
        for wall, u0, u1, v0, v1 in room.windows:
            inside = (wall_name == wall) & (uu > u0) & (uu < u1) & (v > v0) & (v < v1)
            if not inside.any():
                continue
            frame = ((uu - u0 < 0.06) | (u1 - uu < 0.06) | (v - v0 < 0.06) | (v1 - v < 0.06)
                     | (np.abs(uu - (u0 + u1) / 2) < 0.025) | (np.abs(v - (v0 + v1) / 2) < 0.025))
            h = np.clip((v - v0) / (v1 - v0), 0, 1)
            sky = np.stack([0.55 + 0.4 * h, 0.75 + 0.22 * h, 0.95 + 0.05 * h], -1)
            sky[h < 0.25] = [0.35, 0.55, 0.3]  # a strip of garden below the horizon
            glass = inside & ~frame
            a[inside & frame] = _srgb_to_linear([0.95, 0.95, 0.95])
            a[glass] = 0
            e[glass] = _srgb_to_linear(sky[glass]) * 1.4
        dw, du0, du1 = room.door
        in_door = (wall_name == dw) & (uu > du0) & (uu < du1) & (v < 2.05)
        a[in_door] = _srgb_to_linear(np.array(WOOD_PALETTE[1]) / 255) * (
            0.85 + 0.2 * value_noise(uu[in_door] * 30, v[in_door] * 2, s + 7))[:, None]
        albedo[mask], emit[mask] = a, e
    return albedo, emit


def _shade_boxes(room: Room, p: np.ndarray, k: np.ndarray):
    albedo = np.zeros((len(p), 3))
    for idx in np.unique(k):
        b, sel = room.boxes[idx], k == idx
        q = p[sel]
        if b.texture == "wood":
            f = 0.75 + 0.4 * value_noise(q[:, 0] * 30 + q[:, 2] * 30, q[:, 1] * 4, room.seed + 10 + idx)
        elif b.texture in ("fabric", "rug"):
            f = 0.85 + 0.25 * value_noise(q[:, 0] * 60 + q[:, 1] * 60, q[:, 2] * 60 + q[:, 1] * 60, room.seed + idx, 2)
        elif b.texture == "picture":
            f = 0.4 + 1.2 * value_noise(q[:, 0] * 4, q[:, 1] * 4, room.seed + 20 + idx, 2)
        else:
            f = np.ones(len(q))
        albedo[sel] = np.clip(b.color * f[:, None], 0, 1)
    return albedo


def render_room(room: Room, height: int, width: int, supersample: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Render a room.

    Returns:
        rgb: uint8 (height, width, 3) sRGB photo.
        depth: float32 (height, width) z-depth in metres at each pixel centre.
    """
    o, d = _camera_rays(room, height * supersample, width * supersample)
    t, k, axis = _trace(room, o, d)
    p = o + t[:, None] * d
    normal = np.zeros_like(p)
    normal[np.arange(len(p)), axis] = -np.sign(d[np.arange(len(p)), axis])
    shell = k < 0
    albedo, emit = np.zeros_like(p), np.zeros_like(p)
    albedo[shell], emit[shell] = _shade_room_shell(room, p[shell], axis[shell], d[shell])
    albedo[~shell] = _shade_boxes(room, p[~shell], k[~shell])
    # Direct light from the ceiling lamp with hard shadows cast by the furniture.
    to_light = room.light - p
    dist = np.linalg.norm(to_light, axis=1)
    ldir = to_light / dist[:, None]
    lambert = np.clip((normal * ldir).sum(1), 0, None)
    origin = p + normal * 1e-3
    _, blocker, _ = _hit_boxes(origin, ldir, room.boxes, dist - 1e-2)
    direct = lambert * (blocker < 0) * 6.0 / (1 + dist ** 2)
    # Cheap ambient occlusion: darker where the floor meets the walls.
    wall_gap = np.minimum(np.minimum(p[:, 0] + room.width / 2, room.width / 2 - p[:, 0]), room.depth - p[:, 2])
    ao = 1 - 0.35 * np.exp(-np.minimum(wall_gap, p[:, 1] + 1) / 0.25) * (axis == 1)
    radiance = albedo * (0.45 * ao + direct)[:, None] + emit
    img = np.clip(radiance, 0, 1) ** (1 / 2.2)
    img = img.reshape(height, supersample, width, supersample, 3).mean(axis=(1, 3))
    o1, d1 = _camera_rays(room, height, width)
    depth = _trace(room, o1, d1)[0].reshape(height, width)
    return (img * 255 + 0.5).astype(np.uint8), depth.astype(np.float32)


def floor_mask(room: Room, height: int, width: int) -> np.ndarray:
    """bool (height, width): pixels whose first surface is floor a person could stand on.

    That is the floor itself or a rug lying on it: upward-facing surfaces within 5 cm of the floor.
    Chapter 03 draws foot points from it, so people stand on the floor, not on walls or sofa backs.
    """
    o, d = _camera_rays(room, height, width)
    t, _, axis = _trace(room, o, d)
    p = o + t[:, None] * d
    return ((axis == 1) & (d[:, 1] < 0) & (p[:, 1] < 0.05)).reshape(height, width)


# --------------------------------------------------------------------------- people

SKIN = [(255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 30)]
HAIR = [(20, 15, 10), (60, 40, 25), (120, 80, 40), (200, 160, 90), (150, 150, 150), (110, 30, 20)]
CLOTHES = [(200, 40, 40), (40, 90, 180), (40, 140, 80), (230, 200, 60), (240, 240, 240), (40, 40, 45),
           (130, 60, 150), (240, 130, 40), (90, 160, 200), (180, 150, 120)]
PANTS = [(40, 50, 90), (30, 30, 35), (110, 90, 70), (70, 80, 60), (160, 150, 140), (60, 90, 140)]


def _limb(p0, angle_deg, length):
    a = math.radians(angle_deg)
    return (p0[0] + length * math.sin(a), p0[1] + length * math.cos(a))


def render_person(seed: int, height_px: int, supersample: int = 4) -> np.ndarray:
    """Draw one people-like figure in a random pose.

    Returns:
        uint8 RGBA (H, W, 4) with a transparent margin; alpha edges are anti-aliased.
    """
    rng = np.random.default_rng([seed, 9001])
    s = height_px * supersample
    u = s / 7.5  # one "head" unit: classic 7.5-heads-tall proportions
    skin = tuple(int(c) for c in SKIN[rng.integers(len(SKIN))])
    hair = tuple(int(c) for c in HAIR[rng.integers(len(HAIR))])
    shirt = tuple(int(c) for c in CLOTHES[rng.integers(len(CLOTHES))])
    pants = tuple(int(c) for c in PANTS[rng.integers(len(PANTS))])
    shoes = (int(rng.integers(10, 60)),) * 3
    build = rng.uniform(0.85, 1.25)
    dress = rng.random() < 0.25
    long_sleeves = rng.random() < 0.5
    pose = rng.choice(["stand", "walk", "wave", "arms_out", "hands_hips"])
    limb_w = 0.42 * u * build

    neck = (0.0, 0.45 * u)  # the chin is at y = 0, the top of the head at y = -u
    shoulder_w, hip_w = 0.85 * u * build, 0.6 * u * build
    hip_y = 3.0 * u
    l_sh, r_sh = (-shoulder_w, 0.5 * u), (shoulder_w, 0.5 * u)
    l_hip, r_hip = (-hip_w * 0.6, hip_y), (hip_w * 0.6, hip_y)
    # Arm angles are measured from straight down, positive towards the figure's outside.
    arm = {"stand": (rng.uniform(5, 15), rng.uniform(5, 15), 0, 0),
           "walk": (rng.uniform(-25, -10), rng.uniform(10, 30), rng.uniform(-20, 0), rng.uniform(0, 25)),
           "wave": (rng.uniform(5, 15), rng.uniform(120, 160), 0, rng.uniform(10, 40)),
           "arms_out": (rng.uniform(70, 100), rng.uniform(70, 100), rng.uniform(-10, 10), rng.uniform(-10, 10)),
           "hands_hips": (rng.uniform(35, 45), rng.uniform(35, 45), -80, -80)}[str(pose)]
    leg_spread = rng.uniform(15, 30) if pose == "walk" else rng.uniform(2, 8)

    def arm_points(sh, side, upper, fore):
        elbow = _limb(sh, side * upper, 1.45 * u)
        hand = _limb(elbow, side * (upper + fore), 1.3 * u)
        return elbow, hand

    l_el, l_hand = arm_points(l_sh, -1, arm[0], arm[2])
    r_el, r_hand = arm_points(r_sh, +1, arm[1], arm[3])
    l_knee = _limb(l_hip, -leg_spread, 1.8 * u)
    r_knee = _limb(r_hip, leg_spread * (0.3 if pose != "walk" else -0.2), 1.8 * u)
    l_foot = _limb(l_knee, -leg_spread * 0.5, 1.8 * u)
    r_foot = _limb(r_knee, leg_spread * 0.2, 1.8 * u)

    pts = np.array([neck, l_sh, r_sh, l_el, r_el, l_hand, r_hand, l_knee, r_knee, l_foot, r_foot, (0, -0.1 * u)])
    margin = 0.9 * u
    x0, x1 = pts[:, 0].min() - margin, pts[:, 0].max() + margin
    y0, y1 = -1.05 * u - margin * 0.3, pts[:, 1].max() + margin * 0.8
    cw, ch = int(x1 - x0), int(y1 - y0)
    canvas = Image.new("RGBA", (cw, ch), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)

    def P(q):
        return (q[0] - x0, q[1] - y0)

    def seg(a, b, color, w):
        draw.line([P(a), P(b)], fill=color, width=int(w))
        for q in (a, b):
            cx, cy = P(q)
            draw.ellipse([cx - w / 2, cy - w / 2, cx + w / 2, cy + w / 2], fill=color)

    sleeve = shirt if long_sleeves else skin
    # Legs, shoes and (optionally) a dress.
    for hip, knee, foot in ((l_hip, l_knee, l_foot), (r_hip, r_knee, r_foot)):
        seg(hip, knee, pants if not dress else skin, limb_w * 1.25)
        seg(knee, foot, pants if not dress else skin, limb_w * 1.05)
        fx, fy = P(foot)
        draw.ellipse([fx - 0.45 * u, fy - 0.2 * u, fx + 0.45 * u, fy + 0.22 * u], fill=shoes)
    # Torso: a trapezoid from the shoulders to the hips.
    torso = [P((l_sh[0] - 0.1 * u, l_sh[1] - 0.15 * u)), P((r_sh[0] + 0.1 * u, r_sh[1] - 0.15 * u)),
             P((hip_w, hip_y + 0.2 * u)), P((-hip_w, hip_y + 0.2 * u))]
    draw.polygon(torso, fill=shirt)
    if dress:
        draw.polygon([P((-hip_w, hip_y - 0.3 * u)), P((hip_w, hip_y - 0.3 * u)),
                      P((hip_w * 2.0, hip_y + 2.2 * u)), P((-hip_w * 2.0, hip_y + 2.2 * u))], fill=shirt)
    else:
        draw.polygon([P((-hip_w, hip_y - 0.1 * u)), P((hip_w, hip_y - 0.1 * u)),
                      P((hip_w, hip_y + 0.5 * u)), P((-hip_w, hip_y + 0.5 * u))], fill=pants)
    # Arms: upper arm in sleeve colour, forearm bare for short sleeves, round hands.
    for sh, el, hand in ((l_sh, l_el, l_hand), (r_sh, r_el, r_hand)):
        seg(sh, el, shirt, limb_w * 1.05)
        seg(el, hand, sleeve, limb_w * 0.9)
        hx, hy = P(hand)
        draw.ellipse([hx - 0.25 * u, hy - 0.25 * u, hx + 0.25 * u, hy + 0.3 * u], fill=skin)
    # Neck, head and hair.
    seg((0, -0.1 * u), neck, skin, 0.32 * u)
    hx, hy = P((0, -0.5 * u))
    draw.ellipse([hx - 0.38 * u, hy - 0.52 * u, hx + 0.38 * u, hy + 0.52 * u], fill=skin)
    long_hair = rng.random() < 0.4
    draw.chord([hx - 0.42 * u, hy - 0.6 * u, hx + 0.42 * u, hy + (0.5 if long_hair else 0.15) * u],
               180, 360, fill=hair)
    if long_hair:
        draw.rectangle([hx - 0.42 * u, hy - 0.1 * u, hx - 0.3 * u, hy + 0.75 * u], fill=hair)
        draw.rectangle([hx + 0.3 * u, hy - 0.1 * u, hx + 0.42 * u, hy + 0.75 * u], fill=hair)

    img = canvas.resize((max(1, cw // supersample), max(1, ch // supersample)), Image.LANCZOS)
    rgba = np.asarray(img).astype(np.float64)
    # Soft light from the upper left and a little cloth noise, so figures don't look flat.
    h, w = rgba.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    light = 1.12 - 0.3 * (xx / max(w, 1)) - 0.12 * (yy / max(h, 1))
    noise = 0.94 + 0.12 * value_noise(xx / 2.5, yy / 2.5, seed + 99, 2)
    rgba[..., :3] = np.clip(rgba[..., :3] * (light * noise)[..., None], 0, 255)
    return (rgba + 0.5).astype(np.uint8)


def on_plain_backdrop(rgba: np.ndarray, backdrop: tuple[int, int, int], seed: int, noise: float = 3.0) -> np.ndarray:
    """Composite a figure onto a plain, slightly noisy backdrop, as a studio photo would be.

    Returns uint8 RGB (H, W, 3): no alpha channel, the case chapter 01 recovers with fuzzy select.
    """
    rng = np.random.default_rng([seed, 4242])
    pad = max(4, rgba.shape[0] // 12)
    h, w = rgba.shape[0] + 2 * pad, rgba.shape[1] + 2 * pad
    yy, xx = np.mgrid[0:h, 0:w]
    vignette = 1 - 0.04 * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2)
    back = np.asarray(backdrop, float) * vignette[..., None] + rng.normal(0, noise, (h, w, 3))
    a = np.zeros((h, w, 1))
    fg = np.zeros((h, w, 3))
    a[pad:pad + rgba.shape[0], pad:pad + rgba.shape[1], 0] = rgba[..., 3] / 255.0
    fg[pad:pad + rgba.shape[0], pad:pad + rgba.shape[1]] = rgba[..., :3]
    return np.clip(fg * a + back * (1 - a) + 0.5, 0, 255).astype(np.uint8)


BACKDROPS = [(245, 245, 245), (60, 180, 75), (70, 110, 200)]


def pick_backdrop(rgba: np.ndarray) -> tuple[int, int, int]:
    """The backdrop colour farthest from every colour the figure wears, as a photographer would
    choose it (a white shirt on a white backdrop defeats any fuzzy select)."""
    colours = rgba[..., :3][rgba[..., 3] >= 128].astype(np.int16)
    return max(BACKDROPS, key=lambda b: int(np.abs(colours - np.array(b)).max(axis=1).min()))


# --------------------------------------------------------------------------- the world

def _write_room(task: tuple[str, int, int, int, int]) -> int:
    """Render room ``i`` of the world and write its photo, floor mask and depth; a worker's task."""
    out, i, seed, size, width = task
    out = Path(out)
    room = random_room(seed * 100_003 + i)
    rgb, depth = render_room(room, size, width)
    Image.fromarray(rgb).save(out / "bg" / f"room_{i:03d}.jpg", quality=92)
    Image.fromarray(floor_mask(room, size, width).astype(np.uint8) * 255).save(out / "bg_floor" / f"room_{i:03d}.png")
    mm = np.clip(np.round(depth * DEPTH_SCALE_MM), 1, 65535).astype(np.uint16)
    Image.fromarray(mm).save(out / "bg_depth" / f"room_{i:03d}.png")
    return i


def make_sample_world(out: str | Path, n_bg: int | None = None, n_fg: int | None = None, size: int | None = None,
                      seed: int | None = None, n_plain: int | None = None, workers: int | None = None,
                      profile: str = "sample") -> dict:
    """Write the sample world to ``out`` (layout in the module docstring) and return its summary.

    Counts, photo height (``size``: the profile's ``world_size``) and seed left None are ``profile``'s.

    ``size`` is the photo height; photos are 4:3 so chapter 02 has something to crop. The last
    ``n_plain`` figures (default: one in eight, at least one) are saved on a plain backdrop with no
    alpha. Existing files with the same parameters are kept, so a re-run is cheap. Rooms are
    rendered in ``workers`` processes (default: all cores); each depends only on its seed, so the
    files are the same for any number of workers.
    """
    n_bg, n_fg, size, seed = from_profile(profile, n_bg=n_bg, n_fg=n_fg, world_size=size, seed=seed)
    out = Path(out)
    if n_bg < 1 or n_fg < 1 or size < 32:
        raise ValueError("sample world needs n_bg >= 1, n_fg >= 1 and size >= 32")
    n_plain = max(1, n_fg // 8) if n_plain is None else n_plain
    params = {"n_bg": n_bg, "n_fg": n_fg, "size": size, "seed": seed, "n_plain": n_plain, "layout": 2}
    manifest = out / "world.json"
    if manifest.exists():
        summary = json.loads(manifest.read_text())
        if summary.get("params") == params:
            return summary
        # Another world was rendered here: its files go first, or a room or person it had and
        # this one has not (person_007.jpg on a plain backdrop, say) would be read as part of this one.
        # The manifest goes last, so a run killed halfway still finds a world that differs.
        for sub in WORLD_FOLDERS:
            shutil.rmtree(out / sub, ignore_errors=True)
        manifest.unlink()
    for sub in WORLD_FOLDERS:
        (out / sub).mkdir(parents=True, exist_ok=True)
    width = size * 4 // 3
    for _ in run_tasks(_write_room, [(str(out), i, seed, size, width) for i in range(n_bg)], workers):
        pass
    rng = np.random.default_rng([seed, 5])
    for i in range(n_fg):
        h = int(size * rng.uniform(0.9, 1.6))
        rgba = render_person(seed * 100_003 + i, h)
        if i >= n_fg - n_plain:
            backdrop = pick_backdrop(rgba)
            Image.fromarray(on_plain_backdrop(rgba, backdrop, seed + i)).save(out / "fg" / f"person_{i:03d}.jpg",
                                                                               quality=95)
        else:
            Image.fromarray(rgba, "RGBA").save(out / "fg" / f"person_{i:03d}.png")
    summary = {"params": params, "bg": f"{n_bg} rooms, {width}x{size}", "fg": f"{n_fg - n_plain} RGBA + {n_plain} plain",
               "depth_unit": "millimetres (uint16 PNG), z-depth along the camera axis"}
    atomic_write_json(manifest, summary)
    return summary


def read_depth_mm(path: str | Path) -> np.ndarray:
    """Read a ``bg_depth`` PNG; returns float32 (H, W) z-depth in metres."""
    return np.asarray(Image.open(path), dtype=np.float32) / DEPTH_SCALE_MM
