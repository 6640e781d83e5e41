"""Seeded multi-shot benchmark episodes rendered from a folder of labelled face photos (identities.json).

    python benchmarks/episodes.py --faces ../shared/data/faces/deepface13 --out out/ep0 --seed 0 --shots 12 \
        [--shots-per-scene 4]

writes <out>/episode.mp4, episode.truth.parquet (per-frame boxes and identities), episode.shots.json (shots,
photos) and held_out.json (photos of the same people kept out of the video, for a search feature).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vcn.errors import VcnError
from vcn.render import FPS, FRAME_SIZE, Photo, RenderResult, load_photo, random_shot, render_video


@dataclass
class Episode:
    render: RenderResult
    held_out: Path                      # JSON: faces_dir and, per person, the photos not used in the video
    people: list[str]                   # people who appear in the video
    seconds: float                      # wall time to make it


def read_identities(faces_dir: str | Path) -> dict[str, list[str]]:
    """person -> photo paths relative to `faces_dir`, from `<faces_dir>/identities.json`."""
    path = Path(faces_dir) / "identities.json"
    if not path.is_file():
        raise VcnError(f"{path} does not exist; --faces must be a folder with an identities.json "
                       '({"identities": {"person": ["file.jpg", ...]}})')
    data = json.loads(path.read_text())
    identities = data.get("identities", data)
    if not isinstance(identities, dict) or not identities:
        raise VcnError(f"{path} has no identities; expected {{\"identities\": {{person: [files]}}}}")
    return {str(k): [str(f) for f in v] for k, v in identities.items()}


def render_episode(faces_dir: str | Path, out_dir: str | Path, seed: int = 0, n_shots: int = 12,
                   n_people: int | None = None, held_out_per_person: int = 1, size: tuple[int, int] = FRAME_SIZE,
                   fps: float = FPS, name: str = "episode", detector: str = "auto",
                   shot_seconds: tuple[float, float] = (1.6, 3.0), shots_per_scene: int = 1) -> Episode:
    """Render one episode: `n_shots` shots of 1-3 photos each, people chosen round-robin so that everyone
    appears once before anyone appears twice, each appearance a different photo while unused ones remain.
    `held_out_per_person` photos of each person with at least that many + 2 are kept out of the video.

    With `shots_per_scene` > 1 the episode is made of scenes as TV is: each scene keeps its people in one
    photo each (one look) over that many shots, and people re-appear in other scenes in other photos;
    `n_shots` is then rounded up to whole scenes. With 1 (the default) every appearance is a new photo."""
    started = time.perf_counter()
    faces_dir, out_dir = Path(faces_dir), Path(out_dir)
    if n_shots < 1:
        raise VcnError(f"--shots {n_shots}: an episode needs at least one shot")
    identities = read_identities(faces_dir)
    rng = np.random.default_rng(seed)
    people = sorted(identities)
    if n_people is not None:
        if not 1 <= n_people <= len(people):
            raise VcnError(f"--people {n_people}: {faces_dir} has {len(people)} people")
        people = sorted(rng.choice(people, n_people, replace=False).tolist())

    usable: dict[str, list[str]] = {}
    held_out: dict[str, list[str]] = {}
    for person in people:
        files = [identities[person][i] for i in rng.permutation(len(identities[person]))]
        keep_back = held_out_per_person if len(files) >= held_out_per_person + 2 else 0
        held_out[person] = sorted(files[:keep_back])
        usable[person] = files[keep_back:]

    photos: dict[str, Photo | None] = {}
    no_face: list[str] = []

    def photo(person: str, file: str) -> Photo | None:
        if file not in photos:
            p = load_photo(faces_dir / file, identity=person, name=file, detector=detector)
            photos[file] = p if len(p.boxes) else None
            if not len(p.boxes):
                no_face.append(file)
        return photos[file]

    # Round-robin passes over the people (a fresh order each pass); pass k shows each person's k-th photo,
    # cycling through their photos again only once all have been shown.
    def appearances():
        k = 0
        while True:
            produced = False
            for person in rng.permutation(people).tolist():
                files = usable[person]
                for step in range(len(files)):
                    p = photo(person, files[(k + step) % len(files)])
                    if p is not None:
                        produced = True
                        yield person, p
                        break
            if not produced:
                raise VcnError(f"no face was found in any photo of {faces_dir} chosen for this episode")
            k += 1

    stream = appearances()
    queue: list[tuple[str, Photo]] = []
    shots = []
    n_groups = n_shots if shots_per_scene <= 1 else -(-n_shots // shots_per_scene)
    for size_wanted in rng.integers(1, 4, n_groups).tolist():
        size_wanted = min(size_wanted, len(people))
        chosen: list[tuple[str, Photo]] = []
        i = 0
        # Stop looking after a few passes: people whose photos show no face never come.
        while len(chosen) < size_wanted and i < 4 * len(people) + 4:
            if i == len(queue):
                queue.append(next(stream))
            person, p = queue[i]
            if person not in {c[0] for c in chosen}:
                chosen.append(queue.pop(i))
            else:
                i += 1
        if shots_per_scene <= 1:
            shots.append(random_shot([p for _, p in chosen], rng, duration_s=shot_seconds))
            continue
        # A scene: the same people in the same photos (one look each) over several shots, framed as TV
        # cuts between them: the whole group, then random subsets (shot / reverse shot).
        for k in range(shots_per_scene):
            if k == 0 or len(chosen) == 1:
                subset = chosen
            else:
                n_in_shot = int(rng.integers(1, len(chosen) + 1))
                subset = [chosen[i] for i in sorted(rng.choice(len(chosen), n_in_shot, replace=False).tolist())]
            shots.append(random_shot([p for _, p in subset], rng, duration_s=shot_seconds))

    out_dir.mkdir(parents=True, exist_ok=True)
    result = render_video(shots, out_dir / f"{name}.mp4", size=size, fps=fps, seed=seed)
    in_video = sorted({p.identities[0] for shot in shots for p in shot.photos})
    held_out_path = out_dir / "held_out.json"
    held_out_path.write_text(json.dumps({
        "faces_dir": str(faces_dir.resolve()),
        "seed": seed,
        "video": result.video.name,
        "note": "photos of people in the video that the video does not use; paths relative to faces_dir",
        "held_out": {p: held_out[p] for p in in_video if held_out[p]},
        "in_video": {p: sorted({ph.name for s in shots for ph in s.photos if ph.identities[0] == p})
                     for p in in_video},
        "photos_without_a_face": sorted(no_face),
    }, indent=1))
    return Episode(render=result, held_out=held_out_path, people=in_video,
                   seconds=time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", required=True, help="folder with identities.json (e.g. shared/data/faces/lfw150)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shots", type=int, default=12)
    parser.add_argument("--people", type=int, default=None, help="people drawn from the folder (default: all)")
    parser.add_argument("--held-out", type=int, default=1, help="photos per person kept out of the video")
    parser.add_argument("--fps", type=float, default=FPS)
    parser.add_argument("--name", default="episode")
    parser.add_argument("--shots-per-scene", type=int, default=1,
                        help="shots per scene; people keep one photo (look) within a scene (default 1)")
    parser.add_argument("--shot-seconds", type=float, nargs=2, default=(1.6, 3.0), metavar=("MIN", "MAX"))
    args = parser.parse_args(argv)
    try:
        ep = render_episode(args.faces, args.out, seed=args.seed, n_shots=args.shots, n_people=args.people,
                            held_out_per_person=args.held_out, fps=args.fps, name=args.name,
                            shot_seconds=tuple(args.shot_seconds), shots_per_scene=args.shots_per_scene)
    except VcnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"video": str(ep.render.video), "truth": str(ep.render.truth), "held_out": str(ep.held_out),
                      "frames": ep.render.n_frames, "shots": len(ep.render.shot_starts), "people": len(ep.people),
                      "seconds": round(ep.seconds, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
