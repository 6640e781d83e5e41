"""Decoding (probe, batches, timestamps, rotation, pixel aspect, broken files) and shot detection."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests import videos
from vcn.config import ShotConfig
from vcn.errors import VcnError
from vcn.video.decode import DecodeError, iter_frames, probe_video
from vcn.video.shots import ShotDetector, detect_shots, shots_from_cuts

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
HAMILTON = SHARED / "data" / "videos" / "short_hamilton_clip.mp4"
needs_hamilton = pytest.mark.skipif(not HAMILTON.is_file(), reason=f"shared test data not found at {HAMILTON}")


def decoded_indices(path, batch_frames=8, **kw):
    """Frame indices as the frames themselves show them, and the indices iter_frames reported."""
    shown, reported, sizes = [], [], []
    for batch in iter_frames(path, batch_frames, **kw):
        assert batch.frames.dtype == np.uint8 and batch.frames.flags["C_CONTIGUOUS"]
        sizes.append(len(batch))
        shown += [videos.read_index(f) for f in batch.frames]
        reported += batch.indices.tolist()
    return shown, reported, sizes


@pytest.mark.parametrize("fps, step", [(30, Fraction(1, 30)), (Fraction(30000, 1001), Fraction(1001, 30000)),
                                       (60, Fraction(1, 60)), (25, Fraction(1, 25))])
def test_constant_rate_times_are_exact(tmp_path, fps, step):
    path = videos.write_video(tmp_path / "v.mp4", n_frames=40, fps=fps)
    info = probe_video(path)
    assert info.n_frames == 40
    assert info.fps == pytest.approx(float(fps), rel=1e-6)
    assert (info.width, info.height, info.codec) == (160, 96, "h264")
    assert info.timestamps_from == "container"
    assert not info.partial
    np.testing.assert_allclose(info.times, np.arange(40) * float(step), atol=1e-9)
    assert info.duration_s == pytest.approx(40 * float(step), abs=1e-6)


def test_frames_come_in_order_in_bounded_batches(tmp_path):
    path = videos.write_video(tmp_path / "v.mp4", n_frames=45)
    shown, reported, sizes = decoded_indices(path, batch_frames=16)
    assert shown == list(range(45)) and reported == list(range(45))
    assert sizes == [16, 16, 13]
    shown, reported, _ = decoded_indices(path, batch_frames=7, start_frame=10, end_frame=30)
    assert shown == reported == list(range(10, 30))


def test_variable_frame_rate_times_are_the_real_ones(tmp_path):
    pts = [0.0, 0.04, 0.08, 0.2, 0.25, 0.5, 0.52, 0.54, 1.0, 1.1, 1.35, 2.0]
    path = videos.write_video(tmp_path / "vfr.mp4", n_frames=len(pts), fps=30, pts_s=pts)
    info = probe_video(path)
    np.testing.assert_allclose(info.times, pts, atol=1e-6)
    times = np.concatenate([b.times for b in iter_frames(path, 5, info=info)])
    np.testing.assert_allclose(times, pts, atol=1e-6)
    # Nothing like index / fps: the 9th frame is at 1.0 s, not 8 / nominal rate.
    assert abs(times[8] - 8 / info.fps) > 0.05
    ends = np.concatenate([b.end_times for b in iter_frames(path, 5, info=info)])
    np.testing.assert_allclose(ends[:-1], pts[1:], atol=1e-6)
    shown, _, _ = decoded_indices(path)
    assert shown == list(range(len(pts)))


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_video_comes_out_upright(tmp_path, rotation):
    path = videos.write_video(tmp_path / "r.mp4", n_frames=6, rotation=rotation)
    info = probe_video(path)
    assert info.rotation == rotation
    assert (info.coded_width, info.coded_height) == (160, 96)
    assert (info.width, info.height) == ((96, 160) if rotation in (90, 270) else (160, 96))
    batch = next(iter_frames(path, 6, info=info))
    assert batch.frames.shape == (6, info.height, info.width, 3)
    for i, frame in enumerate(batch.frames):
        # The display matrix says: turn the stored picture `rotation` degrees counter-clockwise.
        displayed = np.rot90(videos.index_frame(i), k=rotation // 90)
        assert np.abs(frame.astype(int) - displayed).mean() < 8
        assert np.abs(frame.astype(int) - np.rot90(displayed, 2)).mean() > 30


def test_non_square_pixels_are_resampled_to_square(tmp_path):
    path = videos.write_video(tmp_path / "anamorphic.mp4", n_frames=5, sample_aspect_ratio=Fraction(2, 1))
    info = probe_video(path)
    assert info.sample_aspect_ratio == 2.0
    assert (info.width, info.height) == (320, 96)
    batch = next(iter_frames(path, 5, info=info))
    assert batch.frames.shape == (5, 96, 320, 3)
    assert [videos.read_index(f) for f in batch.frames] == list(range(5))


def test_missing_file_or_a_directory(tmp_path):
    with pytest.raises(VcnError, match=r"absent\.mp4: no such file"):
        probe_video(tmp_path / "absent.mp4")
    with pytest.raises(VcnError, match="not a file"):
        probe_video(tmp_path)


def test_zero_byte_file(tmp_path):
    path = videos.write_zero_length(tmp_path / "empty.mp4")
    with pytest.raises(VcnError, match=r"empty\.mp4 is empty \(0 bytes\)"):
        probe_video(path)


def test_not_a_video(tmp_path):
    path = videos.write_not_video(tmp_path / "notes.mp4")
    with pytest.raises(VcnError, match=r"notes\.mp4 is not a video"):
        probe_video(path)


def test_audio_only(tmp_path):
    path = videos.write_audio_only(tmp_path / "sound.m4a")
    with pytest.raises(VcnError, match="no video stream"):
        probe_video(path)


def test_video_stream_without_frames(tmp_path):
    path = videos.write_no_frames(tmp_path / "blank.avi")
    with pytest.raises(VcnError, match="no frames"):
        probe_video(path)


def test_mp4_cut_off_before_its_index_is_unreadable(tmp_path):
    path = videos.write_truncated(tmp_path / "cut.mp4", n_frames=60)
    with pytest.raises(VcnError, match=r"cut\.mp4.*ffmpeg -i"):
        probe_video(path)


@pytest.mark.parametrize("suffix", [".mkv", ".avi"])
def test_cut_off_file_is_partial_and_decodes_what_is_there(tmp_path, suffix):
    codec = "mpeg4" if suffix == ".avi" else "libx264"
    path = videos.write_truncated(tmp_path / f"cut{suffix}", n_frames=120, keep_fraction=0.5, codec=codec)
    info = probe_video(path)
    assert info.partial
    assert 10 < info.n_frames < 100
    shown, reported, _ = decoded_indices(path, batch_frames=32, info=info)
    assert shown == reported == list(range(info.n_frames))


def test_corrupt_data_raises_after_the_good_batches(tmp_path):
    path = videos.write_corrupt_middle(tmp_path / "bad.mp4", n_frames=120)
    info = probe_video(path)
    assert info.n_frames == 120 and not info.partial  # the index is intact: nothing shows until decoding
    delivered = []
    with pytest.raises(DecodeError) as caught:
        for batch in iter_frames(path, 16, info=info):
            delivered += [videos.read_index(f) for f in batch.frames]
    err = caught.value
    assert isinstance(err, VcnError)
    assert "bad.mp4" in str(err) and f"frame {err.frames_decoded - 1}" in str(err)
    assert 0 < err.frames_decoded < 120
    assert delivered == list(range(err.frames_decoded))


@needs_hamilton
def test_hamilton_probe_and_times_match_pyav():
    info = probe_video(HAMILTON)
    assert (info.n_frames, info.width, info.height, info.rotation) == (275, 640, 360, 0)
    assert info.fps == pytest.approx(29.97, abs=0.01)
    with av.open(str(HAMILTON)) as container:
        stream = container.streams.video[0]
        shown_at = [float(frame.time) for frame in container.decode(stream)]  # decoder output, display order
    assert shown_at[0] == pytest.approx(0.852, abs=1e-3)  # this file's first frame is not at 0
    np.testing.assert_allclose(info.times, shown_at, atol=1e-9)
    assert np.all(np.diff(info.times) > 0)


@needs_hamilton
def test_one_shared_converter_gives_each_frames_own_to_ndarray_picture():
    # The decoder converts every picture with one swscale context (vcn.video.decode._Converter) instead of one
    # per frame (`frame.to_ndarray`): the very same pixels, frame after frame.
    from vcn.video.decode import _Converter

    info = probe_video(HAMILTON)
    convert = _Converter(info)
    with av.open(str(HAMILTON)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            own = frame.to_ndarray(format="bgr24", width=info.coded_width, height=info.coded_height)
            shared = convert(frame)
            assert shared.dtype == np.uint8 and np.array_equal(shared, own), k
            if k == 150:
                break
    small = _Converter(info)
    small.width, small.height = info.coded_width // 2, info.coded_height // 2   # and when it has to scale
    with av.open(str(HAMILTON)) as container:
        frame = next(container.decode(video=0))
        assert np.array_equal(small(frame), frame.to_ndarray(format="bgr24", width=small.width, height=small.height))


@needs_hamilton
def test_hamilton_shots():
    shots = detect_shots(HAMILTON, ShotConfig())
    starts = [s.start_frame for s in shots]
    # Hard cuts at 20, 82 and 211; the fast pan inside the second shot is not a cut.
    assert len(shots) == 4
    for found, expected in zip(starts[1:], [20, 82, 211]):
        assert abs(found - expected) <= 1
    assert shots[0].start_frame == 0 and shots[-1].end_frame == 275
    assert all(a.end_frame == b.start_frame and a.end_s == b.start_s for a, b in zip(shots, shots[1:]))
    info = probe_video(HAMILTON)
    assert shots[1].start_s == pytest.approx(info.times[starts[1]])
    assert shots[-1].end_s == pytest.approx(info.end_times[-1])


def test_shots_from_frames_already_decoded_match_the_file(tmp_path):
    # Three "scenes" of different content: two hard cuts.
    def make(i):
        frame = videos.index_frame(i)
        frame[:] = (frame.astype(np.int32) + [(0, 0, 0), (200, 0, 0), (0, 0, 200)][i // 15]).clip(0, 255)
        return frame.astype(np.uint8)

    path = videos.write_video(tmp_path / "cuts.mp4", n_frames=45, make_frame=make)
    from_file = detect_shots(path, ShotConfig())
    from_batches = detect_shots(iter_frames(path, 8), ShotConfig())
    assert from_file == from_batches
    assert [s.start_frame for s in from_file] == [0, 15, 30]


def test_no_cut_is_one_shot(tmp_path):
    path = videos.write_video(tmp_path / "calm.mp4", n_frames=30)
    shots = detect_shots(path, ShotConfig())
    assert len(shots) == 1 and (shots[0].start_frame, shots[0].end_frame) == (0, 30)


def test_shot_detector_wants_consecutive_frames():
    detector = ShotDetector(ShotConfig())
    frames = np.zeros((2, 48, 64, 3), np.uint8)
    detector.feed(frames, [0, 1])
    with pytest.raises(ValueError, match="consecutive"):
        detector.feed(frames, [5, 6])


def test_shots_from_cuts_edges():
    times = np.arange(10) / 10
    shots = shots_from_cuts([0, 4, 4, 12], times)  # a cut on the first frame and past the end are ignored
    assert [(s.start_frame, s.end_frame) for s in shots] == [(0, 4), (4, 10)]
    assert shots[1].end_s == pytest.approx(1.0)
    assert shots_from_cuts([], np.zeros(0)) == []
