"""The synthetic world's colours: named part colours and their RGB values.

Shared by world.py (which attributes exist), draw.py (how they are painted) and read.py (how
the teacher tells them apart from pixels).
"""

from __future__ import annotations

# Saturated part colours, far apart in chromaticity so JPEG and lighting cannot swap them.
COLOURS: dict[str, tuple[int, int, int]] = {
    "crimson": (205, 24, 52),
    "orange": (238, 104, 16),
    "golden": (236, 212, 24),
    "emerald": (22, 165, 80),
    "azure": (30, 110, 232),
    "violet": (135, 50, 205),
}
BODY_COLOURS: dict[str, tuple[int, int, int]] = {
    "olive": (118, 128, 48),
    "chestnut": (132, 60, 34),
    "pearl": (228, 228, 222),
}
BAR_COLOUR = (244, 236, 196)  # the pale wing bar
BEAK_COLOUR = (38, 34, 30)
