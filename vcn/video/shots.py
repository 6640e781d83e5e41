"""Shot boundaries with PySceneDetect's ContentDetector, fed the frames the pipeline already decodes.

Feeding frames ourselves (instead of letting SceneManager open the file) keeps stage 1 to one decode pass:
the same batches go to the shot detector and to the face detector. Frames are downscaled exactly as
SceneManager's auto-downscale does, so `ShotConfig.threshold` means what it means in the scenedetect CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from vcn.config import ShotConfig


@dataclass(frozen=True)
class Shot:
    start_frame: int  # first frame of the shot
    end_frame: int    # one past the last frame (as in tables.SHOTS)
    start_s: float    # presentation time of the first frame
    end_s: float      # presentation time just after the last frame


class ShotDetector:
    """Streaming cut detector: `feed` consecutive frames (BGR) in order, then read `cuts()` or `shots(...)`."""

    def __init__(self, cfg: ShotConfig | None = None, fps: float = 30.0):
        from scenedetect.detectors import ContentDetector

        self.cfg = cfg or ShotConfig()
        # min_scene_len is given in frames, so `fps` only labels the timecodes scenedetect builds.
        self._fps = float(fps) if fps and fps > 0 else 30.0
        self._detector = ContentDetector(threshold=self.cfg.threshold, min_scene_len=self.cfg.min_scene_len_frames)
        self._cuts: list[int] = []
        self._size: tuple[int, int] | None = None  # (width, height) frames are scored at
        self._last_index: int | None = None

    def feed(self, frames: np.ndarray, indices: Iterable[int]) -> list[int]:
        """Score frames [n, H, W, 3] BGR with their frame indices (consecutive); returns cuts found so far in them."""
        from scenedetect import FrameTimecode

        found: list[int] = []
        for frame, index in zip(frames, indices):
            index = int(index)
            if self._last_index is not None and index != self._last_index + 1:
                raise ValueError(f"ShotDetector.feed: frame {index} follows {self._last_index}; frames must be "
                                 "consecutive (use one ShotDetector per contiguous frame range)")
            self._last_index = index
            small = self._downscale(frame)
            cuts = self._detector.process_frame(FrameTimecode(index, fps=self._fps), small)
            found.extend(int(c.frame_num) for c in cuts)
        self._cuts.extend(found)
        return found

    def cuts(self) -> list[int]:
        """Frame indices where a new shot starts (never the first frame fed)."""
        return sorted(set(self._cuts))

    def shots(self, times: np.ndarray, end_times: np.ndarray | None = None, first_frame: int = 0) -> list[Shot]:
        """Shots covering frames [first_frame, first_frame + len(times)), given each frame's time."""
        return shots_from_cuts(self.cuts(), times, end_times, first_frame)

    def _downscale(self, frame: np.ndarray) -> np.ndarray:
        from scenedetect.scene_manager import compute_downscale_factor

        if self._size is None:
            h, w = frame.shape[:2]
            factor = compute_downscale_factor(w)
            self._size = (max(1, round(w / factor)), max(1, round(h / factor))) if factor > 1 else (w, h)
        if (frame.shape[1], frame.shape[0]) == self._size:
            return frame
        return cv2.resize(frame, self._size, interpolation=cv2.INTER_LINEAR)


def shots_from_cuts(cuts: Iterable[int], times: np.ndarray, end_times: np.ndarray | None = None,
                    first_frame: int = 0) -> list[Shot]:
    """Split frames [first_frame, first_frame + n) at the cut frames; a video with no cut is one shot."""
    times = np.asarray(times, np.float64)
    n = len(times)
    if n == 0:
        return []
    if end_times is None:
        step = float(np.median(np.diff(times))) if n > 1 else 0.0
        end_times = np.append(times[1:], times[-1] + step)
    bounds = [first_frame] + sorted(c for c in set(int(c) for c in cuts) if first_frame < c < first_frame + n)
    bounds.append(first_frame + n)
    return [Shot(a, b, float(times[a - first_frame]), float(end_times[b - 1 - first_frame]))
            for a, b in zip(bounds[:-1], bounds[1:])]


def detect_shots(source, cfg: ShotConfig | None = None, batch_frames: int = 64) -> list[Shot]:
    """Shots of a video file (decoded here) or of an iterable of FrameBatch (frames already being decoded)."""
    from vcn.video.decode import iter_frames, probe_video

    if isinstance(source, (str, Path)):
        info = probe_video(source)
        detector = ShotDetector(cfg, fps=info.fps)
        for batch in iter_frames(source, batch_frames, info=info):
            detector.feed(batch.frames, batch.indices)
        return detector.shots(info.times, info.end_times)
    detector = ShotDetector(cfg)
    times, end_times, first = [], [], None
    for batch in source:
        if first is None and len(batch):
            first = int(batch.indices[0])
        detector.feed(batch.frames, batch.indices)
        times.append(np.asarray(batch.times, np.float64))
        end_times.append(np.asarray(batch.end_times, np.float64))
    if first is None:
        return []
    return detector.shots(np.concatenate(times), np.concatenate(end_times), first_frame=first)
