from collections import Counter

from analysis.data.sampling import stratified_sample


LABELS = ["cat"] * 60 + ["dog"] * 30 + ["cow"] * 9 + ["yak"] * 1


def test_same_seed_same_sample_other_seed_other_sample():
    a = stratified_sample(LABELS, 20, seed=3)
    assert a == stratified_sample(LABELS, 20, seed=3)
    assert a != stratified_sample(LABELS, 20, seed=4)
    assert a == sorted(set(a)) and len(a) == 20


def test_allocation_is_proportional_with_one_per_class():
    counts = Counter(LABELS[i] for i in stratified_sample(LABELS, 20, seed=0))
    # quotas 12, 6, 1.8, 0.2 -> floors 12, 6, 1, 0 -> yak gets its minimum one, cow the largest remainder
    assert counts == {"cat": 12, "dog": 6, "cow": 1, "yak": 1}


def test_minimum_one_per_class_never_exceeds_n():
    counts = Counter(LABELS[i] for i in stratified_sample(LABELS, 4, seed=0))
    assert sum(counts.values()) == 4 and set(counts) == {"cat", "dog", "cow", "yak"}


def test_n_at_least_len_returns_everything():
    assert stratified_sample(LABELS, 100, seed=1) == list(range(100))
    assert stratified_sample(LABELS, 500, seed=1) == list(range(100))
