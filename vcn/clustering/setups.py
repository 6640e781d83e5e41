"""Tracks at one spot of one camera set-up in two shots are one person (cluster.join_same_setup).

TV and film cut back and forth between a few camera set-ups (shot / reverse shot); each time a set-up returns,
its people sit where they sat, whatever their face shows. SFace splits one person's looks (a profile, a dark shot)
into clusters no face distance joins, but the frame around them gives them away. Two tracks of different shots are
taken as one person when
- the shot detector would see no cut between a frame of one and a frame of the other (vcn.video.looks: their
  looks differ by less than ShotConfig.threshold; each track's first and last crop are compared), and
- each track's mean face box holds the other's centre (the same spot of the picture).
Their clusters are then joined, most alike looks first, never two tracks that share a frame. No face distance is
read, so look-alike strangers in different set-ups are never joined by it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from vcn.video.looks import LOOK_SIZE, look_distance


def same_setup_pairs(crops: pa.Table, threshold: float) -> list[tuple[int, int]]:
    """(track a, track b) pairs of different shots at one spot of one set-up, most alike looks first. Tracks
    whose crops carry no look (a crops table made before stage 1 stored `frame_look`) take part in none."""
    if "frame_look" not in crops.column_names or crops.num_rows == 0:
        return []
    track = crops.column("track_id").to_numpy()
    shot = crops.column("shot_id").to_numpy()
    frame = crops.column("frame").to_numpy()
    box = np.stack([crops.column(c).to_numpy() for c in ("x1", "y1", "x2", "y2")], axis=1).astype(np.float64)
    looks = crops.column("frame_look").to_pylist()
    ends, mean_box, shot_of = {}, {}, {}
    for t in np.unique(track).tolist():
        rows = np.flatnonzero(track == t)
        rows = rows[np.argsort(frame[rows], kind="stable")]
        seen = [looks[r] for r in (rows[0], rows[-1]) if looks[r]]
        if not seen:
            continue
        ends[t] = [np.frombuffer(v, np.uint8).reshape(LOOK_SIZE[1], LOOK_SIZE[0], 3) for v in seen]
        mean_box[t] = box[rows].mean(axis=0)
        shot_of[t] = int(shot[rows[0]])
    ids = sorted(ends)
    boxes = np.array([mean_box[t] for t in ids]).reshape(-1, 4)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    # holds[i, j]: track i's box holds track j's centre
    holds = ((boxes[:, None, 0] <= centre[None, :, 0]) & (centre[None, :, 0] <= boxes[:, None, 2])
             & (boxes[:, None, 1] <= centre[None, :, 1]) & (centre[None, :, 1] <= boxes[:, None, 3]))
    shots = np.array([shot_of[t] for t in ids])
    candidates = np.triu(holds & holds.T & (shots[:, None] != shots[None, :]), k=1)
    found = []
    for i, j in zip(*np.nonzero(candidates)):
        a, b = ids[i], ids[j]
        d = min(look_distance(x, y) for x in ends[a] for y in ends[b])
        if d < threshold:
            found.append((d, a, b))
    return [(a, b) for _, a, b in sorted(found)]
