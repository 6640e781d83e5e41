"""One stable colour per cluster id, shared by the HTML report and the video overlay."""

from __future__ import annotations

import colorsys

# Unknown (-1) is grey everywhere, so it never looks like a person's colour.
UNKNOWN_RGB = (150, 150, 150)
# Successive hues a golden-ratio turn apart stay distinguishable for the first dozens of clusters.
_GOLDEN = 0.618033988749895


def cluster_rgb(cluster_id: int) -> tuple[int, int, int]:
    """RGB 0..255 of a cluster; the same id always gets the same colour, -1 (Unknown) is grey."""
    if cluster_id < 0:
        return UNKNOWN_RGB
    hue = (0.12 + cluster_id * _GOLDEN) % 1.0
    # Alternate lightness a little so neighbouring hues of a large cast still differ.
    value = 0.95 if cluster_id % 2 == 0 else 0.78
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, value)
    return round(r * 255), round(g * 255), round(b * 255)


def cluster_bgr(cluster_id: int) -> tuple[int, int, int]:
    """The same colour in OpenCV's channel order."""
    r, g, b = cluster_rgb(cluster_id)
    return b, g, r


def cluster_hex(cluster_id: int) -> str:
    r, g, b = cluster_rgb(cluster_id)
    return f"#{r:02x}{g:02x}{b:02x}"
