"""The chance bound: how close the closest of N pairs drawn from the bulk of some distances is expected to come."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from vcn.chance import chance_closest


def test_the_bound_is_the_bulks_lower_quantile_for_the_number_of_pairs_and_ignores_a_few_close_outliers():
    rng = np.random.default_rng(0)
    bulk = rng.normal(0.9, 0.1, 20_000)
    bound = chance_closest(bulk)
    assert bound == pytest.approx(0.9 - 0.1 * norm.isf(1 / 20_001), abs=0.01)
    # About one in N of the bulk falls below it.
    assert 0 <= (bulk < bound).sum() <= 5
    # Twenty same-person pairs far below barely move it, and all of them are below it.
    with_matches = np.concatenate([bulk, np.full(20, 0.2)])
    assert chance_closest(with_matches) == pytest.approx(bound, abs=0.01)
    # More pairs to draw from means a lower bound: the closest of many comes closer.
    assert chance_closest(bulk, pairs=10**9) < bound < chance_closest(bulk, pairs=100)


def test_too_few_distances_give_no_bound():
    assert math.isnan(chance_closest(np.array([0.5])))
    assert math.isnan(chance_closest(np.array([0.5, np.nan, np.inf])))
    assert chance_closest(np.array([0.5, 0.5])) == pytest.approx(0.5)
