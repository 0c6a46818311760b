"""Draw Flowmill's icon, a mill wheel on a teal tile, as assets/flowmill.svg and
assets/flowmill.png (256x256), from one description of its shapes, with the standard library
alone. Run it again after changing the shapes: `python packaging/icon.py`."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

SIZE = 256
TILE, WHEEL = (15, 118, 110), (240, 253, 250)  # teal 700, teal 50
CORNER = 48  # the tile's rounded corners
RING, RING_WIDTH = 78, 16  # the wheel's rim: radius of its middle, width
HUB = 20
PADDLES = 8
SPOKE_WIDTH = 8  # spokes from the hub to the rim
PADDLE_WIDTH, PADDLE_IN, PADDLE_OUT = 24, RING, 112  # paddles outside the rim


def _inside_tile(x: float, y: float) -> bool:
    dx = max(CORNER - x, 0, x - (SIZE - CORNER))
    dy = max(CORNER - y, 0, y - (SIZE - CORNER))
    return dx * dx + dy * dy <= CORNER * CORNER


def _on_wheel(x: float, y: float) -> bool:
    cx = cy = SIZE / 2
    dx, dy = x - cx, y - cy
    r = math.hypot(dx, dy)
    if abs(r - RING) <= RING_WIDTH / 2 or r <= HUB:
        return True
    if r > PADDLE_OUT:
        return False
    for i in range(PADDLES):
        angle = 2 * math.pi * (i + 0.5) / PADDLES
        along = dx * math.cos(angle) + dy * math.sin(angle)
        across = -dx * math.sin(angle) + dy * math.cos(angle)
        if 0 < along <= RING and abs(across) <= SPOKE_WIDTH / 2:
            return True
        if PADDLE_IN <= along <= PADDLE_OUT and abs(across) <= PADDLE_WIDTH / 2:
            return True
    return False


def png(path: Path, samples: int = 3) -> None:
    """The icon rasterised, each pixel the average of samples x samples points."""
    rows = bytearray()
    for py in range(SIZE):
        rows.append(0)  # filter: none
        for px in range(SIZE):
            tile = wheel = 0
            for sy in range(samples):
                for sx in range(samples):
                    x, y = px + (sx + 0.5) / samples, py + (sy + 0.5) / samples
                    if _inside_tile(x, y):
                        tile += 1
                        wheel += _on_wheel(x, y)
            n = samples * samples
            colour = [round((TILE[c] * (tile - wheel) + WHEEL[c] * wheel) / max(tile, 1)) for c in range(3)]
            rows += bytes(colour) + bytes([round(255 * tile / n)])

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", SIZE, SIZE, 8, 6, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(bytes(rows), 9)) + chunk(b"IEND", b""))


def svg(path: Path) -> None:
    c = SIZE / 2
    hexa = "#%02x%02x%02x"
    paddles = "\n".join(
        f'    <g transform="rotate({360 * (i + 0.5) / PADDLES:g} {c:g} {c:g})">'
        f'<rect x="{c:g}" y="{c - SPOKE_WIDTH / 2:g}" width="{RING:g}" height="{SPOKE_WIDTH:g}"/>'
        f'<rect x="{c + PADDLE_IN:g}" y="{c - PADDLE_WIDTH / 2:g}" width="{PADDLE_OUT - PADDLE_IN:g}" '
        f'height="{PADDLE_WIDTH:g}"/></g>' for i in range(PADDLES))
    path.write_text(f'''<svg xmlns="http://www.w3.org/2000/svg" width="{SIZE}" height="{SIZE}" viewBox="0 0 {SIZE} {SIZE}">
  <title>Flowmill</title>
  <clipPath id="tile"><rect width="{SIZE}" height="{SIZE}" rx="{CORNER}"/></clipPath>
  <rect width="{SIZE}" height="{SIZE}" rx="{CORNER}" fill="{hexa % TILE}"/>
  <g fill="{hexa % WHEEL}" clip-path="url(#tile)">
    <circle cx="{c:g}" cy="{c:g}" r="{RING:g}" fill="none" stroke="{hexa % WHEEL}" stroke-width="{RING_WIDTH:g}"/>
    <circle cx="{c:g}" cy="{c:g}" r="{HUB:g}"/>
{paddles}
  </g>
</svg>
''')


if __name__ == "__main__":
    assets = Path(__file__).resolve().parent.parent / "assets"
    assets.mkdir(exist_ok=True)
    svg(assets / "flowmill.svg")
    png(assets / "flowmill.png")
    print(f"wrote {assets / 'flowmill.svg'} and {assets / 'flowmill.png'}")
