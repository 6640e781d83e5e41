"""Scale of the person index: linking 100,000 new clusters into an index of 1,000,000 (synthetic SFace-like
cluster embeddings), time, peak memory and candidate recall against exact search; the vector-index libraries
side by side; and the cost of a nightly update that adds 1 and 100 videos to an index of 1,000 videos.

    python benchmarks/persons_scale.py                       # all parts -> benchmarks/results/persons_scale.json
    python benchmarks/persons_scale.py --parts link --old 100000 --new 10000    # smaller
    python benchmarks/persons_scale.py --parts link --link-parallel ray --ray-cpus 2   # + linking on Ray tasks

Synthetic data, drawn to look like SFace cluster representatives: each person a random direction in 128-d (two
people: cosine distance 1 +- 0.09, as SFace's different-person distances around 0.9), each appearance of a
person in a video a "look" around it (same person across videos: distance about 0.25, as two photos of one person
in SFace), each video 10 clusters of 10 different people. 70% of the new clusters are people already indexed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vcn.persons.assign import assign_persons  # noqa: E402
from vcn.persons.candidates import exact_neighbours, ivf_neighbours, rescore  # noqa: E402
from vcn.persons.link import BLOCK_QUERIES, Threshold, VideoEvidence, catalogue_threshold, find_links  # noqa: E402

DIM = 128
LOOK_SIGMA = np.sqrt(1 / 3)      # E[cos] between two looks = 1 / (1 + sigma^2) = 0.75
PER_VIDEO = 10


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_of(fn):
    """(fn(), this process's peak RSS in MiB while fn ran): Linux's high-water mark is reset first (it resets
    ru_maxrss too), where allowed; else the peak since the process started."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    out = fn()
    return out, peak_rss_mb()


def synthetic_catalogue(n_old: int, n_new: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Cluster embeddings [n_old + n_new, 128] (unit, float32), video code and true person per row."""
    rng = np.random.default_rng(seed)
    n_people_old = n_old // 3                  # ~3 appearances per person, some far more (Zipf-like)
    weights = 1.0 / np.arange(1, n_people_old + 1) ** 0.6
    weights /= weights.sum()
    person_old = rng.choice(n_people_old, n_old, p=weights)
    n_returning = int(0.7 * n_new)
    person_new = np.concatenate([rng.choice(n_people_old, n_returning, p=weights),
                                 n_people_old + rng.integers(0, max(1, (n_new - n_returning) // 2),
                                                             n_new - n_returning)])
    person = np.concatenate([person_old, rng.permutation(person_new)])
    n_people = int(person.max()) + 1
    centres = rng.standard_normal((n_people, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    emb = np.empty((len(person), DIM), np.float32)
    for s in range(0, len(person), 100_000):
        block = centres[person[s:s + 100_000]] + LOOK_SIGMA * rng.standard_normal(
            (len(person[s:s + 100_000]), DIM)).astype(np.float32) / np.sqrt(DIM)
        emb[s:s + 100_000] = block / np.linalg.norm(block, axis=1, keepdims=True)
    del centres
    video = np.arange(len(person)) // PER_VIDEO
    # A video never shows one person twice: move such rows to a fresh video of their own.
    key = video.astype(np.int64) * n_people + person
    _, first = np.unique(key, return_index=True)
    dup = np.setdiff1d(np.arange(len(person)), first)
    video[dup] = video.max() + 1 + np.arange(len(dup))
    new = np.zeros(len(person), bool)
    new[n_old:] = True
    return {"embedding": emb, "video": video.astype(np.int64), "person": person, "new": new}


def link_benchmark(n_old: int, n_new: int, sample: int, nprobe: int | None, parallel: str = "local",
                   ray_cpus: int = 2, block: int = BLOCK_QUERIES) -> dict:
    t0 = time.perf_counter()
    data = synthetic_catalogue(n_old, n_new)
    emb, video, new, person = data["embedding"], data["video"], data["new"], data["person"]
    gen_s = time.perf_counter() - t0
    rss_data = peak_rss_mb()
    threshold = rule_threshold(emb, video)
    rng = np.random.default_rng(1)

    t1 = time.perf_counter()
    links, link_rss = peak_rss_of(lambda: find_links(emb, video, new, threshold, method="ivf", parallel="local",
                                                     block=block))
    link_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    person_id = np.where(new, -1, person + 1)          # the old rows' persons as the index would hold them
    assignment = assign_persons(video, person_id, links, int(person.max()) + 2,
                                [(str(v), i) for i, v in enumerate(video.tolist())])
    assign_s = time.perf_counter() - t2
    rss_peak = max(rss_data, peak_rss_mb())            # peak_rss_of reset the high-water mark after the data

    # Candidate recall on a sample of new clusters: of the exact neighbours closer than the threshold (the only
    # ones that can become links), the share the IVF candidates hold; and recall@16 over all neighbours.
    queries = np.flatnonzero(new)[rng.choice(n_new, min(sample, n_new), replace=False)]
    t3 = time.perf_counter()
    ex_rows, ex_sims = exact_neighbours(emb[queries], video[queries], emb, video, 16)
    exact_s = time.perf_counter() - t3
    iv_rows, _ = ivf_neighbours(emb[queries], video[queries], emb, video, 16, nprobe=nprobe)
    recall_t = recall_within(ex_rows, ex_sims, iv_rows, threshold.distance)
    recall_1 = nearest_found(ex_rows, ex_sims, iv_rows, threshold.distance)
    recall_k = float(np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, (a >= 0).sum())
                              for a, b in zip(ex_rows, iv_rows)]))
    # Links of the sampled clusters, exact vs IVF candidates.
    ex_links = _links_of(queries, emb, video, threshold, "exact")
    sampled = set(queries.tolist())
    iv_links = {p for p in zip(links.i.tolist(), links.j.tolist()) if p[0] in sampled or p[1] in sampled}
    link_recall = len(ex_links & iv_links) / max(1, len(ex_links))
    # Truth of the links (synthetic people are known).
    true_links = int(sum(person[i] == person[j] for i, j in zip(links.i.tolist(), links.j.tolist())))
    new_rows = np.flatnonzero(new)
    joined = int((assignment.person_id[new_rows] <= person.max() + 1).sum())
    on_ray = ray_link(emb, video, new, threshold, links, ray_cpus, block) if parallel == "ray" else None
    return {
        "old_clusters": n_old, "new_clusters": n_new, "dim": DIM, "videos": int(video.max() + 1),
        "threshold": threshold.to_dict(), "generate_s": round(gen_s, 1),
        "link_s": round(link_s, 1), "link_peak_rss_mb": round(link_rss, 0), "link_block": block,
        "assign_s": round(assign_s, 1), "total_s": round(link_s + assign_s, 1),
        "peak_rss_mb": round(rss_peak, 0), "rss_after_data_mb": round(rss_data, 0),
        "embeddings_mb": round(emb.nbytes / 2**20, 0),
        "links": len(links), "links_correct": true_links,
        "link_precision": round(true_links / max(1, len(links)), 4),
        "new_clusters_joined_existing_persons": joined,
        "candidate_recall_within_threshold": round(recall_t, 4), "nearest_found": round(recall_1, 4), "candidate_recall_at_16": round(recall_k, 4),
        "link_recall_vs_exact": round(link_recall, 4), "links_exact_in_sample": len(ex_links),
        "recall_sample": len(queries), "exact_search_s_for_sample": round(exact_s, 1),
        "threads": os.cpu_count(), **({"ray": on_ray} if on_ray else {}),
    }


def ray_link(emb: np.ndarray, video: np.ndarray, new: np.ndarray, threshold: Threshold, local, cpus: int,
             block: int) -> dict:
    """The same links on Ray tasks (a local Ray of `cpus` CPUs): time, peak RSS of this driver and of the workers
    (each task reports its own; RUSAGE_CHILDREN does not see Ray's workers), and whether they equal `local`."""
    import ray

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        stats: dict = {}
        t = time.perf_counter()
        links, driver_rss = peak_rss_of(lambda: find_links(emb, video, new, threshold, method="ivf",
                                                           parallel="ray", block=block, stats=stats))
        seconds = time.perf_counter() - t
    finally:
        ray.shutdown()
    return {"cpus": cpus, "blocks": stats["blocks"], "link_s": round(seconds, 1),
            "driver_peak_rss_mb": round(driver_rss, 0), "worker_peak_rss_mb": round(stats["worker_peak_rss_mb"], 0),
            "task_memory_mb": stats["task_memory_mb"], "links": len(links),
            "links_equal_local": bool(np.array_equal(links.i, local.i) and np.array_equal(links.j, local.j)
                                      and links.distance.tobytes() == local.distance.tobytes())}


def rule_threshold(emb: np.ndarray, video: np.ndarray) -> Threshold:
    """The threshold the index takes (vcn.persons.link.catalogue_threshold): every two clusters of one video are
    different people here, as if their faces shared a frame, so the closest of them is the evidence of one frame."""
    synthetic = VideoEvidence(min_cooccurring=closest_within_videos(emb, video), n_cooccurring=1)
    return catalogue_threshold({"synthetic": synthetic}, emb, video)


def closest_within_videos(emb: np.ndarray, video: np.ndarray) -> float:
    """The smallest cosine distance between two clusters of one video, over every video."""
    order = np.argsort(video, kind="stable")
    starts = np.searchsorted(video[order], np.arange(video.max() + 2))
    best = np.inf
    for v in range(video.max() + 1):
        rows = order[starts[v]:starts[v + 1]]
        if len(rows) > 1:
            d = 1 - emb[rows] @ emb[rows].T
            np.fill_diagonal(d, np.inf)
            best = min(best, float(d.min()))
    return best


def recall_within(ex_rows: np.ndarray, ex_sims: np.ndarray, rows: np.ndarray, distance: float) -> float:
    """Of the exact neighbours closer than `distance`, the share that `rows` holds."""
    want = found = 0
    for a, s, b in zip(ex_rows, ex_sims, rows):
        close = set(a[(a >= 0) & (1 - s < distance)].tolist())
        want += len(close)
        found += len(close & set(b.tolist()))
    return found / max(1, want)


def nearest_found(ex_rows: np.ndarray, ex_sims: np.ndarray, rows: np.ndarray, distance: float) -> float:
    """Of the queries whose exact nearest cluster of another video is closer than `distance` (a possible link),
    the share whose candidates hold it (the nearest decides which person a new cluster joins)."""
    close = (ex_rows[:, 0] >= 0) & (1 - ex_sims[:, 0] < distance)
    return float(np.mean([ex_rows[i, 0] in set(rows[i].tolist()) for i in np.flatnonzero(close)])) \
        if close.any() else 1.0


def _links_of(queries: np.ndarray, emb, video, threshold, method) -> set[tuple[int, int]]:
    """The rule's links of only the given rows (as `find_links` with those rows new), by exact search."""
    new = np.zeros(len(emb), bool)
    new[queries] = True
    links = find_links(emb, video, new, threshold, method=method)
    return set(zip(links.i.tolist(), links.j.tolist()))


def library_comparison(n_base: int, n_queries: int, k: int = 16) -> dict:
    """faiss IVF-Flat, faiss HNSW and usearch HNSW on the same data: build, query, memory, recall@k vs exact."""
    data = synthetic_catalogue(n_base, n_queries, seed=3)
    emb, video, new = data["embedding"], data["video"], data["new"]
    q = np.flatnonzero(new)
    t = time.perf_counter()
    exact_neighbours(emb[q], video[q], emb, video, k)
    out = {"base": len(emb), "queries": len(q), "k": k, "exact_s": round(time.perf_counter() - t, 2),
           "recall": "of the exact neighbours closer than the rule's threshold, the share found"}

    distance = rule_threshold(emb, video).distance
    ex_rows, ex_sims = exact_neighbours(emb[q], video[q], emb, video, k)
    out["threshold"] = round(distance, 4)

    def recall(rows):
        return round(recall_within(ex_rows, ex_sims, rows, distance), 4)

    def recall_1(rows):
        return round(nearest_found(ex_rows, ex_sims, rows, distance), 4)

    import faiss

    nlist = int(max(1, min(4 * np.sqrt(len(emb)), len(emb) // 39)))
    for share in (32, 16, 8):
        t = time.perf_counter()
        rows, _ = ivf_neighbours(emb[q], video[q], emb, video, k, nprobe=max(1, nlist // share))
        out[f"faiss_ivf_flat_nprobe_nlist/{share}"] = {
            "total_s": round(time.perf_counter() - t, 2), "recall": recall(rows), "recall_at_1": recall_1(rows),
            "nlist": nlist, "index_mb": round(emb.nbytes / 2**20, 0), "version": faiss.__version__}
    t = time.perf_counter()
    index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(emb)
    build = time.perf_counter() - t
    index.hnsw.efSearch = 64
    _, found = index.search(emb[q], 2 * k)
    rows, _ = rescore(emb[q], video[q], emb, video, found, k)
    out["faiss_hnsw"] = {"build_s": round(build, 2), "total_s": round(time.perf_counter() - t, 2),
                         "recall": recall(rows), "recall_at_1": recall_1(rows), "index_mb": round((emb.nbytes + len(emb) * 32 * 2 * 4) / 2**20, 0)}
    del index
    try:
        import usearch
        from usearch.index import Index

        t = time.perf_counter()
        ui = Index(ndim=DIM, metric="ip", dtype="f32", connectivity=16, expansion_add=128, expansion_search=64)
        ui.add(np.arange(len(emb)), emb, threads=os.cpu_count() or 1)
        build = time.perf_counter() - t
        found = ui.search(emb[q], 2 * k, threads=os.cpu_count() or 1).keys.astype(np.int64)
        rows, _ = rescore(emb[q], video[q], emb, video, found, k)
        out["usearch_hnsw"] = {"build_s": round(build, 2), "total_s": round(time.perf_counter() - t, 2),
                               "recall": recall(rows), "recall_at_1": recall_1(rows),
                               "index_mb": round(ui.memory_usage / 2**20, 0),
                               "version": usearch.__version__}
    except ImportError:
        out["usearch_hnsw"] = "not installed"
    return out


def nightly_benchmark(n_videos: int, adds: list[int]) -> dict:
    """Real files: an index of `n_videos` synthetic video outputs, then a nightly update adding 1 and 100."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_persons import write_video

    from vcn.persons import update_index

    rng = np.random.default_rng(5)
    cast = [f"p{i}" for i in range(3 * n_videos)]
    root = Path(tempfile.mkdtemp(prefix="vcn-persons-nightly-"))
    try:
        t = time.perf_counter()
        for v in range(n_videos):
            write_video(root, f"v{v:05d}", rng.choice(cast, 5, replace=False).tolist(), seed=v, catalogue=True,
                        crops=2)
        out = {"videos": n_videos, "clusters_per_video": 5, "write_s": round(time.perf_counter() - t, 1)}
        t = time.perf_counter()
        first = update_index(root)
        out["first_index_s"] = round(time.perf_counter() - t, 2)
        out["persons"] = first.persons
        t = time.perf_counter()
        update_index(root)
        out["nothing_new_s"] = round(time.perf_counter() - t, 3)
        total = n_videos
        for n in adds:
            for v in range(total, total + n):
                write_video(root, f"v{v:05d}", rng.choice(cast, 5, replace=False).tolist(), seed=v,
                            catalogue=True, crops=2)
            total += n
            t = time.perf_counter()
            r = update_index(root)
            out[f"add_{n}_s"] = round(time.perf_counter() - t, 3)
            out[f"add_{n}_seconds"] = r.seconds
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="compare,link,nightly", help="compare, link, nightly (comma-separated)")
    p.add_argument("--old", type=int, default=1_000_000)
    p.add_argument("--new", type=int, default=100_000)
    p.add_argument("--sample", type=int, default=2000, help="new clusters whose candidates are checked exactly")
    p.add_argument("--nprobe", type=int, default=None)
    p.add_argument("--link-parallel", choices=("local", "ray"), default="local",
                   help="ray: link also on Ray tasks and compare with the local links")
    p.add_argument("--ray-cpus", type=int, default=os.cpu_count() or 1,
                   help="CPUs of the local Ray (--link-parallel ray)")
    p.add_argument("--link-block", type=int, default=BLOCK_QUERIES, help="new clusters per block (per Ray task)")
    p.add_argument("--compare-base", type=int, default=200_000)
    p.add_argument("--nightly-videos", type=int, default=1000)
    p.add_argument("--json", default="benchmarks/results/persons_scale.json")
    args = p.parse_args(argv)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(path.read_text()) if path.is_file() else {}
    results["note"] = __doc__.split("\n\n")[2].replace("\n", " ")
    parts = [s.strip() for s in args.parts.split(",")]
    if "compare" in parts:
        results["libraries"] = library_comparison(args.compare_base, args.compare_base // 10)
        print(json.dumps(results["libraries"], indent=1), flush=True)
        path.write_text(json.dumps(results, indent=1))
    if "nightly" in parts:
        results["nightly"] = nightly_benchmark(args.nightly_videos, [1, 100])
        print(json.dumps(results["nightly"], indent=1), flush=True)
        path.write_text(json.dumps(results, indent=1))
    if "link" in parts:
        results["link"] = link_benchmark(args.old, args.new, args.sample, args.nprobe, args.link_parallel,
                                         args.ray_cpus, args.link_block)
        print(json.dumps(results["link"], indent=1), flush=True)
        path.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
