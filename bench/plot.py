"""A tiny pure-Python PNG plotter (no matplotlib): latency against offered rate, log y axis."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

_GLYPHS = {
    "0": "###|#.#|#.#|#.#|###", "1": ".#.|##.|.#.|.#.|###", "2": "###|..#|###|#..|###", "3": "###|..#|###|..#|###",
    "4": "#.#|#.#|###|..#|..#", "5": "###|#..|###|..#|###", "6": "###|#..|###|#.#|###", "7": "###|..#|..#|..#|..#",
    "8": "###|#.#|###|#.#|###", "9": "###|#.#|###|..#|###", ".": "...|...|...|...|.#.", "-": "...|...|###|...|...",
    "/": "..#|..#|.#.|#..|#..", "(": ".#.|#..|#..|#..|.#.", ")": ".#.|..#|..#|..#|.#.", " ": "...|...|...|...|...",
    ":": "...|.#.|...|.#.|...", "a": "...|.##|#.#|#.#|.##", "b": "#..|##.|#.#|#.#|##.", "c": "...|.##|#..|#..|.##",
    "d": "..#|.##|#.#|#.#|.##", "e": ".#.|#.#|###|#..|.##", "f": ".##|#..|###|#..|#..", "g": ".##|#.#|.##|..#|##.",
    "h": "#..|##.|#.#|#.#|#.#", "i": ".#.|...|.#.|.#.|.#.", "k": "#..|#.#|##.|#.#|#.#", "l": "##.|.#.|.#.|.#.|###",
    "m": "...|###|###|#.#|#.#", "n": "...|##.|#.#|#.#|#.#", "o": "...|.#.|#.#|#.#|.#.", "p": "...|##.|#.#|##.|#..",
    "q": "...|.##|#.#|.##|..#", "r": "...|.##|#..|#..|#..", "s": "...|.##|.#.|..#|##.", "t": ".#.|###|.#.|.#.|.##",
    "u": "...|#.#|#.#|#.#|.##", "v": "...|#.#|#.#|#.#|.#.", "w": "...|#.#|#.#|###|###", "x": "...|#.#|.#.|.#.|#.#",
    "y": "...|#.#|#.#|.#.|#..", "z": "...|###|..#|#..|###",
}
COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]


class Canvas:
    """An RGB raster with lines, dots and a 3x5 bitmap font."""

    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.px = bytearray(b"\xff" * (width * height * 3))

    def dot(self, x: int, y: int, color: tuple[int, int, int], r: int = 0) -> None:
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                if dx * dx + dy * dy <= r * r + r:
                    xx, yy = x + dx, y + dy
                    if 0 <= xx < self.w and 0 <= yy < self.h:
                        i = (yy * self.w + xx) * 3
                        self.px[i:i + 3] = bytes(color)

    def line(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int], r: int = 0) -> None:
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for s in range(steps + 1):
            self.dot(round(x0 + (x1 - x0) * s / steps), round(y0 + (y1 - y0) * s / steps), color, r)

    def text(self, x: int, y: int, s: str, color: tuple[int, int, int] = (0, 0, 0), scale: int = 2) -> None:
        for ch in s.lower():
            rows = _GLYPHS.get(ch, _GLYPHS[" "]).split("|")
            for gy, row in enumerate(rows):
                for gx, bit in enumerate(row):
                    if bit == "#":
                        for sy in range(scale):
                            for sx in range(scale):
                                self.dot(x + gx * scale + sx, y + gy * scale + sy, color)
            x += 4 * scale

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + bytes(self.px[y * self.w * 3:(y + 1) * self.w * 3]) for y in range(self.h))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def latency_plot(path: Path, series: dict[str, list[tuple[float, float]]], *, title: str) -> None:
    """Write a PNG: one line per series of (offered msg/s, latency ms), y on a log scale."""
    c = Canvas(760, 500)
    left, right, top, bottom = 80, 740, 50, 400
    points = [p for pts in series.values() for p in pts if p[1] and p[1] > 0]
    xmax = max((x for x, _ in points), default=1.0) * 1.1
    ymin = 10 ** math.floor(math.log10(min((y for _, y in points), default=1.0)))
    ymax = 10 ** math.ceil(math.log10(max((y for _, y in points), default=10.0)) + 1e-9)
    if ymax <= ymin:
        ymax = ymin * 10

    def sx(x: float) -> int:
        return round(left + (right - left) * x / xmax)

    def sy(y: float) -> int:
        return round(bottom - (bottom - top) * (math.log10(y) - math.log10(ymin)) / (math.log10(ymax)
                                                                                  - math.log10(ymin)))

    c.line(left, bottom, right, bottom, (0, 0, 0))
    c.line(left, top, left, bottom, (0, 0, 0))
    decade = ymin
    while decade <= ymax * 1.0001:
        y = sy(decade)
        c.line(left, y, right, y, (225, 225, 225))
        label = f"{decade:g}"
        c.text(left - 10 - 8 * len(label), y - 5, label)
        decade *= 10
    for x in sorted({x for x, _ in points}):
        c.line(sx(x), bottom, sx(x), bottom + 5, (0, 0, 0))
        label = f"{x / 1000:g}k" if x >= 1000 else f"{x:g}"
        c.text(sx(x) - 4 * len(label), bottom + 10, label)
    c.text(left, 6, title)
    c.text((left + right) // 2 - 80, bottom + 35, "offered rate (msg/s)")
    c.text(8, top - 22, "latency ms (log)")
    for i, (name, pts) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        pts = sorted(p for p in pts if p[1] and p[1] > 0)
        for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
            c.line(sx(x0), sy(y0), sx(x1), sy(y1), color, 1)
        for x, y in pts:
            c.dot(sx(x), sy(y), color, 4)
        lx, ly = left + 220 * (i % 3), bottom + 62 + 18 * (i // 3)
        c.line(lx, ly + 5, lx + 20, ly + 5, color, 1)
        c.text(lx + 28, ly, name, color)
    path.write_bytes(c.png())
