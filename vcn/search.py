"""Search an archive by face: a photo in, the videos, shots and time ranges of that person's clusters out, ranked.

The query and the index use the BASE backbone's embeddings (never the per-video finetuned ones, which are not
comparable across videos). The index is a folder (or s3:// prefix) of `vcn run` outputs or a catalogue output.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from vcn import storage
from vcn.errors import VcnError
from vcn.leftovers import scratch_dir
from vcn.report.data import Appearance, appearances, list_column_matrix, track_seconds

FINETUNED_SUFFIX = "+finetuned"
# How a cluster is scored against the query: cosine to the mean of its crops' base embeddings ("mean"), or the
# best cosine over its tracks' mean embeddings ("max"). benchmarks/report_search.py measures both.
REDUCTIONS = ("mean", "max")
DEFAULT_REDUCTION = "mean"


@dataclass
class SearchIndex:
    """One row per clusterable track of every indexed video, with the mean of its crops' base embeddings."""

    video_id: np.ndarray      # object (str) [n]
    track_id: np.ndarray      # int64 [n]
    cluster_id: np.ndarray    # int64 [n]; -1 = Unknown
    shot_id: np.ndarray       # int64 [n]
    start_s: np.ndarray       # float64 [n]
    end_s: np.ndarray         # float64 [n]
    embedding: np.ndarray     # float32 [n, d]: mean of the track's L2-normalised crop embeddings (not renormalised)
    n_crops: np.ndarray       # int64 [n]: crops behind that mean
    model: str                # base model name as the embeddings table records it
    backbone: str             # what `load_backbone` takes to embed a query the same way
    fps: dict[str, float] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.track_id)

    @property
    def videos(self) -> list[str]:
        return sorted(set(self.video_id.tolist()))


@dataclass
class ClusterHit:
    rank: int
    video_id: str
    cluster_id: int
    score: float                           # cosine similarity to the query, -1..1
    n_tracks: int
    screen_s: float
    appearances: list[Appearance]
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "video_id": self.video_id, "cluster_id": self.cluster_id,
                "score": round(self.score, 4), "tracks": self.n_tracks, "screen_s": round(self.screen_s, 3),
                "source": self.source,
                "appearances": [{"shot_id": a.shot_id, "start_s": round(a.start_s, 3), "end_s": round(a.end_s, 3)}
                                for a in self.appearances]}


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def rank_clusters(query: np.ndarray, index: SearchIndex, reduce: str = DEFAULT_REDUCTION,
                  top: int | None = None) -> list[ClusterHit]:
    """Every (video, cluster) of the index ranked by cosine similarity to the query embedding, best first.

    Unknown tracks (-1) are not searched: they were kept out of clustering for low quality. Ties are broken by
    video id and cluster id so the order is stable.
    """
    if reduce not in REDUCTIONS:
        raise VcnError(f"--reduce {reduce!r}: choose one of {', '.join(REDUCTIONS)}")
    q = _unit(np.asarray(query, np.float64).reshape(-1))
    if len(index) and index.embedding.shape[1] != len(q):
        raise VcnError(f"the query embedding has {len(q)} dimensions but the index ({index.model}) has "
                       f"{index.embedding.shape[1]}; embed the query with the index's backbone ({index.backbone})")
    keep = np.flatnonzero((index.cluster_id >= 0) & (index.n_crops > 0))
    if len(keep) == 0:
        return []
    # One pass of array arithmetic over all tracks (a catalogue holds millions): group = (video, cluster).
    videos, video_idx = np.unique(index.video_id[keep].astype(str), return_inverse=True)
    clusters = index.cluster_id[keep].astype(np.int64)
    _, first, group = np.unique(video_idx.astype(np.int64) * (int(clusters.max()) + 1) + clusters,
                                return_index=True, return_inverse=True)
    n_groups = len(first)
    emb = index.embedding[keep].astype(np.float64)
    if reduce == "mean":
        # The mean over all the cluster's crops: track means weighted by their crop counts.
        sums = np.zeros((n_groups, emb.shape[1]))
        np.add.at(sums, group, emb * index.n_crops[keep].astype(np.float64)[:, None])
        scores = _unit(sums) @ q
    else:
        scores = np.full(n_groups, -np.inf)
        np.maximum.at(scores, group, _unit(emb) @ q)
    group_video = videos[video_idx[first]]
    group_cluster = clusters[first]
    # Best score first; ties by video id, then cluster id (lexsort's last key is the primary one).
    order = np.lexsort((group_cluster, group_video, -scores))
    order = order[:top] if top else order
    hits = []
    for rank, g in enumerate(order.tolist(), 1):
        rows = keep[group == g]
        video = str(group_video[g])
        fps = index.fps.get(video, 0.0)
        hits.append(ClusterHit(
            rank=rank, video_id=video, cluster_id=int(group_cluster[g]), score=float(scores[g]),
            n_tracks=len(rows), screen_s=float(track_seconds(index.start_s[rows], index.end_s[rows], fps).sum()),
            appearances=appearances(index.shot_id[rows], index.start_s[rows], index.end_s[rows], fps),
            source=index.source.get(video, "")))
    return hits


# ----- the query --------------------------------------------------------------------------------------------------

def read_image(path: str | Path) -> np.ndarray:
    import cv2

    p = Path(path)
    if not p.is_file():
        raise VcnError(f"{p}: no such image file; pass a photo (jpg, png, ...) of the person to find")
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise VcnError(f"{p} is not an image OpenCV can read; pass a jpg, png, bmp, webp or tiff photo")
    return img


def largest_face(faces) -> int | None:
    """Index of the largest detected face (box area), or None when there is none."""
    if len(faces) == 0:
        return None
    b = np.asarray(faces.boxes, np.float64).reshape(-1, 4)
    return int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))


def embed_photo(image: np.ndarray, detector, backbone, name: str = "the photo") -> tuple[np.ndarray, np.ndarray]:
    """(L2-normalised base embedding, face box) of the largest face in a BGR photo."""
    import torch

    from vcn.faces.align import align_face

    faces = detector.detect(image[None])[0]
    best = largest_face(faces)
    if best is None:
        raise VcnError(f"no face found in {name}; use a photo where the face is clearly visible "
                       "(frontal or three-quarter, at least ~40 pixels wide)")
    crop = align_face(image, faces.landmarks[best], 112)
    x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))[None].astype(np.float32))
    with torch.no_grad():
        emb = backbone(x)[0].numpy()
    return _unit(emb).astype(np.float32), np.asarray(faces.boxes[best], np.float32)


# ----- the index ------------------------------------------------------------------------------------------------

def _base_model(names: list[str], where: str) -> str | None:
    base = sorted({n for n in names if not n.endswith(FINETUNED_SUFFIX)})
    if len(base) > 1:
        raise VcnError(f"{where} holds embeddings of several base models ({', '.join(base)}); index one at a time")
    return base[0] if base else None


def track_means(track_ids: np.ndarray, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tracks, mean of each track's L2-normalised embeddings, crop count) from per-crop rows."""
    if len(track_ids) == 0:
        return np.zeros(0, np.int64), np.zeros((0, embeddings.shape[1] if embeddings.ndim == 2 else 0), np.float32), \
            np.zeros(0, np.int64)
    order = np.argsort(track_ids, kind="stable")
    t = np.asarray(track_ids)[order]
    e = _unit(embeddings[order])
    tracks, starts, counts = np.unique(t, return_index=True, return_counts=True)
    sums = np.add.reduceat(e, starts, axis=0)
    return tracks.astype(np.int64), (sums / counts[:, None]).astype(np.float32), counts.astype(np.int64)


def _video_rows(video_dir: Path, model_wanted: str | None) -> dict[str, Any] | None:
    """One `vcn run` output folder's searchable rows, or None when it has no clusters or embeddings yet."""
    if not all((video_dir / f).is_file() for f in ("clusters.parquet", "tracks.parquet", "embeddings.parquet")):
        return None
    summary = json.loads((video_dir / "summary.json").read_text())
    file = video_dir / "embeddings.parquet"
    names = pc.unique(pq.read_table(file, columns=["model"]).column("model")).to_pylist()
    model = model_wanted or _base_model(names, str(video_dir))
    if model is None or model not in names:
        return None
    emb = ds.dataset(file, format="parquet").to_table(columns=["track_id", "embedding"],
                                                      filter=pc.field("model") == model)
    tracks, means, counts = track_means(emb.column("track_id").to_numpy(), list_column_matrix(emb.column("embedding")))
    tr = pq.read_table(video_dir / "tracks.parquet", columns=["track_id", "shot_id", "start_s", "end_s"])
    cl = pq.read_table(video_dir / "clusters.parquet", columns=["track_id", "cluster_id"])
    return {"video_id": str(summary.get("video_id") or video_dir.name), "model": model,
            "backbone": str((summary.get("models") or {}).get("backbone") or model),
            "fps": float((summary.get("video_info") or {}).get("fps") or 0.0),
            "source": str(summary.get("video", "")), "tracks": tr, "clusters": cl,
            "emb_tracks": tracks, "means": means, "counts": counts}


def _assemble(parts: list[dict[str, Any]], where: str) -> SearchIndex:
    if not parts:
        raise VcnError(f"{where} holds no clustered videos with embeddings; run `vcn run VIDEO --out {where}` "
                       "(all stages) on your videos first, or point --index at a catalogue output")
    models = sorted({p["model"] for p in parts})
    if len(models) > 1:
        raise VcnError(f"{where} mixes base models ({', '.join(models)}); pass --model NAME to search one of them")
    cols: dict[str, list] = {k: [] for k in ("video_id", "track_id", "cluster_id", "shot_id", "start_s", "end_s",
                                             "embedding", "n_crops")}
    dim = parts[0]["means"].shape[1] if parts[0]["means"].ndim == 2 else 0
    for p in parts:
        tr = p["tracks"]
        t_ids = tr.column("track_id").to_numpy()
        cluster_of = dict(zip(p["clusters"].column("track_id").to_pylist(),
                              p["clusters"].column("cluster_id").to_pylist()))
        row_of = {int(t): i for i, t in enumerate(p["emb_tracks"].tolist())}
        n = len(t_ids)
        emb = np.zeros((n, dim), np.float32)
        count = np.zeros(n, np.int64)
        for i, t in enumerate(t_ids.tolist()):
            j = row_of.get(int(t))
            if j is not None:
                emb[i], count[i] = p["means"][j], p["counts"][j]
        cols["video_id"].append(np.array([p["video_id"]] * n, dtype=object))
        cols["track_id"].append(t_ids.astype(np.int64))
        # A track missing from the clusters table, or with a null cluster (catalogue rows of an unclustered
        # video), is not searchable: it counts as Unknown.
        labels = [cluster_of.get(int(t)) for t in t_ids.tolist()]
        cols["cluster_id"].append(np.array([-1 if c is None else c for c in labels], np.int64))
        cols["shot_id"].append(tr.column("shot_id").to_numpy().astype(np.int64))
        cols["start_s"].append(tr.column("start_s").to_numpy().astype(np.float64))
        cols["end_s"].append(tr.column("end_s").to_numpy().astype(np.float64))
        cols["embedding"].append(emb)
        cols["n_crops"].append(count)
    cat = {k: np.concatenate(v) for k, v in cols.items()}
    return SearchIndex(**cat, model=models[0], backbone=parts[0]["backbone"],
                       fps={p["video_id"]: p["fps"] for p in parts},
                       source={p["video_id"]: p["source"] for p in parts})


def _catalogue_parts(root: Path, model: str | None) -> list[dict[str, Any]]:
    """A catalogue output: rows from its tracks/ dataset, embeddings from its base_embedding column when the
    dataset has one, else from each video's embeddings.parquet under videos/."""
    from vcn.catalogue import read_catalogue

    table = read_catalogue(root)
    parts = []
    for vid in sorted(set(table.column("video_id").to_pylist())):
        rows = table.filter(pc.equal(table.column("video_id"), vid))
        video_dir = root / "videos" / vid
        summary = {}
        if (video_dir / "summary.json").is_file():
            summary = json.loads((video_dir / "summary.json").read_text())
        if "base_embedding" in rows.column_names:
            have = pc.invert(pc.is_null(rows.column("base_embedding")))
            r = rows.filter(have)
            means = list_column_matrix(r.column("base_embedding"))
            counts = (r.column("n_good_crops").to_numpy().astype(np.int64) if "n_good_crops" in r.column_names
                      else np.ones(r.num_rows, np.int64))
            # Without the video's summary the backbone is the configured default (what `vcn run` used unless
            # told otherwise); --backbone overrides it at search time.
            found = {"model": model or str((summary.get("models") or {}).get("backbone") or _default_backbone()),
                     "emb_tracks": r.column("track_id").to_numpy(), "means": means, "counts": np.maximum(counts, 1)}
        else:
            found = _video_rows(video_dir, model) if (video_dir / "summary.json").is_file() else None
            if found is None:
                continue
        clusters = rows.select(["track_id", "cluster_id"]).filter(pc.invert(pc.is_null(rows.column("cluster_id"))))
        parts.append({**found, "video_id": vid, "tracks": rows.select(["track_id", "shot_id", "start_s", "end_s"]),
                      "clusters": clusters,
                      "backbone": str((summary.get("models") or {}).get("backbone") or found["model"]),
                      "fps": float((summary.get("video_info") or {}).get("fps") or 0.0),
                      "source": (rows.column("source_uri")[0].as_py() if "source_uri" in rows.column_names
                                 and rows.num_rows else str(summary.get("video", "")))})
    return parts


def _default_backbone() -> str:
    from vcn.config import EmbedConfig

    return EmbedConfig().backbone


def _video_dirs(root: Path) -> list[Path]:
    if (root / "summary.json").is_file():
        return [root]
    found = sorted(p.parent for p in root.glob("*/summary.json"))
    return found or sorted(p.parent for p in root.glob("videos/*/summary.json"))


def load_index(index: str | Path, model: str | None = None) -> SearchIndex:
    """The searchable tracks of a local folder or s3:// prefix: a catalogue output (tracks/ dataset), a folder
    of `vcn run` outputs (OUT/*/), or one video's output folder."""
    if storage.is_s3(str(index)):
        with scratch_dir("index") as tmp:
            local = _download_index(str(index), Path(tmp))
            return load_index(local, model)
    root = Path(index).expanduser()
    if not root.is_dir():
        raise VcnError(f"--index {index}: no such folder; pass the --out folder of `vcn run`, a catalogue "
                       "output folder, or an s3:// prefix of either")
    if (root / "tracks").is_dir() and not (root / "tracks.parquet").is_file():
        parts = _catalogue_parts(root, model)
    else:
        parts = [p for p in (_video_rows(d, model) for d in _video_dirs(root)) if p is not None]
    return _assemble(parts, str(index))


# Files an index needs; crops (the pixels) are never downloaded.
_INDEX_FILES = re.compile(r"(^|/)(summary\.json|tracks\.parquet|clusters\.parquet|embeddings\.parquet)$"
                          r"|(^|/)tracks/video_id=[^/]+/[^/]+\.parquet$")


def _download_index(uri: str, dest: Path) -> Path:
    bucket, key = storage.split_s3(uri)
    prefix = key if (not key or key.endswith("/")) else key + "/"
    client = storage.s3_client()
    count = 0
    for obj in storage.list_objects(f"s3://{bucket}/{prefix}", client):
        rel = obj["key"][len(prefix):]
        if rel and _INDEX_FILES.search(rel) and not any(part.startswith(".") for part in rel.split("/")):
            storage.download_file(obj["uri"], dest / rel, client)
            count += 1
    if count == 0:
        raise VcnError(f"--index {uri} holds no vcn outputs (no summary.json or tracks/ dataset under it); "
                       "check the prefix")
    return dest


def search(image: str | Path, index: str | Path | SearchIndex, top: int = 10, reduce: str = DEFAULT_REDUCTION,
           backbone: str | None = None, detector: str = "retinaface", model: str | None = None
           ) -> tuple[list[ClusterHit], SearchIndex]:
    """The whole command: load the index, embed the photo's largest face with the index's base backbone, rank."""
    from vcn.config import DetectConfig
    from vcn.models import load_backbone, load_detector

    idx = index if isinstance(index, SearchIndex) else load_index(index, model)
    photo = read_image(image)
    query, _ = embed_photo(photo, load_detector(detector, DetectConfig()), load_backbone(backbone or idx.backbone),
                           name=str(image))
    return rank_clusters(query, idx, reduce=reduce, top=top), idx


def format_hits(hits: list[ClusterHit]) -> str:
    """A plain-text table of hits for the terminal."""
    from vcn.report.html import format_time

    if not hits:
        return "no clusters in the index"
    lines = []
    for h in hits:
        spans = ", ".join(f"shot {a.shot_id} {format_time(a.start_s)}-{format_time(a.end_s)}" for a in h.appearances)
        lines.append(f"{h.rank:>3}. {h.score:+.3f}  {h.video_id}  cluster {h.cluster_id}  "
                     f"({h.n_tracks} tracks, {format_time(h.screen_s)} on screen): {spans}")
    return "\n".join(lines)


def search_persons(image: str | Path, index: str | Path, top: int = 10, reduce: str = DEFAULT_REDUCTION,
                   backbone: str | None = None) -> tuple[list, SearchIndex] | None:
    """`search`, answered with persons (vcn.persons) where the index has a person index; None where it has not.

    Every cluster is ranked, then grouped by its person: a person ranks by its best cluster and lists all of its
    clusters that scored, so one answer shows every video, shot and time range of that person.
    """
    from vcn.persons.query import group_hits
    from vcn.persons.root import IndexRoot
    from vcn.persons.store import read_state

    state = read_state(IndexRoot(index))
    if state.generation == 0:
        return None
    hits, idx = search(image, index, top=None, reduce=reduce, backbone=backbone)
    return group_hits(hits, state, top=top), idx
