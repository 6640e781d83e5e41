"""Dataclass configs: the only home of defaults, including the paper's constants (METHOD.md)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcn.errors import VcnError


@dataclass
class DecodeConfig:
    # Frames decoded per batch; bounds memory for long files (a 1280x720 BGR frame is 2.8 MB, 1920x1080 6.2 MB).
    # 16: three batches live at once with the decode thread (~130 MB at 720p); larger batches gain nothing.
    batch_frames: int = 16
    # Batches a decode thread keeps ready ahead of detection (0 = decode, and score shots, in the detecting thread:
    # no overlap, the reference benchmarks/stage1.py compares against).
    prefetch_batches: int = 1
    # auto: deinterlace when the stream or its frames say interlaced; always; never (progressive material that
    # is flagged interlaced by mistake).
    deinterlace: str = "auto"


@dataclass
class ShotConfig:
    # PySceneDetect ContentDetector defaults (METHOD.md stage 1.1).
    threshold: float = 27.0
    min_scene_len_frames: int = 8


@dataclass
class DetectConfig:
    model: str = "retinaface"
    score_threshold: float = 0.8
    nms_threshold: float = 0.4
    # Frames per detector call; 0 = auto: 8 where onnxruntime runs it on a CPU, 32 on a GPU (vcn.pipeline
    # AUTO_DETECT_BATCH: the H200's detector ran 1.6x faster at 32 than at 8 at 720p, 1.26x at 1080p). A decode
    # batch is raised to at least this, since a detector call never spans two.
    batch_size: int = 0
    # Frames are downscaled so their longer side is at most this before detection (0 = never).
    max_side: int = 960
    # auto: onnxruntime, or torch on CUDA when torch has a GPU and onnxruntime has no CUDA provider (the wheel
    # installed is CPU-only); cpu: onnxruntime; cuda / cuda:N: torch on that GPU; torch-cpu: the torch path on CPU.
    device: str = "auto"


@dataclass
class QualityGateConfig:
    # Unknown is for faces nobody can name, not for small or dim ones (docs/measurements.md "Accuracy"). Measured on
    # the labelled real clips: no labelled track had all its crops below 16 px or a blur variance of 5, while the
    # earlier 24 px / 15 sent 2 of 78 labelled tracks to Unknown (they stay in the `paper` preset). Faces smaller than
    # this (shorter box side, pixels) are Unknown (METHOD.md stage 1.3).
    min_face_px: float = 16.0
    # Variance of the Laplacian of the aligned 112x112 grey crop; below this the crop is too blurred.
    min_blur_var: float = 5.0


@dataclass
class TrackConfig:
    tracker: str = "botsort"
    # Re-identification off: boxmot would download ReID weights otherwise.
    with_reid: bool = False
    track_high_thresh: float = 0.5
    track_low_thresh: float = 0.1
    new_track_thresh: float = 0.6
    track_buffer: int = 30
    match_thresh: float = 0.8
    # Tracks shorter than this many detections are dropped as noise.
    min_track_len: int = 3
    # Shots tracked at once (threads): 0 = one per CPU core, at most 8, or OMP_NUM_THREADS where set (Ray sets it
    # for a task). Each shot is linked and its frames decoded again for its crops on its own, so the output is the
    # same for any number. On the H200 the serial track stage took 47 s of a 10-minute 1080p video's 173 s with the
    # GPU idle (docs/measurements.md "On a GPU"); on 2 CPU cores 2 workers took 0.82x one's time.
    workers: int = 0
    # Track each shot (and cut its crops) while the scan detects the rest of the video, as soon as the cut after
    # it is found (vcn.pipeline.ShotsAsTheyEnd), or after the scan; the same tables either way. "auto": during the
    # scan where detection runs on a GPU (on the H200 the track stage took 47 s after detection, the GPU idle),
    # after it on a CPU, where the tracking threads take the detector's cores: on the sitcom on 2 cores it gained
    # nothing (best of two runs each, 72.0 s against 65.9 s; benchmarks/stage1.py, session 38). "always" or "never"
    # to choose.
    during_scan: str = "auto"


@dataclass
class SampleConfig:
    # DECISION (METHOD.md 1.5): sample by time, one crop every 0.5 s of track time.
    interval_s: float = 0.5
    crop_size: int = 112
    image_format: str = "png"


@dataclass
class EmbedConfig:
    backbone: str = "sface"
    batch_size: int = 64


@dataclass
class SSLConfig:
    """Stage 2 self-distillation (METHOD.md stage 2). Fixed constants, independent of the video."""

    head_hidden: int = 2048
    head_bottleneck: int = 256
    head_out: int = 4096
    # Prototype sets: the head's last layer holds this many independent sets of head_out prototypes on one bottleneck;
    # Eq. 2 is taken per set and averaged, in training and as Algorithm 1's distance. 1 = the paper. With one set the
    # teacher is one-hot and uses about one prototype per person, so two look-alikes that land on the same prototype
    # have a cross loss as low as each track's own, and Algorithm 1 merges them; with 4 sets they must share a
    # prototype in every set to look alike (docs/measurements.md "Accuracy", benchmarks/seeds.py: chosen on the 8
    # labelled videos over 2 seeds). ~5% more stage-2 time (the extra prototypes are one matmul).
    prototype_sets: int = 4
    # DINO's value (METHOD.md). 0.02-0.07 measured on seeds 2, 3 (docs/measurements.md "The teacher's temperature"):
    # softer splits the sitcom further, sharper merges the golf promo's look-alikes; none buys purity.
    teacher_temp: float = 0.04
    student_temp: float = 0.1
    center_momentum: float = 0.9
    # Teacher EMA momentum, cosine from start to end, once over the warm-up steps and once over the
    # full-finetuning steps (a single schedule would leave the teacher frozen for all of full finetuning).
    # 0.9, not DINO's 0.996 (the paper preset): a video gives 5-40 full-finetuning steps, and at 0.996 the
    # teacher kept 99.9% of its start, so the finetuned embedding equalled the base one (cosine 1.00000).
    ema_start: float = 0.9
    ema_end: float = 1.0
    # Full-finetuning rounds (matching between them). 2, not METHOD.md's 3 (the paper preset): over the 8
    # labelled videos x seeds 2-9, none used to choose a default, two scored mean F 0.932 against three's 0.928,
    # WCP >= 0.97 on 51 of 64 against 52, for 0.78x the stage-2 time (docs/measurements.md "Cost", session 19).
    rounds: int = 2
    # Frozen backbone, heads only (first round), on cached features of `warmup_views` augmented views per
    # crop. 10 epochs (the paper preset: 50) because each head step costs ~0.1-0.3 s on a CPU core (a 2048-wide
    # MLP to 4096 prototypes) and 50 epochs of the 82-s sitcom were 500 steps, more than stage 1 (issue 13).
    # With today's cheaper head steps most of the warm-up is the views' backbone pass (sitcom, 2 cores, session
    # 20: 10 more epochs 3.6 s, the 4 views of 285 crops about 17 s).
    # Measured on its own in session 20 over the 8 labelled videos x seeds 2-9: 2 views x 5 epochs (mean F 0.926,
    # WCP >= 0.97 on 46 of 64) and 4 views x 20 epochs (0.921, 47) both scored below 4 x 10 (0.932, 51)
    # (docs/measurements.md "The warm-up's length, both ways"); 2 views x 10 epochs too, over seeds 2-5 in session
    # 40 (0.934 against 0.949, the short golf cut's look-alikes merged on every seed; "Two warm-up views").
    warmup_epochs: int = 10
    warmup_views: int = 4
    # The warm-up trains the heads on the crops' base embeddings (un-augmented; stage 2's SER-FIQ pass has already
    # computed them) instead of on `warmup_views` augmented views: no backbone pass of its own (pairs are still two
    # crops of one track). With ssl.backbone_layers=tail it changes nothing: that warm-up reads the trunk's views,
    # which the tail's full rounds need cached anyway. An option for throughput: on the sitcom the warm-up 6.8 s against 15.0 s, stage 2 0.84x;
    # but over the 8 labelled videos x seeds 2-9 mean F 0.924 against 0.930, WCP >= 0.97 on 50 of 64 against 51
    # (the sitcom and Friends split further), short of the rule written before the runs (docs/measurements.md
    # "The warm-up on the base embeddings", session 22). Re-tried with shot threading (session 26): 0.931 against
    # 0.941 over seeds 2-5, WCP >= 0.97 on 25 of 32 against 27: still off.
    warmup_on_base: bool = False
    # Which backbone weights the full finetune trains (vcn/ssl/split.py). "low_res" (default): the layers from 1/8 of
    # the crop's resolution on (SFace: after conv_7's depthwise layer, 99% of the weights); the high-resolution front
    # stays frozen and runs without gradients once per step for student and teacher. The front is 1.4% of the weights
    # but most of a step's time (a step costs 0.51x the whole network's on a CPU core), and freezing it scored as
    # "all" over 8 labelled videos x 2 seeds (mean BCubed F 0.960 against 0.961; docs/measurements.md "Accuracy").
    # "all": every layer trains (the paper, and the paper preset). "tail": the backbone is cut at its narrowest
    # single-tensor point that leaves at least half of its weights after it (SFace: after conv_13's depthwise layer,
    # 83% of the weights), the frozen trunk runs once per crop and augmented view for the whole finetune, and every
    # step trains only tail and head: stage 2 2-3x cheaper on a CPU (full rounds ~12x) but lower (mean F 0.922 with 4
    # views, 0.936 with 12, against 0.951 for "all" over 2 seeds, session 11): the layers between conv_7 and conv_13
    # must train. Backbones without a graph train "all".
    backbone_layers: str = "low_res"
    # Full finetuning epochs per round: the CPU cost (one epoch of 300 crops is ~600 student forward+backward
    # and ~600 teacher forward passes of SFace). 1 keeps a 30-track x 10-crop video within a few minutes.
    epochs_per_round: int = 1
    # Pairs per step (each pair is 2 crops through student and teacher). 32 rather than 64: twice the updates
    # for the same compute, which matters with a few hundred crops per video.
    batch_size: int = 32
    # Pairs per forward/backward pass of the full finetune, gradients accumulated over a batch (0 = the whole
    # batch at once): the same gradient with less activation memory (issue 13). Training every layer ("all"),
    # SFace keeps 62 MB of activations per crop for backward: on the sitcom stage 2 peaked at 2,843 MiB with 8
    # pairs and 2,034 MiB with 2 (set 2 there). With the front frozen ("low_res", the default) a crop keeps
    # far less, and each micro-batch also pays a pass of the 9-M-weight head: on the sitcom (`vcn run`, 2 cores)
    # 4 pairs took 0.87x the full-round time of 2 and peaked at 1,822 MiB against 1,735 MiB (8 pairs, timed before
    # the head's prototypes were normalised once per step: 0.69x of 2 in a round on its own, 330 MiB more).
    # 8 pairs, timed after (session 15, stage 2 on its own): full rounds 0.93x of 4, peak +150 MiB, and one of
    # the 16 development finetunes came out one cluster different (benchmarks/results/seeds_micro_batch_8.json),
    # so 4 stays. Raise it on a GPU.
    micro_batch_pairs: int = 4
    lr_head: float = 1e-3
    # 1e-4 (paper preset 1e-5): with tens of steps per video, 1e-5 left the backbone where it started. 5e-5 over the 8
    # labelled videos x seeds 2-3 (session 40): mean F 0.939 against 0.950, the sitcom split further and the short
    # golf cut's look-alikes merged on one seed; 2e-4: 0.938, the sitcom joined more but Friends and the golfers
    # merged once each (docs/measurements.md "A gentler backbone learning rate").
    lr_backbone: float = 1e-4
    weight_decay: float = 0.04
    max_rotation_deg: float = 10.0
    max_colour_shift: float = 0.1
    # Beyond the paper ("stronger augmentations", issue 11): the share of augmented crops shown at a lower
    # resolution, shrunk to a side drawn in [low_res_min_px, crop size) and enlarged back (vcn.ssl.augment), so
    # that one person's close-up and wide-shot crops train as one identity. 0 = off (the paper's augmentations).
    # Off by default: at 0.5 (24 px) over the 8 labelled videos x seeds 2-3 it merged golfers and friends the
    # default keeps apart (mean F 0.941 against 0.951, WCP >= 0.97 on 12 of 16 against 14; docs/measurements.md
    # "A lower-resolution augmentation", session 37).
    low_res_prob: float = 0.0
    low_res_min_px: int = 24
    # Beyond the paper (issue 11): other light (vcn.ssl.augment): brightness and contrast each scaled by a factor
    # in [1 - light_jitter, 1 + light_jitter], and the colour removed from a share grey_prob of the crops (DINO's
    # 0.4 and 0.2), so that one person under a dinner table's lamp and a kitchen's light trains as one identity.
    # 0 = off (the paper's augmentations). Off by default: at 0.4 / 0.2 over the 8 labelled videos x seeds 2-3 it
    # merged the short golf cut's two men on one seed (mean F 0.943 against 0.950; docs/measurements.md "Other
    # light", session 38).
    light_jitter: float = 0.0
    grey_prob: float = 0.0
    # Beyond the paper (issue 11): the share of within-track pairs whose second crop is the one of the track whose
    # pose differs most from the first's (the nose's offset from between the eyes, vcn.faces.align.nose_offset,
    # capped at 1), instead of a random one (vcn.ssl.pairs): most splits left are one person's profile pieces kept
    # from the frontal ones, and a track that turns its head holds both. 0 = off (the paper's uniform pairs).
    # Off by default: at 0.5 over the 8 labelled videos x seeds 2-5 a golfer seen only in profile joined the other
    # golfer on two seeds and the sitcom moved both ways (mean F 0.942 against 0.949, WCP >= 0.97 on 25 of 32
    # against 27; docs/measurements.md "Pairs across a track's poses", session 39).
    pose_pairs: float = 0.0
    seed: int = 0
    # Beyond the paper (whose first round pairs crops of one track only): coarse matching also runs once before the
    # first round, on the base embeddings, so the warm-up and the first round already pair matched tracks. Finetuning
    # pushes tracks it never paired apart (the sitcom father's two pieces: 0.50 apart before, 0.83 after), and on the
    # base embeddings the default's matching links more of one person's track pairs on the sitcom (14 against 11 on
    # seed 0's finetuned ones, none wrong). Off: over the 8 labelled videos x seeds 2, 3 mean F 0.933 against 0.933
    # and the short golf cut's golfers merged on seed 3 (docs/measurements.md "Matching before the first round").
    # Re-measured on today's default (session 29): 0.944 against 0.937 over the same seeds, WCP >= 0.97 on 14 of 16
    # either way, the campaign video one stranger pair worse: a candidate for a seeds 2-9 run. Seeds 2-9 (session
    # 30): mean F 0.942 against 0.941, WCP >= 0.97 on 53 of 64 against 54 (that stranger pair merged on every seed),
    # short of the rule written before the run: off (held-out clips and renders, seeds 2-4: 0.975 against 0.969).
    # On the bounded default (match.gaussian_within_bounds, session 32), which drops that stranger link: seeds 2-9
    # mean F 0.946 against 0.942 but WCP >= 0.97 on 53 of 64 against 54 (the short golf cut's look-alikes merged on
    # seeds 6, 8, 9 against 5, 9); held out 0.975 against 0.970. One run short of the rule written before: off.
    match_base_first: bool = False
    # With match_base_first: the base embeddings' matches pair tracks in the heads-only warm-up only, and round 1's
    # backbone finetune pairs within tracks (and same-set-up tracks) as without it. The aim: keep what those matches
    # gave the rendered episodes (pieces close on the base embedding) without training the backbone on the
    # stranger pair they link on the campaign video; the matching after round 1 then decides on the teacher's
    # embeddings. Screened on the 8 labelled videos x seeds 2, 3 (session 30): mean F 0.937 against 0.937, WCP >= 0.97
    # on 13 of 16 against 14, the stranger pair still merged on both seeds: off (docs/measurements.md).
    base_first_warmup_only: bool = False
    # Train tracks at one spot of one camera set-up in two shots (vcn.clustering.setups; cluster.join_same_setup
    # joins them at the end) as matched tracks in every round, the first included: their crops pair across the two,
    # so the finetune learns that person's other look. Not in the paper. On, with cluster.join_same_setup: over the 8
    # labelled videos x seeds 2-9 (64 finetunes) mean BCubed F 0.941 against the join alone's 0.936 and neither's
    # 0.931, WCP >= 0.97 on 54 of 64 against 51, chosen by a rule written before the runs (seeds 2-5, then 6-9
    # agreeing; docs/measurements.md "One camera set-up, one spot").
    train_same_setup: bool = True
    # Beyond the paper: two tracks seen in one frame are two people, and where a batch holds crops of both, the
    # student is also trained to keep each off the other's teacher prototypes (vcn.ssl.loss.shared_prototype_penalty,
    # weight 1 beside Eq. 2; no extra forward pass). Clustering already refuses to join such tracks; this teaches the
    # network what tells them apart, for their other tracks too (the golf promo's look-alike golfers share a frame
    # once). Needs cluster.cannot_link (it reads the same pairs). Off: over the 8 labelled videos x seeds 2-9 mean F
    # 0.931 against 0.929, WCP >= 0.97 on 50 of 64 against 51, 12 clusterings moved both ways as a seed does
    # (docs/measurements.md "Training seen-together tracks apart", session 25).
    cooccurring_negatives: bool = False
    # Pairs drawn per crop and epoch (each crop of the video is a pair's first side this often): the amount of
    # training per epoch, warm-up and full rounds alike.
    pairs_per_crop: float = 1.0
    # Cap the pairs drawn per epoch so CPU finetuning stays in minutes on long videos.
    max_pairs_per_epoch: int = 2048
    device: str = "auto"
    # DINO clips the gradient norm at 3; it keeps the first full-finetuning steps from jolting the backbone.
    clip_grad: float = 3.0
    # Batch size of the no-gradient passes (embeddings, probabilities for Algorithm 1; the warm-up's
    # augmentations are drawn per batch of this size).
    eval_batch_size: int = 64
    # On a CPU, the backbone's no-gradient passes (those batches, and the teacher's 2 x batch_size crops at
    # every full-finetuning step) run in pieces of this many crops; 0 = whole batches. SFace on one core took
    # 16 ms per crop in pieces of up to 16 and 46 ms in one batch of 64: the activations of 64 crops outgrow
    # the CPU's caches. The backbone runs with inference statistics, so each crop's output depends on it alone
    # up to float rounding (~1e-6: oneDNN picks kernels by batch size); finetuning carries that to ~1e-3, a
    # seed-sized effect (docs/measurements.md "Cost"). A GPU runs whole batches.
    cpu_forward_chunk: int = 8
    # On a CPU, student and teacher keep their convolution weights channels-last, oneDNN's native layout: with
    # two threads an SFace training step (4 crops) took 0.86x and a no-gradient pass (8 crops) 0.72x the
    # contiguous layout's time (one thread: 0.98x, 0.93x). Same numbers up to float rounding (~1e-6).
    cpu_channels_last: bool = True
    # AdamW's fused kernel (one pass over each parameter, on CPU and GPU) instead of the per-tensor loop. A speed
    # setting: the same update up to float rounding.
    fused_optimizer: bool = True
    # Run the frozen layers' no-gradient passes that only feed training (the warm-up's cached views of the whole
    # backbone; the "low_res" front at every full-finetuning step) in bfloat16 autocast, where the hardware has
    # bfloat16 matrix units (a CPU with AMX or AVX512-BF16, or CUDA); float32 elsewhere. On an AMX CPU those passes
    # take 0.38-0.45x the time and stage 2 0.87x, and a real crop's SFace embedding moves by at most 0.3% (cosine >=
    # 0.997), but over the 8 labelled videos x seeds 0-3 it split the sitcom by one to three more clusters on every
    # seed (mean F 0.931 against 0.946; on seeds 2-3, never used to choose a default, 0.931 against 0.933): off
    # (docs/measurements.md "Cost", session 17). The teacher's targets, the trained layers and every embedding that
    # matching and clustering read stay float32 either way.
    frozen_bfloat16: bool = False
    # Only the warm-up's part of ssl.frozen_bfloat16: the heads-only warm-up's augmented views through the frozen
    # backbone (most of the warm-up's time) run in bfloat16 where the hardware has bfloat16 matrix units (a CPU with
    # AMX or AVX512-BF16, or CUDA; float32 elsewhere, where it changes nothing); the low_res front at every
    # full-finetuning step, the teacher's targets, the trained layers and every embedding that matching and
    # clustering read stay float32. That pass took 0.42x the time on an AMX CPU; on the sitcom the warm-up 0.68x and
    # stage 2 0.96x. Over the 8 labelled videos x seeds 2-5 mean F 0.962 against 0.951, WCP >= 0.97 on 31 of 32 as
    # before, PCR in range on 18 against 15 (Mary Poppins right on two seeds, the interview on one), by a rule
    # written before the runs; on seeds 6-9 and the held-out clips it scored as float32 views do
    # (docs/measurements.md "The warm-up's views in bfloat16", session 43). Off in the paper preset.
    warmup_bfloat16: bool = True
    # Fold each BatchNorm of the frozen layers into the convolution before it (vcn.ssl.fold): the "low_res" or
    # "tail" trunk for the whole finetune, and a copy of the whole backbone for the warm-up's views. The same
    # arithmetic up to float rounding (5.5e-6 in an SFace embedding), without a pass over every activation per
    # BatchNorm: a no-gradient SFace pass took 0.81-0.88x on a CPU. Over the 8 labelled videos x seeds 2-9 the
    # rounding moved 2 of 64 clusterings (mean F 0.930 against 0.932, WCP >= 0.97 on 51 of 64 both), within the
    # rule written before the runs. End to end a small gain: the sitcom's stage 2 took 0.99x (docs/measurements.md
    # "Cost", session 21).
    fold_frozen_batchnorm: bool = True
    # low_res and tail: keep the frozen trunk's output on the video's un-augmented crops once it is first computed,
    # up to this many MiB (SFace's low_res front: 196 KiB a crop, so about 1,300 crops), so every later no-gradient
    # pass over those crops
    # (the teacher's embeddings between rounds and at the end, the student's for Algorithm 1) runs only the
    # layers after it: the front is 0.6 of such a pass on a CPU core. The same numbers bit for bit (the passes
    # keep their batches and pieces). 0 = never; a longer video than the budget holds runs the front each time,
    # so memory stays flat in the video's length (issue 13).
    front_cache_mib: int = 256


@dataclass
class MatchConfig:
    """Coarse track matching with per-track Gaussians (METHOD.md)."""

    # gaussian_mutual_chance (default): the Gaussian rule of METHOD.md (the paper preset's "gaussian") plus tracks
    # that are each other's nearest track and closer than both the video's closest pair of faces seen in one
    # frame and how close two of its tracks come by chance (vcn.matching, vcn.chance). vcn's clusters follow its
    # coarse matches (the head gives each matched group about one prototype), and the Gaussian rule links two
    # looks of one person rarely (17% of same-person track pairs on the labelled videos). Chosen over 2 seeds on
    # the labelled videos, purity first (docs/measurements.md "Accuracy", benchmarks/results/seeds.json).
    # gaussian_mutual: without the chance bound (the default before): it merged the short golf cut's look-alike
    # presenters on both seeds and, on a montage of people seen once, strangers (a stranger is then a track's
    # nearest, and the few faces seen together are far apart: WCP 0.82-0.91, seeds_held_out.json).
    # first_neighbour: each track with its nearest track, mutual or not, at any distance (links strangers; an
    # option for material of one look per shot).
    # gaussian_nearest_chance: as the default, but each track's nearest below both bounds, mutual or not. On base
    # SFace track means of the 15 benchmark videos it links 208 right pairs and 4 wrong against the default's 121 and
    # 1, but after finetuning it scored lower on the 8 labelled videos x seeds 2, 3 (mean F 0.933 / 0.915 against
    # 0.943 / 0.931; both golf cuts' look-alikes merged on both seeds; the sitcom 10 clusters for 6): kept for
    # re-measuring, not the default (docs/measurements.md "One-sided nearest links", session 29).
    method: str = "gaussian_mutual_chance"
    # The Gaussian rule's matches must also be closer (cosine of track means) than at least one of the distances
    # at which the video shows two people: its closest pair of tracks seen in one frame, and how close two of its
    # tracks come by chance (vcn.matching.closer_than_different_people). Beyond the paper. In the rule's few PCA
    # dimensions two strangers can overlap: on the campaign video, seed 3, round 1's one Gaussian match was two
    # strangers at cosine 0.76 (bounds 0.51 and 0.62), trained as one person and merged. On round 1's embeddings of
    # the 8 labelled videos x seeds 2, 3 the bound removes that link and no other (162 right links kept).
    # Over the 8 labelled videos x seeds 2-9: the campaign video's stranger merge gone on all three seeds that made it,
    # the other 61 clusterings unchanged (mean F 0.942 against 0.941, F >= HAC-0.5's on 64 of 64 against 61); on the
    # held-out clips and renders x seeds 2-4, 19 of 21 unchanged and two render stranger merges undone (mean F 0.970
    # against 0.969). On by a rule written before the runs (docs/measurements.md "Bounding the Gaussian matches");
    # the paper preset turns it off.
    gaussian_within_bounds: bool = True
    low_fraction: float = 0.25
    # DECISION: per-video PCA, then Ledoit-Wolf shrinkage. The PCA dimension is the median crops per track
    # minus 1, clipped to [min_pca_dim, pca_dim]: a Gaussian fitted to n crops in more dimensions than n - 1
    # calls every other track's mean an outlier, while far fewer dimensions match different people (measured
    # with SFace on simulated tracks: deepface13, 5 crops per track: 32 dimensions matched 3 of 122 same-photo
    # track pairs, 4 matched 100, no false match either way; lfw150, 40 people, 8 crops per track: 7 dimensions
    # gave 83 true and 3 false matches, 4 dimensions 233 true and 134 false).
    pca_dim: int = 16
    min_pca_dim: int = 4
    # Added to every track covariance: this fraction of the video's mean per-dimension variance, so a track of
    # identical crops (zero scatter) still has a finite density.
    var_floor: float = 1e-3


@dataclass
class SerfiqConfig:
    # Dropout passes per crop (paper: m = 100, the paper preset). 16 by default: SER-FIQ's score no longer
    # decides Unknown by default (exclude_outliers), it only ranks tracks and thumbnails, and 100 passes of the
    # 50,176 -> 128 embedding layer were 113 s of the sitcom's 553-s stage 2 on this CPU (issue 13).
    passes: int = 16
    dropout: float = 0.5
    mad_k: float = 3.0
    # Send SER-FIQ low outliers (MAD rule) to Unknown, as the paper does. Off by default: on the labelled real
    # clips the rule flagged 7 nameable tracks (the small faces of Friends and a crowd) and 1 false detection,
    # because SFace's SER-FIQ scores of real faces and of false detections overlap (docs/measurements.md "Accuracy").
    # Either way every track's quality is in the clusters table (track_quality).
    exclude_outliers: bool = False
    seed: int = 0
    # Crops per backbone call; each carries `passes` dropout copies of its embedding-layer input (SFace: 50,176
    # floats, so 4 crops x 100 passes is ~80 MB). 0 = auto (vcn.quality.serfiq_batch): 4 on a CPU; 64 on a GPU,
    # for which 4 crops a call would be hundreds of small calls per video (64 x 16 passes is ~200 MB; not yet
    # timed on one).
    batch_size: int = 0


@dataclass
class ClusterConfig:
    # vcn (Algorithm 1) | hac | dbscan | finch (baselines on mean track embeddings)
    method: str = "vcn"
    # Distance inside Algorithm 1: loss (the paper's Eq. 2) | cosine (the paper's ablation)
    metric: str = "loss"
    # Algorithm 1's merge test for clusters j, k: "both" = Sim_jk < min(Thres_j, Thres_k), "either" = below max(...).
    # The paper's "lower than either" reads both ways (METHOD.md); chosen by measurement on the development set
    # (docs/measurements.md "Accuracy"); `--preset paper` keeps "either", the reading implemented first.
    merge_rule: str = "either"
    # Algorithm 1's merges per iteration: "all" matched pairs at once, transitively (the paper), or "best_first": one
    # merge per iteration, the lowest-Sim matched pair, the merged cluster re-judged before the next. Measured on the
    # 8 labelled videos with one finetune each: best_first took the golf promo from 7 clusters with 2 golfers merged
    # (BCubed F 0.83) to 8 (0.93) and left the other 7 videos' clusters as they were (docs/measurements.md
    # "Accuracy"); the paper preset keeps "all".
    merge_order: str = "best_first"
    # Two tracks with a detection in one frame are two people: never merged (nor coarsely matched). Not in the paper
    # (its preset leaves it off); on the paper's TV episodes 16 of 4,938 same-frame track pairs are one person (0.3%),
    # and it stops "either" from chaining co-occurring people together (docs/measurements.md "Accuracy").
    cannot_link: bool = True
    # vcn only: after Algorithm 1, match tracks once more with the coarse matching (match.method) on the finetuned
    # embeddings and join the clusters of matched tracks, nearest first, never two tracks sharing a frame. The rounds
    # match between finetunes, but the last round's embeddings were never matched, and vcn's clusters follow the
    # matches. Chosen over 2 seeds on the labelled videos (docs/measurements.md "Accuracy": mean F 0.951 against 0.937
    # without); on the held-out montage it joined two pairs of strangers on one seed. Not in the paper.
    join_final_matches: bool = True
    # vcn only: then match once more on the base (pretrained) embeddings and join the same way. Finetuning pushes
    # one person's never-matched pieces apart (the sitcom father 0.50 -> 0.83), and the base space still has them
    # each other's nearest; the chance bound is the base space's own. Not in the paper. Off until session 33: it
    # merged a man and a woman on the campaign video (session 18), through a Gaussian match that
    # match.gaussian_within_bounds now refuses. On the bounded default, over the 8 labelled videos x seeds 2-9 (one
    # finetune shared by both settings) it mended 5 splits and merged nobody: mean F 0.946 against 0.942, WCP >= 0.97
    # on 54 of 64 either way; held-out clips and renders x seeds 2-4: 0.973 against 0.970, 3 splits mended
    # (docs/measurements.md "Joining on the base embeddings too"). One more coarse matching, on embeddings already
    # computed: no measurable time.
    join_base_matches: bool = True
    # vcn only: then join clusters nearest first, by Algorithm 1's own distance (the Eq. 2 loss averaged over their
    # track pairs), while they are closer than chance puts two strangers (vcn.chance, bound from the loss between
    # every two tracks of the video; vcn.clustering.join.join_below_chance). Algorithm 1 stops a cluster at its own
    # within-track loss, which one person's other looks often exceed; the video-wide bound asks only that a join be
    # closer than strangers come. Not in the paper. Off: over the 8 labelled videos x seeds 2-5 mean F 0.927 against
    # 0.930 and WCP >= 0.97 on 20 of 32 against 27: it joins look-alike strangers (the golf presenters, the campaign
    # video's pairs), though it put the sitcom right on 2 seeds (docs/measurements.md "Joining below chance").
    join_below_chance: bool = False
    # vcn only: then join clusters whose people dress alike (the torso's colours under the face, stored by stage 1)
    # where one is the other's nearest cluster by face and their clothes are more alike than those of any two
    # people seen in one frame (vcn.clustering.clothes). The splits left after the final join are one person's
    # looks that SFace puts farther apart than strangers; within a video clothes mostly stay. Not in the paper.
    # Off: over the 8 labelled videos x 2 seeds it joined 4 split people (mean F 0.965 / 0.955 -> 0.983 / 0.970)
    # but merged two golfers in one team polo on seed 1, in both cuts of the promo (docs/measurements.md "Clothes").
    join_same_clothes: bool = False
    # vcn only: then join the clusters of two tracks at one spot of one camera set-up in two shots (the shot
    # detector would see no cut between their frames, and each face box holds the other's centre;
    # vcn.clustering.setups), most alike first, never two tracks sharing a frame. Reads the frame, not the face, so
    # it joins one person's looks that no face distance can. Not in the paper. On: on the 8 labelled videos, the 3
    # held-out clips and the 4 rendered episodes all 47 such pairs are one person; over the labelled videos x seeds
    # 2-9 mean F 0.936 against 0.931 without it, WCP >= 0.97 on the same 51 of 64 (docs/measurements.md "One camera
    # set-up, one spot").
    join_same_setup: bool = True
    # vcn only, last: join clusters that are each other's nearest (mean of their unit track means, among clusters
    # they share no frame with) and closer than both the closest pair of clusters sharing a frame and chance
    # (vcn.chance), repeated until none; the coarse matching's mutual-nearest rule lifted from tracks to clusters
    # (vcn.clustering.join.join_nearest_clusters). In which space: off | base (pretrained) | finetuned | both (a
    # join must qualify in both). Not in the paper. Off: over the 8 labelled videos x seeds 2-3 it put the sitcom at
    # 6-7 clusters and Hamilton right, but in every space merged the golfers of both promo cuts (mean F 0.886-0.907
    # against 0.950; docs/measurements.md "Joining clusters that are each other's nearest", session 37).
    join_nearest_clusters: str = "off"
    # Finetune and cluster this many times (ssl.seed, ssl.seed + 1, ...) and keep the tracks' consensus: groups
    # join while at least half of the runs, on average over their track pairs, put them together
    # (vcn.clustering.consensus). One run's seed decides which look-alikes it merges and which looks it splits off;
    # a majority undoes most of that. Not in the paper. 3 (`--preset consensus`): over the 8 labelled videos x seeds
    # 2-9 mean BCubed F 0.942 against 0.930, WCP >= 0.97 on every run of 7 of the 8 videos (the campaign video's
    # truth names one woman twice); stage 2 costs this many times as much, so 1 is the default for CPUs (issue 13)
    # (docs/measurements.md "A consensus of finetunes").
    consensus_finetunes: int = 1
    max_iterations: int = 100
    # Baselines only (Algorithm 1 has no threshold). 0.6 cosine distance was best for SFace on lfw150.
    hac_threshold: float = 0.6
    dbscan_eps: float = 0.4
    dbscan_min_samples: int = 2
    # FINCH partition: 0 = the first partition, -1 = the coarsest one with more than one cluster.
    finch_level: int = 0


@dataclass
class DistributedConfig:
    """The Ray layer (vcn.distributed, ray_jobs/index_catalogue.py): how work spreads over a cluster."""

    # "units": frame-range work units through Ray Data, tracking actors, Ray Train (a long movie spreads over
    # many workers); "videos": one Ray task per video running the single-machine pipeline (least overhead).
    mode: str = "units"
    # A long video is cut into work units of this many frames (each decoded and detected independently).
    frames_per_unit: int = 3000
    # GPUs for detection (--detect-gpus): N >= 1 runs up to N actors with one GPU each (an autoscaling cluster
    # adds GPU nodes for them); a fraction below 1 runs one actor on that share of a GPU; 0 = CPU actors.
    detect_gpus: float = 0.0
    # CPU detection actors when detect_gpus is 0; 0 = half the cluster's CPUs (at least 1).
    detect_actors: int = 0
    # Tracking actors (one shot at a time each); 0 = one per CPU of the cluster, at most one per shot.
    track_actors: int = 0
    # Ray Train workers per video finetune (TorchTrainer, DDP); 0 = no Ray Train, one plain task per video.
    train_workers: int = 1
    # GPUs per Ray Train worker: > 0 = GPU and nccl, 0 = CPU and gloo, -1 = one GPU when detect_gpus > 0.
    train_gpus: float = -1.0
    # Clusters per block when Ray tasks compute Algorithm 1's cluster-pair matrix.
    block_size: int = 2048
    # Videos scanned, tracked and clustered together before the next wave starts (bounds driver memory).
    videos_per_wave: int = 16
    # The run manifest is rewritten at most this often while videos finish (and always at the end).
    manifest_interval_s: float = 10.0
    # Times Ray retries a task or actor call whose worker died (a failed video is not retried).
    max_retries: int = 2
    # Ray `memory` (MiB) each task or actor reserves, so Ray packs no more of them on a node than its memory
    # holds; 0 = reserve none (a small machine, or to let Ray overcommit). Each default is the peak memory that
    # kind of work reported for itself (the whole worker process outside the object store: interpreter,
    # libraries, models, frames; the manifest's peak_mib, vcn.distributed.PeakMemory) with ~1.4-1.5x headroom,
    # measured on a 2-core CPU machine on the sitcom simplefr_Video_2 (10 s of it at 720p with all stages, and 5 s
    # upscaled to 1080p for stage 1; units executor, frames_per_unit 120, default config). Stages 2-3 and the
    # tables grow with a video's crops: the whole 82-s sitcom's `vcn run` peaks at 2,034 MiB in stage 2.
    # Re-measured in session 16 (the backbone loaded from vcn's torch cache; 10 s at 720p, one local Ray node,
    # session script): probe 185, decode 692, detect 1,303, track 753, write 173, launcher 683, Ray Train worker
    # 1,760, and the per-video task 1,865 MiB: every default still covers its kind with 1.5x or more.
    # The per-video task ("videos" mode; resumed videos in "units" mode), all of run_video: stage 1 peaked at
    # 1,156 MiB (720p) / 1,321 (1080p), stage 2 at 2,126 (a Ray Train worker's finetune, below).
    video_task_memory_mib: int = 3072
    # A Ray Data decode task (one work unit: decode batches, shot scores, Ray Data's output buffer): 676 MiB
    # at 720p, 838 at 1080p, with 16-frame batches (GPU detection raises them to 32: ~100 MB more per 1080p batch).
    decode_memory_mib: int = 1280
    # A detection actor (RetinaFace loaded once, decode batches in detect.batch_size pieces): 1,302 MiB at
    # 720p, 1,427 at 1080p.
    detect_memory_mib: int = 2048
    # A tracking actor (one shot per call: BoT-SORT, the shot decoded again, crops and their quality gate):
    # 744 MiB at 720p, 753 at 1080p.
    track_memory_mib: int = 1024
    # The task that joins a video's shots and writes its output (185 MiB), and the cluster stage's launcher
    # task when train_workers > 0 (682 MiB: it imports torch and Ray Train, loads and rewrites the tables).
    write_memory_mib: int = 1024
    # The process that finetunes and clusters one video (stages 2-3): each Ray Train worker (2,126 MiB), or
    # the cluster task itself when train_workers is 0.
    cluster_memory_mib: int = 3072


@dataclass
class PersonsConfig:
    """The catalogue-wide person index (vcn/persons/): operational settings only; linking sets itself from data."""

    # Update OUT/persons/ at the end of every catalogue run (ray_jobs/index_catalogue.py, run_catalogue).
    update_after_catalogue: bool = True
    # Seconds a catalogue run waits for another run's index update to finish before it leaves the index be
    # (the next run catches up: nothing is lost).
    wait_s: float = 600.0
    # Seconds an S3 lease on the index is valid without renewal (a holder that died frees it after this).
    lease_s: float = 900.0


@dataclass
class RunConfig:
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    shots: ShotConfig = field(default_factory=ShotConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    quality: QualityGateConfig = field(default_factory=QualityGateConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    serfiq: SerfiqConfig = field(default_factory=SerfiqConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    persons: PersonsConfig = field(default_factory=PersonsConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        return cls().apply(data)

    def apply(self, data: dict[str, Any] | None) -> "RunConfig":
        """Set the values of `data` ({section: {key: value}}) on this config; returns it."""
        for section, values in (data or {}).items():
            if not hasattr(self, section):
                raise VcnError(f"config: unknown section {section!r}; known: {', '.join(self.to_dict())}")
            _update(getattr(self, section), values, section)
        return self

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] | None = None,
             preset: str | None = None) -> "RunConfig":
        """Start from a named preset (PRESETS; None = the defaults), then a JSON config file (sections as in
        to_dict), then `section.key=value` overrides: each later one wins."""
        data: dict[str, Any] = {}
        if path:
            p = Path(path)
            if not p.is_file():
                raise VcnError(f"config file {p} does not exist; pass a JSON file like the 'config' of a summary.json")
            try:
                data = json.loads(p.read_text())
            except json.JSONDecodeError as e:
                raise VcnError(f"config file {p} is not valid JSON: {e}") from None
        cfg = cls.from_dict(preset_settings(preset)).apply(data)
        for item in overrides or []:
            cfg.set(item)
        return cfg

    def set(self, assignment: str) -> None:
        """Apply one `section.key=value` override; the value is parsed as JSON where it can be."""
        key, sep, raw = assignment.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise VcnError(f"override {assignment!r} must look like section.key=value, e.g. detect.batch_size=16")
        if not hasattr(self, section):
            raise VcnError(f"override {assignment!r}: unknown section {section!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        _update(getattr(self, section), {name: value}, section)


# Named configurations (`vcn run --preset NAME`). "default" is vcn's own, chosen on the development set
# (docs/measurements.md "Accuracy"); "paper" is VideoClusterNet as first implemented from the paper (METHOD.md), kept
# runnable and measured beside the default: every setting where the default departs from it.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    "paper": {
        "quality": {"min_face_px": 24.0, "min_blur_var": 15.0},
        "serfiq": {"passes": 100, "exclude_outliers": True},
        "match": {"method": "gaussian", "gaussian_within_bounds": False},
        # micro_batch_pairs is not the method (the same gradient): 2 keeps every layer's activations in memory
        # as small as before (SSLConfig.micro_batch_pairs).
        "ssl": {"warmup_epochs": 50, "ema_start": 0.996, "lr_backbone": 1e-5, "prototype_sets": 1,
                "backbone_layers": "all", "micro_batch_pairs": 2, "rounds": 3, "train_same_setup": False,
                "warmup_bfloat16": False},
        "cluster": {"method": "vcn", "metric": "loss", "merge_rule": "either", "merge_order": "all",
                    "cannot_link": False, "join_final_matches": False, "join_base_matches": False,
                    "join_same_setup": False},
    },
    # The default finetuned three times (seeds ssl.seed .. + 2) and the consensus of the three clusterings kept
    # (cluster.consensus_finetunes): over the 8 labelled videos x seeds 2-9 mean BCubed F 0.942 against one
    # finetune's 0.930, the golf promo's look-alike merges gone (docs/measurements.md "A consensus of finetunes"),
    # for three times the finetuning: for a GPU, or where purity matters more than CPU time.
    "consensus": {"cluster": {"consensus_finetunes": 3}},
}


def preset_settings(name: str | None) -> dict[str, dict[str, Any]]:
    """The settings of a named preset, by section (None = the defaults)."""
    if name is None:
        return {}
    if name not in PRESETS:
        raise VcnError(f"preset {name!r} is unknown; choose one of {', '.join(PRESETS)}")
    return {section: dict(values) for section, values in PRESETS[name].items()}


def _at_least(low: float) -> tuple[str, Any]:
    return f"at least {low:g}", lambda v: v >= low


def _above(low: float) -> tuple[str, Any]:
    return f"above {low:g}", lambda v: v > low


def _share(open_low: bool = False, open_high: bool = False) -> tuple[str, Any]:
    text = f"{'above 0' if open_low else 'from 0'} {'and below 1' if open_high else 'to 1'}"
    return text, lambda v: (v > 0 if open_low else v >= 0) and (v < 1 if open_high else v <= 1)


# What each number may be: a value outside stops `vcn run` (or the Ray job) before any work, naming the setting,
# instead of failing deep inside a stage (ssl.batch_size=0 divided by zero there) or running on nonsense (a
# negative detect.max_side). Checked wherever settings are applied: presets, config files, --set.
RANGES: dict[str, tuple[str, Any]] = {
    "decode.batch_frames": _at_least(1), "decode.prefetch_batches": _at_least(0),
    "shots.threshold": _above(0), "shots.min_scene_len_frames": _at_least(0),
    "detect.score_threshold": _share(), "detect.nms_threshold": _share(), "detect.batch_size": _at_least(0),
    "detect.max_side": _at_least(0),
    "quality.min_face_px": _at_least(0), "quality.min_blur_var": _at_least(0),
    "track.track_high_thresh": _share(), "track.track_low_thresh": _share(), "track.new_track_thresh": _share(),
    "track.match_thresh": _share(), "track.track_buffer": _at_least(0), "track.min_track_len": _at_least(1),
    "track.workers": _at_least(0),
    "sample.interval_s": _at_least(0), "sample.crop_size": _at_least(1),
    "embed.batch_size": _at_least(1),
    "ssl.head_hidden": _at_least(1), "ssl.head_bottleneck": _at_least(1), "ssl.head_out": _at_least(1),
    "ssl.prototype_sets": _at_least(1), "ssl.teacher_temp": _above(0), "ssl.student_temp": _above(0),
    "ssl.center_momentum": _share(), "ssl.ema_start": _share(), "ssl.ema_end": _share(),
    "ssl.rounds": _at_least(0), "ssl.warmup_epochs": _at_least(0), "ssl.warmup_views": _at_least(1),
    "ssl.epochs_per_round": _at_least(0), "ssl.batch_size": _at_least(1), "ssl.micro_batch_pairs": _at_least(0),
    "ssl.lr_head": _at_least(0), "ssl.lr_backbone": _at_least(0), "ssl.weight_decay": _at_least(0),
    "ssl.max_rotation_deg": _at_least(0), "ssl.max_colour_shift": _at_least(0), "ssl.low_res_prob": _share(),
    "ssl.low_res_min_px": _at_least(1), "ssl.light_jitter": _share(open_high=True), "ssl.grey_prob": _share(),
    "ssl.pose_pairs": _share(), "ssl.pairs_per_crop": _above(0), "ssl.max_pairs_per_epoch": _at_least(1),
    "ssl.clip_grad": _at_least(0), "ssl.eval_batch_size": _at_least(1), "ssl.cpu_forward_chunk": _at_least(0),
    "ssl.front_cache_mib": _at_least(0),
    "match.low_fraction": _share(open_low=True), "match.pca_dim": _at_least(1), "match.min_pca_dim": _at_least(1),
    "match.var_floor": _at_least(0),
    "serfiq.passes": _at_least(2), "serfiq.dropout": _share(open_low=True, open_high=True),
    "serfiq.mad_k": _above(0), "serfiq.batch_size": _at_least(0),
    "cluster.consensus_finetunes": _at_least(1), "cluster.max_iterations": _at_least(1),
    "cluster.hac_threshold": _at_least(0), "cluster.dbscan_eps": _above(0), "cluster.dbscan_min_samples": _at_least(1),
    "cluster.finch_level": _at_least(-1),
    "distributed.frames_per_unit": _at_least(1), "distributed.detect_gpus": _at_least(0),
    "distributed.detect_actors": _at_least(0), "distributed.track_actors": _at_least(0),
    "distributed.train_workers": _at_least(0), "distributed.train_gpus": _at_least(-1),
    "distributed.block_size": _at_least(1), "distributed.videos_per_wave": _at_least(1),
    "distributed.manifest_interval_s": _at_least(0), "distributed.max_retries": _at_least(-1),
    "distributed.video_task_memory_mib": _at_least(0), "distributed.decode_memory_mib": _at_least(0),
    "distributed.detect_memory_mib": _at_least(0), "distributed.track_memory_mib": _at_least(0),
    "distributed.write_memory_mib": _at_least(0), "distributed.cluster_memory_mib": _at_least(0),
    "persons.wait_s": _at_least(0), "persons.lease_s": _above(0),
}


def _update(obj: Any, values: dict[str, Any], section: str) -> None:
    known = {f.name: f for f in dataclasses.fields(obj)}
    for name, value in values.items():
        if name not in known:
            raise VcnError(f"config: {section}.{name} is not a setting; known: {', '.join(known)}")
        current = getattr(obj, name)
        if isinstance(current, bool) and not isinstance(value, bool):
            raise VcnError(f"config: {section}.{name} must be true or false, got {value!r}")
        if isinstance(current, (int, float)) and not isinstance(current, bool):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise VcnError(f"config: {section}.{name} must be a number, got {value!r}")
            value = type(current)(value)
            check_range(f"{section}.{name}", value)
        setattr(obj, name, value)


# Settings whose 0 is not a number of things but a choice: the range error says which, so "at least 0 (the default
# is 0)" does not leave the reader guessing what 0 does.
ZERO_MEANS = {
    "detect.batch_size": "auto: 8 frames a call on a CPU, 32 on a GPU",
    "serfiq.batch_size": "auto: 4 crops a call on a CPU, 64 on a GPU",
    "detect.max_side": "never downscale",
    "track.workers": "one per CPU core (OMP_NUM_THREADS where set), at most 8",
}


def check_range(setting: str, value: Any) -> None:
    """VcnError where `value` is outside RANGES[setting] (`setting` as "section.name"); nothing for a setting
    without a range. Code that reads a setting which may have been assigned directly, not through _update, calls it
    too."""
    allowed = RANGES.get(setting)
    if allowed is not None and not allowed[1](value):
        section, name = setting.split(".")
        default = getattr(getattr(RunConfig(), section), name)
        zero = ZERO_MEANS.get(setting)
        meaning = "" if zero is None else f": {zero}" if default == 0 else f"; 0: {zero}"
        raise VcnError(f"config: {setting}={value!r} must be {allowed[0]} (the default is {default!r}{meaning})")
