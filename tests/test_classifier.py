"""ImprintClassifier: API, bad input, incremental classes, exact batch-invariant prediction, persistence."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import imprint.core.blocks as blocks
from imprint import ClassifierFileError, ImprintClassifier


@pytest.fixture(scope="module")
def fitted(mixture):
    X, y = mixture
    labels = np.array([f"class-{c}" for c in y])
    return ImprintClassifier(generation="kmeans", k=5).fit(X[::2], labels[::2]), X, labels


def test_fit_returns_self_with_fitted_attributes(fitted):
    clf, X, labels = fitted
    assert list(clf.classes_) == sorted(set(labels))
    assert clf.proxies_.shape == (30, X.shape[1]) and clf.proxies_.dtype == np.float32
    assert list(clf.proxy_labels_) == [c for c in clf.classes_ for _ in range(5)]
    assert clf.decision_function(X).shape == (len(X), 6)
    assert clf.score(X[1::2], labels[1::2]) > 0.9
    assert set(clf.predict(X)) <= set(clf.classes_)


def test_predict_proba_is_a_tempered_softmax(fitted):
    clf, X, _ = fitted
    proba = clf.predict_proba(X[:20])
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(proba.argmax(1), clf.decision_function(X[:20]).argmax(1))
    flat = ImprintClassifier(generation="kmeans", k=5, temperature=1.0).fit(X[::2], fitted[2][::2])
    assert flat.predict_proba(X[:20]).max(1).mean() < proba.max(1).mean()


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int64])
def test_other_dtypes_work(mixture, dtype):
    X, y = mixture
    clf = ImprintClassifier(k=3).fit(X.astype(dtype), y)
    assert clf.score(X.astype(dtype), y) > 0.9
    assert clf.proxies_.dtype == np.float32


def test_torch_tensor_input(mixture):
    X, y = mixture
    clf = ImprintClassifier(k=3).fit(torch.from_numpy(X), torch.from_numpy(y))
    np.testing.assert_array_equal(clf.predict(torch.from_numpy(X)), clf.predict(X))


def one_line_error(callable_, match, error=ValueError):
    with pytest.raises(error, match=match) as info:
        callable_()
    assert "\n" not in str(info.value)


def test_bad_input_gets_one_line_errors(mixture, fitted):
    X, y = mixture
    clf, _, _ = fitted
    nan = X.copy()
    nan[7, 3] = np.nan
    inf = X.copy()
    inf[2, 0] = np.inf
    new = ImprintClassifier()
    one_line_error(lambda: new.fit(nan, y), "NaN or infinity .* first at row 7")
    one_line_error(lambda: new.fit(inf, y), "NaN or infinity")
    one_line_error(lambda: new.fit(np.float64(1e300) * np.ones((4, 3)), [0, 0, 1, 1]), "too large for float32")
    one_line_error(lambda: new.fit(X[0], y[:1]), "must be 2-D .* Reshape your data")
    one_line_error(lambda: new.fit(X, y[:-1]), "different lengths: 720 embeddings but 719 labels")
    one_line_error(lambda: new.fit(np.empty((0, 4)), []), "empty")
    one_line_error(lambda: new.fit(X, np.zeros(len(X))), "at least 2 classes")
    one_line_error(lambda: ImprintClassifier(k=0).fit(X, y), "k must be an integer >= 1")
    one_line_error(lambda: ImprintClassifier(aggregation="mnn", m=0).fit(X, y), "m must be an integer >= 1")
    one_line_error(lambda: ImprintClassifier(m=3).fit(X, y), "only used by aggregation='mnn'")
    one_line_error(lambda: ImprintClassifier(temperature=0).fit(X, y), "temperature must be")
    one_line_error(lambda: clf.predict(X[:, :5]), "X has 5 features, but ImprintClassifier is expecting 32")
    one_line_error(lambda: clf.predict(nan), "NaN")
    one_line_error(lambda: clf.predict([["a", "b"]]), "must hold numbers")


@pytest.mark.parametrize("scale", [1e-15, 1e-40])
def test_embeddings_of_tiny_magnitude_are_refused_as_huge_ones_are(mixture, fitted, scale):
    """At 1e-15 Tip-Adapter scored 70% of its own support set; at 1e-40 every head named one class and RanPAC's
    scores were NaN. 1e-12 still fits every head exactly (the bound leaves a 100x margin)."""
    X, y = mixture
    clf, _, _ = fitted
    one_line_error(lambda: ImprintClassifier.from_preset("tip_adapter").fit(X * scale, y), "below 1e-10 .* rescale")
    one_line_error(lambda: clf.add_classes(X[:5] * scale, np.full(5, 99)), "below 1e-10")
    tiny = X[:4].copy()
    tiny[2] *= scale
    one_line_error(lambda: clf.predict(tiny), "first at row 2")
    zero = X[:4].copy()
    zero[1] = 0.0  # an all-zero row is exact, and accepted as before
    assert len(clf.predict(zero)) == 4
    small = ImprintClassifier.from_preset("tip_adapter").fit(X * 1e-10, y)
    assert (small.predict(X * 1e-10) == ImprintClassifier.from_preset("tip_adapter").fit(X, y).predict(X)).mean() > 0.99


def test_unfitted_classifier_says_so(mixture):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        ImprintClassifier().predict(mixture[0])


def test_add_classes_leaves_existing_classes_untouched(mixture):
    X, y = mixture
    old = y < 4
    clf = ImprintClassifier(k=5, norm_post="quantile").fit(X[old], y[old])
    before = {c: clf.proxies_[clf.proxy_labels_ == c].copy() for c in clf.classes_}
    clf.add_classes(X[~old], y[~old])
    assert list(clf.classes_) == [0, 1, 2, 3, 4, 5]
    for c, proxies in before.items():
        np.testing.assert_array_equal(clf.proxies_[clf.proxy_labels_ == c], proxies)
    full = ImprintClassifier(k=5).fit(X, y)
    assert clf.score(X, y) > 0.9 and full.score(X, y) > 0.9
    with pytest.raises(ValueError, match="already imprinted"):
        clf.add_classes(X[:3], [0, 0, 0])


def test_add_classes_keeps_sorted_classes_with_string_labels(mixture):
    X, y = mixture
    names = np.array(["delta", "alpha", "echo", "bravo", "foxtrot", "charlie"])[y]
    first = np.isin(names, ["delta", "echo", "foxtrot"])
    clf = ImprintClassifier(k=4).fit(X[first], names[first]).add_classes(X[~first], names[~first])
    assert list(clf.classes_) == sorted(set(names))
    reference = ImprintClassifier(k=4).fit(X, names)
    assert (clf.predict(X) == reference.predict(X)).mean() > 0.95


def test_remove_classes(mixture):
    X, y = mixture
    clf = ImprintClassifier(k=5).fit(X, y)
    kept = clf.proxies_[clf.proxy_labels_ >= 2].copy()
    clf.remove_classes([0, 1])
    assert list(clf.classes_) == [2, 3, 4, 5]
    np.testing.assert_array_equal(clf.proxies_, kept)
    assert set(clf.predict(X)) <= {2, 3, 4, 5}
    with pytest.raises(ValueError, match="unknown class 9"):
        clf.remove_classes([9])
    with pytest.raises(ValueError, match="fewer than 2"):
        clf.remove_classes([2, 3, 4])


def reference_scores(clf, X):
    """Plain matrix-product reference for L2-normalised dot scores with max aggregation."""
    queries = X / np.linalg.norm(X, axis=1, keepdims=True)
    scores = queries @ clf.proxies_.T
    return np.stack([scores[:, clf.proxy_labels_ == c].max(1) for c in clf.classes_], axis=1)


def test_chunked_prediction_equals_the_matrix_product(mixture, monkeypatch):
    X, y = mixture
    for settings in (dict(generation="kmeans", k=8), dict(generation="all")):  # equal and unequal proxy counts
        rows = np.concatenate([np.flatnonzero(y == c)[: 30 + 10 * c] for c in range(6)])
        clf = ImprintClassifier(**settings).fit(X[rows], y[rows])
        whole = clf.decision_function(X)
        monkeypatch.setattr(blocks, "CHUNK_BYTES", 4 * len(clf.proxies_) * 7)  # blocks of 4 queries
        np.testing.assert_allclose(clf.decision_function(X), whole, rtol=0, atol=1e-6)
        monkeypatch.undo()
        np.testing.assert_allclose(whole, reference_scores(clf, X), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("settings", [
    dict(generation="kmeans", k=3),
    dict(generation="mean"),
    dict(generation="all", aggregation="mnn", m=7, mnn_weights="distance", metric="euclidean",
         norm_pre="none", norm_post="none", norm_inf="none"),
    dict(generation="kmeans", k=4, aggregation="mean", norm_post="quantile", norm_inf="quantile"),
])
def test_scores_of_a_query_do_not_depend_on_the_batch_it_comes_in(mixture, settings):
    X, y = mixture
    rows = np.concatenate([np.flatnonzero(y == c)[: 20 + 7 * c] for c in range(6)])  # unequal classes
    clf = ImprintClassifier(**settings).fit(X[rows], y[rows])
    queries = X[1::3]
    whole = clf.decision_function(queries)
    alone = np.concatenate([clf.decision_function(queries[i:i + 1]) for i in range(0, len(queries), 17)])
    np.testing.assert_array_equal(alone, whole[::17])  # bit for bit, not merely close
    np.testing.assert_array_equal(clf.decision_function(queries[5:40]), whole[5:40])
    np.testing.assert_array_equal(np.concatenate([clf.predict(queries[i:i + 1]) for i in range(len(queries))]),
                                  clf.predict(queries))
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)  # a unit row among raw rows
    mixed = np.concatenate([unit[:1], queries[1:9]])
    np.testing.assert_array_equal(clf.decision_function(mixed)[:1], clf.decision_function(unit[:1]))


def test_to_torch_gives_the_same_scores(fitted):
    clf, X, _ = fitted
    module = clf.to_torch()
    assert isinstance(module, torch.nn.Module)
    with torch.inference_mode():
        out = module(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(out, clf.decision_function(X), rtol=1e-6, atol=1e-6)
    module.proxies.zero_()  # a copy: editing it does not change the classifier
    assert np.abs(clf.proxies_).sum() > 0


@pytest.mark.parametrize("settings", [
    dict(generation="kmeans", k=5),
    dict(generation="mean", norm_pre="none", norm_post="quantile", norm_inf="quantile"),
    dict(generation="all", aggregation="mnn", m=3, mnn_weights="distance", metric="euclidean"),
])
def test_save_load_round_trip(tmp_path, mixture, settings):
    X, y = mixture
    labels = np.array([f"c{c}" for c in y])
    clf = ImprintClassifier(**settings).fit(X, labels, encoder_id="timm:tf_efficientnet_lite0")
    path = tmp_path / "clf.safetensors"
    clf.save(path)
    loaded = ImprintClassifier.load(path)
    np.testing.assert_array_equal(loaded.decision_function(X), clf.decision_function(X))
    assert list(loaded.classes_) == list(clf.classes_)
    assert loaded.get_params() == clf.get_params()
    assert loaded.encoder_id_ == "timm:tf_efficientnet_lite0"
    assert b"pickle" not in path.read_bytes()[:200] and path.read_bytes()[8:9] == b"{"


def test_load_rejects_bad_files_with_clear_errors(tmp_path, fitted):
    clf, _, _ = fitted
    good = tmp_path / "good.safetensors"
    clf.save(good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a classifier at all")
    for path in (truncated, garbage):
        one_line_error(lambda: ImprintClassifier.load(path), "corrupt or truncated", ClassifierFileError)
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_len])
    meta = json.loads(header["__metadata__"]["imprint"])

    def rewrite(name, change, sign=True):
        from safetensors.numpy import load_file

        from imprint.io.classifier_file import file_digest

        edited = dict(meta)
        change(edited)
        if sign:  # a file that looks consistent: its checksum computed over the change
            edited["digest"] = file_digest(edited, load_file(good))
        new_header = dict(header, __metadata__={"imprint": json.dumps(edited)})
        blob = json.dumps(new_header).encode()
        blob += b" " * (-len(blob) % 8)
        path = tmp_path / name
        path.write_bytes(len(blob).to_bytes(8, "little") + blob + data[8 + header_len:])
        return path

    newer = rewrite("newer.safetensors", lambda m: m.update(format_version=99))
    one_line_error(lambda: ImprintClassifier.load(newer), "format version 99", ClassifierFileError)
    wrong_dim = rewrite("dim.safetensors", lambda m: m.update(embedding_dim=512))
    one_line_error(lambda: ImprintClassifier.load(wrong_dim), "inconsistent", ClassifierFileError)
    swapped = rewrite("swapped.safetensors", lambda m: m.update(classes=m["classes"][::-1]), sign=False)
    one_line_error(lambda: ImprintClassifier.load(swapped), "altered or damaged", ClassifierFileError)
    one_line_error(lambda: ImprintClassifier.load(good, expected_dim=512), "fitted on 32-dimensional",
                   ClassifierFileError)
    with pytest.raises(FileNotFoundError, match="not found"):
        ImprintClassifier.load(tmp_path / "missing.safetensors")


def test_save_is_atomic_and_keeps_the_old_file_on_failure(tmp_path, fitted, monkeypatch):
    clf, X, _ = fitted
    path = tmp_path / "clf.safetensors"
    clf.save(path)
    before = path.read_bytes()

    def broken_replace(*args):
        raise OSError("disk full")

    monkeypatch.setattr("imprint.core.atomic.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        clf.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["clf.safetensors"]  # no temp file left behind


def test_unsavable_labels_are_named(tmp_path, mixture):
    X, y = mixture
    clf = ImprintClassifier(k=2).fit(X, y)
    clf.classes_ = np.array([(1, 2)] * 6 + [None], dtype=object)[:6]
    with pytest.raises(ValueError, match="cannot be saved"):
        clf.save(tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_to_torch_module_works_under_autograd(mixture):
    X, y = mixture
    clf = ImprintClassifier(generation="mean", norm_pre="quantile", norm_post="quantile").fit(X, y)
    module = clf.to_torch()
    queries = torch.from_numpy(X[:3]).requires_grad_()
    module(queries).max(dim=1).values.sum().backward()
    assert queries.grad is not None and torch.isfinite(queries.grad).all()


def test_the_classifier_owns_its_proxies_even_when_no_copy_was_needed():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)  # unit rows: l2 leaves them as they are
    y = np.repeat([0, 1], 20)
    clf = ImprintClassifier(generation="all", device="cpu").fit(X, y)
    before = clf.proxies_.copy()
    X[:] = 0.0
    assert np.array_equal(clf.proxies_, before)


def test_without_a_gpu_everything_falls_back_to_the_cpu(mixture, monkeypatch):
    import faiss
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    X, y = mixture
    for backend in ("batched", "faiss"):
        clf = ImprintClassifier(k=5, kmeans_backend=backend).fit(X, y)
        assert clf.device_.type in ("cpu", "mps") and clf.score(X, y) > 0.9
    many = ImprintClassifier(generation="all", aggregation="mnn", m=3).fit(np.tile(X, (8, 1)), np.tile(y, 8))
    assert len(many.proxies_) >= 4096  # many proxies: mnn's top-m over blocks of proxy scores
    assert many.score(X, y) > 0.9


@pytest.mark.parametrize("metric", ["dot", "euclidean"])
def test_predict_by_the_best_proxy_agrees_with_the_class_scores(metric):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(6000, 16)).astype(np.float32)
    y = rng.integers(0, 40, size=6000)
    clf = ImprintClassifier(generation="all", metric=metric, device="cpu").fit(X, y)
    assert len(clf.proxies_) >= 4096  # blocks of fewer than 1024 queries
    queries = rng.normal(size=(500, 16)).astype(np.float32)
    expected = clf.classes_[clf.decision_function(queries).argmax(axis=1)]
    np.testing.assert_array_equal(clf.predict(queries), expected)


@pytest.mark.parametrize("array", ["proxies", "metric.0.stats"])
def test_a_resigned_file_with_a_nan_in_its_arrays_is_refused_on_load(tmp_path, mixture, array):
    """Its checksum matches (recomputed over the change), but a NaN would make every answer NaN."""
    from safetensors.numpy import load_file, save_file

    from imprint.io.classifier_file import file_digest, read_header

    X, y = mixture
    path = tmp_path / "clf.safetensors"
    ImprintClassifier.from_preset("gda").fit(X, y).save(path)
    meta = read_header(path)
    arrays = load_file(path)
    name = next(n for n in arrays if n.startswith(array))
    arrays[name] = arrays[name].copy()
    arrays[name].flat[-1] = np.nan
    meta["digest"] = file_digest(meta, arrays)
    save_file(arrays, path, metadata={"imprint": json.dumps(meta)})
    one_line_error(lambda: ImprintClassifier.load(path), f"{name} must be finite numbers", ClassifierFileError)


def test_a_preset_with_its_own_stage_changed_runs_that_stage_as_a_custom_method(mixture):
    X, y = mixture
    changed = ImprintClassifier.from_preset("gda", generation="kmeans", k=3).fit(X, y)
    assert changed.get_params()["method"] == "custom" and changed.get_params()["metric"] == "mahalanobis"
    assert changed.proxy_counts_.tolist() == [3] * 6  # generation="kmeans" is the default stage, yet it runs
    same = ImprintClassifier.from_preset("gda", seed=1)
    assert same.get_params()["method"] == "gda"  # a setting the preset does not set keeps its name
