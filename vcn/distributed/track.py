"""Tracking on Ray actors: one shot per call (BoT-SORT is sequential inside a shot), shots in parallel.

Every shot is tracked with track ids starting at 0; `renumber_parts` then shifts each shot's ids by the number
of tracks in the shots before it, which gives exactly the ids `run_video` assigns when it tracks shots in order.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from vcn.catalogue import VideoInput, local_video
from vcn.config import RunConfig
from vcn.distributed import PeakMemory, fit_torch_threads, memory_bytes
from vcn.tables import concat_parts
from vcn.tracking.shots import shift_track_ids, track_shot

TrackParts = tuple[pa.Table, pa.Table, pa.Table]  # detections, tracks, crops of one shot


class ShotTracker:
    """A tracking actor's state: the config, loaded once. Ray wraps it with ray.remote in `tracking_actors`."""

    def __init__(self, cfg: dict[str, Any]):
        fit_torch_threads()  # the quality gate of the sampled crops runs torch
        self.cfg = RunConfig.from_dict(cfg)

    def track(self, video: VideoInput, shot: dict[str, Any], detections: pa.Table, info=None
              ) -> tuple[pa.Table, pa.Table, pa.Table, float]:
        """The shot's TrackParts and this actor's peak resident memory (MiB) over the call.

        `info` (the video's VideoInfo, probed once per video) spares every shot a probe of the whole file.
        """
        with PeakMemory() as peak:
            parts = track_shot(local_video(video), shot, detections, self.cfg, 0, info=info)
        return (*parts, peak.mib)

    def ready(self) -> bool:
        return True


def renumber_parts(parts: list[TrackParts]) -> TrackParts:
    """Concatenate per-shot results (in shot order), giving track ids unique over the video as run_video does.

    A part may carry more than its three tables (ShotTracker.track adds its peak memory): the rest is ignored.
    """
    out: list[list[pa.Table]] = [[], [], []]
    offset = 0
    for detections, tracks, crops, *_ in parts:
        for i, table in enumerate((detections, tracks, crops)):
            out[i].append(shift_track_ids(table, offset))
        offset += tracks.num_rows
    names = ("detections", "tracks", "crops")
    return tuple(concat_parts(name, tables) for name, tables in zip(names, out))  # type: ignore[return-value]


class LeastBusyPool:
    """Ray actors that take calls; each call goes to the actor with the fewest calls still running.

    Unlike ray.util.ActorPool it hands back ObjectRefs, so results (crop images) can flow from the tracking
    actor straight to the task that writes the video, never through the driver.
    """

    def __init__(self, actors: list):
        self.actors = list(actors)
        self.pending: dict[int, list] = {i: [] for i in range(len(self.actors))}

    def submit(self, method: str, *args):
        import ray

        for i, refs in self.pending.items():
            if refs:
                _, self.pending[i] = ray.wait(refs, num_returns=len(refs), timeout=0)
        i = min(self.pending, key=lambda k: len(self.pending[k]))
        ref = getattr(self.actors[i], method).remote(*args)
        self.pending[i].append(ref)
        return ref

    def shutdown(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def tracking_actors(cfg: RunConfig, count: int) -> LeastBusyPool:
    """Start `count` tracking actors (one CPU and distributed.track_memory_mib each) and wait until they are up."""
    import ray

    remote = ray.remote(num_cpus=1, max_restarts=cfg.distributed.max_retries,
                        max_task_retries=cfg.distributed.max_retries,
                        **memory_bytes(cfg.distributed.track_memory_mib))(ShotTracker)
    actors = [remote.remote(cfg.to_dict()) for _ in range(max(1, count))]
    ray.get([a.ready.remote() for a in actors])
    return LeastBusyPool(actors)
