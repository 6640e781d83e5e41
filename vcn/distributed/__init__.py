"""The Ray layer: moves vcn's stage functions onto Ray Data, Ray actors, Ray Train and Ray tasks, unchanged.

- `scan`: videos cut into frame-range work units; decoding and shot scoring in CPU tasks, face detection in an
  actor pool (GPUs declared from config); unit results merged into the tables `scan_video` gives.
- `track`: tracking actors, one shot per call (sequential inside a shot, parallel across shots).
- `train`: the per-video finetune and clustering under Ray Train's TorchTrainer (DDP; gloo on CPU, nccl on GPU).
- `blocks`: Algorithm 1's cluster-pair matrix computed by Ray tasks in blocks.
- `executors`: the catalogue executors `ray_units_executor` and `ray_videos_executor` for vcn.catalogue.
"""
