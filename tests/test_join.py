"""Joining Algorithm 1's clusters along the coarse matches found on the finetuned embeddings."""

import numpy as np

from vcn.clustering.join import join_matched_clusters, matched_pairs_nearest_first


def test_matched_tracks_join_their_clusters_unless_two_faces_seen_together_would_meet():
    labels = {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: -1}
    # 1-2 and 3-4 join; 2-3 would put 1 and 4 (seen in one frame) in one cluster: skipped; 5-6: 6 is noise.
    joined = join_matched_clusters(labels, [(1, 2), (3, 4), (2, 3), (5, 6)], {(1, 4)})
    assert joined == {1: 0, 2: 0, 3: 1, 4: 1, 5: 2, 6: -1}
    # Nothing matched: the clusters stay (renumbered by their smallest track).
    assert join_matched_clusters({7: 5, 8: 2}, []) == {7: 0, 8: 1}


def test_matched_pairs_come_nearest_first_whichever_way_they_were_matched():
    emb = np.array([[1, 0], [1, 0.1], [0, 1], [0.5, 1], [-1, 0]], float)
    toc = np.array([10, 11, 12, 13, 14])
    matched = np.zeros((5, 5), bool)
    matched[2, 3] = True        # one direction only: 12 matches 13
    matched[0, 1] = matched[1, 0] = True
    assert matched_pairs_nearest_first(matched, toc, emb, toc) == [(10, 11), (12, 13)]
