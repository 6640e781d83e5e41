"""The demo video: a 12 s multi-shot clip, with ground truth, rendered from two photos inside the insightface wheel."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np

from vcn.errors import VcnError
from vcn.render import Photo, Shot, load_photo, render_video

GROUP_PHOTO = "t1.jpg"                 # six people around a card table, faces about 100-150 px
PORTRAIT_PHOTO = "Tom_Hanks_54745.png"  # a 112x112 aligned face crop
PORTRAIT_IDENTITY = "tom_hanks"
DEMO_SEED = 0


def demo_photo_path(name: str) -> Path:
    """Path of one of the images that ship in the insightface wheel (insightface/data/images/)."""
    try:
        path = importlib.resources.files("insightface") / "data" / "images" / name
    except ModuleNotFoundError:
        raise VcnError("the demo video is made from images in the insightface wheel, which is not installed; "
                       "run pip install insightface==2.1 (vcn's own dependencies include it)") from None
    if not path.is_file():
        raise VcnError(f"demo image {path} is missing from the installed insightface wheel; reinstall insightface")
    return Path(str(path))


def demo_photos(detector: str = "auto") -> tuple[Photo, Photo]:
    """The group photo (people named group_person_1..6 from left to right) and the portrait (tom_hanks)."""
    group = load_photo(demo_photo_path(GROUP_PHOTO), detector=detector)
    order = np.argsort(group.boxes[:, 0], kind="stable")
    group = Photo(image=group.image, boxes=group.boxes[order],
                  identities=[f"group_person_{k + 1}" for k in range(len(order))],
                  name=group.name, boxes_from=group.boxes_from)
    portrait = load_photo(demo_photo_path(PORTRAIT_PHOTO), identity=PORTRAIT_IDENTITY, detector=detector)
    if len(group.boxes) < 2 or len(portrait.boxes) != 1:
        raise VcnError(f"the demo images gave {len(group.boxes)} group faces and {len(portrait.boxes)} portrait "
                       "faces; the face detector is not working (check the detector model files)")
    return group, portrait


def demo_shots(group: Photo, portrait: Photo) -> list[Shot]:
    """Five shots, 12.0 s: every group member is seen at two scales in two or more shots, the portrait twice."""
    h, w = group.image.shape[:2]
    right_part = group.crop(int(w * 0.55), 0, w, h, name=f"{group.name}[right]")
    grey = ((70, 70, 70), (110, 110, 110))
    return [
        # 1. Wide establishing shot of the whole group, faces about 45-60 px, slow push in.
        Shot([group], duration_s=2.6, zoom=(1.0, 1.15), gain=(1.0, 1.05), background=((120, 60, 20), (20, 160, 190))),
        # 2. The portrait on its own, small on the canvas, pushing in while the light warms up.
        Shot([portrait], duration_s=2.0, zoom=(1.0, 1.3), photo_scales=[0.5], gain=(0.8, 1.15), tint=(0.0, 0.1),
             background=((150, 90, 140), (160, 40, 40))),
        # 3. Close pan over the left of the group: the same people at about twice the wide shot's size.
        Shot([group], duration_s=2.6, zoom=(2.2, 2.2), pan=((0.0, 0.4), (0.55, 0.45))),
        # 4. The right of the group beside the portrait, dim, coming into focus.
        Shot([right_part, portrait], duration_s=2.4, zoom=(1.0, 1.1), photo_scales=[1.0, 0.35], gain=(0.7, 0.75),
             blur_sigma=(1.6, 0.0), background=grey),
        # 5. Push in on the right of the group while the light cools and dims.
        Shot([group], duration_s=2.4, zoom=(1.5, 2.4), pan=((0.9, 0.3), (0.8, 0.35)), gain=(1.15, 0.9),
             tint=(0.0, -0.1)),
    ]


def render_demo_video(out_path: str | Path, detector: str = "auto") -> Path:
    """Render the demo video to `out_path` (mp4) with its ground truth beside it (`<stem>.truth.parquet`,
    `<stem>.shots.json`); returns the video's path. Same bytes every time on the same installation."""
    group, portrait = demo_photos(detector)
    return render_video(demo_shots(group, portrait), out_path, seed=DEMO_SEED).video
