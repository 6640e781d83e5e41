"""Arrow schemas of every table vcn writes: the one place they are declared (documented in the README)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

# Five landmarks (left eye, right eye, nose, left mouth corner, right mouth corner) as x0,y0,...,x4,y4.
LANDMARKS = pa.list_(pa.float32(), 10)

_BOX = [
    pa.field("x1", pa.float32()),
    pa.field("y1", pa.float32()),
    pa.field("x2", pa.float32()),
    pa.field("y2", pa.float32()),
]

SHOTS = pa.schema([
    pa.field("video_id", pa.string()),
    pa.field("shot_id", pa.int32()),
    pa.field("start_frame", pa.int64()),   # first decoded frame index of the shot
    pa.field("end_frame", pa.int64()),     # one past the last frame
    pa.field("start_s", pa.float64()),     # presentation time of the first frame, seconds
    pa.field("end_s", pa.float64()),       # presentation time just after the last frame
])

DETECTIONS = pa.schema([
    pa.field("video_id", pa.string()),
    pa.field("det_id", pa.int64()),
    pa.field("shot_id", pa.int32()),
    pa.field("frame", pa.int64()),
    pa.field("t_s", pa.float64()),
    *_BOX,
    pa.field("score", pa.float32()),
    pa.field("landmarks", LANDMARKS),
    pa.field("face_px", pa.float32()),     # shorter side of the box, pixels
    pa.field("track_id", pa.int64()),      # -1 when the tracker left the detection unassigned
])

TRACKS = pa.schema([
    pa.field("video_id", pa.string()),
    pa.field("track_id", pa.int64()),      # unique within the video
    pa.field("shot_id", pa.int32()),
    pa.field("start_frame", pa.int64()),
    pa.field("end_frame", pa.int64()),     # last frame with a detection (inclusive)
    pa.field("start_s", pa.float64()),
    pa.field("end_s", pa.float64()),
    pa.field("n_detections", pa.int32()),
    pa.field("n_crops", pa.int32()),
    pa.field("n_good_crops", pa.int32()),  # crops that pass the quality gate
    pa.field("mean_score", pa.float32()),
])

CROPS = pa.schema([
    pa.field("video_id", pa.string()),
    pa.field("crop_id", pa.int64()),
    pa.field("track_id", pa.int64()),
    pa.field("shot_id", pa.int32()),
    pa.field("frame", pa.int64()),
    pa.field("t_s", pa.float64()),
    *_BOX,
    pa.field("score", pa.float32()),
    pa.field("landmarks", LANDMARKS),
    pa.field("face_px", pa.float32()),
    pa.field("blur_var", pa.float32()),    # variance of the Laplacian of the aligned grey crop
    pa.field("quality_ok", pa.bool_()),    # passes the minimum-size and blur gates
    pa.field("image", pa.binary()),        # aligned 112x112 BGR crop, encoded (PNG by default)
    # HSV colour histogram of the torso under the face box (vcn.faces.clothes); null where it is out of frame
    pa.field("torso_hist", pa.list_(pa.float32())),
    # the crop's frame as a 32x18 HSV thumbnail (vcn.video.looks), to tell camera set-ups apart
    pa.field("frame_look", pa.binary()),
])

EMBEDDINGS = pa.schema([
    pa.field("video_id", pa.string()),
    pa.field("crop_id", pa.int64()),
    pa.field("track_id", pa.int64()),
    pa.field("model", pa.string()),        # "<backbone>" or "<backbone>+finetuned"
    pa.field("embedding", pa.list_(pa.float32())),
])

CLUSTERS = pa.schema([
    pa.field("video_id", pa.string()),
    pa.field("track_id", pa.int64()),
    pa.field("cluster_id", pa.int64()),    # -1 = Unknown
    pa.field("track_quality", pa.float32()),  # SER-FIQ track quality (NaN where not computed)
    pa.field("reason", pa.string()),       # clustered | too_small | too_blurred | serfiq_outlier
])

# The catalogue-level dataset: one row per track of every video, partitioned by video_id (OUT/tracks/).
CATALOGUE_TRACKS = pa.schema([
    pa.field("track_id", pa.int64()),
    pa.field("cluster_id", pa.int64()),      # null until the video is clustered; -1 = Unknown
    pa.field("reason", pa.string()),         # clustered | too_small | too_blurred | serfiq_outlier (null before clustering)
    pa.field("track_quality", pa.float32()),
    pa.field("shot_id", pa.int32()),
    pa.field("start_frame", pa.int64()),
    pa.field("end_frame", pa.int64()),
    pa.field("start_s", pa.float64()),
    pa.field("end_s", pa.float64()),
    pa.field("n_detections", pa.int32()),
    pa.field("n_crops", pa.int32()),
    pa.field("n_good_crops", pa.int32()),
    pa.field("mean_score", pa.float32()),
    pa.field("source_uri", pa.string()),
])

# The catalogue-wide person index (OUT/persons/, see vcn/persons/): one generation folder per update, named by
# OUT/persons/CURRENT.json. Clusters are linked across videos in the BASE backbone's space only.
PERSON_CLUSTERS = pa.schema([
    pa.field("video_id", pa.string()),
    pa.field("cluster_id", pa.int64()),       # the video's cluster (never -1: Unknown tracks are no one yet)
    pa.field("person_id", pa.int64()),        # stable across updates; never reused once retired
    pa.field("n_tracks", pa.int32()),
    pa.field("n_crops", pa.int32()),          # base embeddings behind `embedding`
    pa.field("screen_s", pa.float64()),
    pa.field("embedding", pa.list_(pa.float32())),   # L2-normalised mean of the cluster's base crop embeddings
    pa.field("own_nearest", pa.float32()),    # cosine distance to the nearest other cluster of its video (NaN: alone)
    pa.field("link_distance", pa.float32()),  # distance of the link that joined it to its person (NaN: founder)
    pa.field("linked_by", pa.string()),       # founder | auto | archivist
    pa.field("thumb_crop_id", pa.int64()),    # the crop whose base embedding is nearest the cluster's mean
    pa.field("video_fingerprint", pa.string()),
    # Clusters of the same video with a track in one of its frames (two people for certain: never one person);
    # null in indexes written before this column, read as "every other cluster of the video".
    pa.field("shares_frame_with", pa.list_(pa.int64())),
])

PERSONS = pa.schema([
    pa.field("person_id", pa.int64()),
    pa.field("name", pa.string()),            # null until an archivist names the person
    pa.field("n_videos", pa.int32()),
    pa.field("n_clusters", pa.int32()),
    pa.field("n_tracks", pa.int32()),
    pa.field("screen_s", pa.float64()),
    pa.field("embedding", pa.list_(pa.float32())),   # L2-normalised crop-weighted mean of its clusters' embeddings
    pa.field("thumbnails", pa.list_(pa.struct([pa.field("video_id", pa.string()),
                                               pa.field("crop_id", pa.int64())]))),  # longest clusters first
])

# Which videos the person index holds, and the fingerprint (summary.json hash or ETag) they were read at.
PERSON_VIDEOS = pa.schema([
    pa.field("video_id", pa.string()),
    pa.field("video_fingerprint", pa.string()),
    pa.field("n_clusters", pa.int32()),
    pa.field("generation", pa.int64()),       # the index update that added it
    # Known-different evidence the link threshold is set from (vcn/persons/link.py), NaN when none:
    pa.field("min_cooccurring", pa.float32()),  # closest two of its clusters that share a frame
    pa.field("n_cooccurring", pa.int32()),
    pa.field("min_within", pa.float32()),       # closest two of its clusters
    pa.field("n_within", pa.int32()),
])

SCHEMAS: dict[str, pa.Schema] = {
    "shots": SHOTS,
    "detections": DETECTIONS,
    "tracks": TRACKS,
    "crops": CROPS,
    "embeddings": EMBEDDINGS,
    "clusters": CLUSTERS,
    "person_clusters": PERSON_CLUSTERS,
    "persons": PERSONS,
    "person_videos": PERSON_VIDEOS,
}


# Columns added after outputs were first written: a table saved before them loads with the column null (its
# consumer then does without, e.g. stage 3 joins no clusters by clothes) instead of failing a re-run.
ADDED_LATER = {"crops": ("torso_hist", "frame_look")}


def make_table(name: str, rows: list[dict[str, Any]] | dict[str, Any]) -> pa.Table:
    """Build a table of a declared schema from row dicts or a dict of columns (extra keys are an error; an
    ADDED_LATER column left out is null)."""
    schema = SCHEMAS[name]
    optional = ADDED_LATER.get(name, ())
    if isinstance(rows, dict):
        columns = rows
    else:
        given = rows[0].keys() if rows else ()
        columns = {f.name: [r[f.name] for r in rows] for f in schema if f.name in given or f.name not in optional}
    extra = set(columns) - set(schema.names)
    if extra:
        raise ValueError(f"table {name}: unknown columns {sorted(extra)}")
    table = pa.table({f.name: _column(columns[f.name], f.type) for f in schema if f.name in columns or
                      f.name not in optional})
    return conform(name, table)


def _column(values: Any, type_: pa.DataType) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.cast(type_)
    return pa.array(values, type=type_)


def conform(name: str, table: pa.Table) -> pa.Table:
    """A saved table in the declared schema of `name`, with the ADDED_LATER columns it lacks filled with nulls."""
    schema = SCHEMAS[name]
    for column in ADDED_LATER.get(name, ()):
        if column not in table.column_names:
            table = table.append_column(schema.field(column), pa.nulls(table.num_rows, schema.field(column).type))
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise ValueError(f"table {name} lacks the columns {missing}")
    return table.select(schema.names).cast(schema)


def empty_table(name: str) -> pa.Table:
    return SCHEMAS[name].empty_table()


def concat_parts(name: str, parts: list[pa.Table]) -> pa.Table:
    """Tables of schema `name` (per shot, per frame range, per model) as one; the empty table of that schema when
    all are empty."""
    parts = [p for p in parts if p.num_rows]
    return pa.concat_tables(parts) if parts else empty_table(name)
