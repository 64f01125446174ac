import numpy as np
import pytest

from ac_keras.errors import DataError, MissingDataError, UsageError
from ac_keras.extraction.pca import PcaParams, apply_pca, fit_pca, load_pca, save_pca


def correlated_sample(num_samples=2000, input_dim=12, seed=0):
    """Features with distinct variances along random directions, and a non-zero mean."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(input_dim, input_dim)) * np.linspace(3.0, 0.2, input_dim)[:, None]
    return (rng.normal(size=(num_samples, input_dim)) @ mixing + rng.normal(size=input_dim) * 5).astype(
        np.float32
    )


def test_whitened_sample_has_zero_mean_and_unit_variance():
    features = correlated_sample()
    params = fit_pca(features, 8)
    whitened = apply_pca(params, features)
    assert whitened.dtype == np.float32 and whitened.shape == (2000, 8)
    np.testing.assert_allclose(whitened.mean(axis=0), 0.0, atol=1e-4)
    # Unit variance up to the epsilon: eigenvalue / (eigenvalue + epsilon).
    expected = params.eigenvalues / (params.eigenvalues + params.epsilon)
    np.testing.assert_allclose(whitened.var(axis=0, ddof=1), expected, rtol=1e-3)
    # Uncorrelated components.
    np.testing.assert_allclose(np.cov(whitened, rowvar=False), np.diag(expected), atol=1e-3)


def test_components_are_orthonormal_and_match_an_svd_up_to_sign():
    features = correlated_sample()
    params = fit_pca(features, 8)
    assert (
        params.components.shape == (8, 12) and params.mean.shape == (12,) and params.eigenvalues.shape == (8,)
    )
    np.testing.assert_allclose(params.components @ params.components.T, np.eye(8), atol=1e-5)
    assert np.all(np.diff(params.eigenvalues) <= 0)

    centered = features.astype(np.float64) - features.mean(axis=0, dtype=np.float64)
    _, singular_values, right_vectors = np.linalg.svd(centered, full_matrices=False)
    np.testing.assert_allclose(params.eigenvalues, singular_values[:8] ** 2 / (len(features) - 1), rtol=1e-5)
    signs = np.sign(np.sum(params.components * right_vectors[:8], axis=1))
    np.testing.assert_allclose(params.components, right_vectors[:8] * signs[:, None], atol=1e-5)
    np.testing.assert_allclose(params.mean, features.mean(axis=0), rtol=1e-6, atol=1e-6)


def test_sign_is_deterministic():
    features = correlated_sample()
    params = fit_pca(features, 5)
    largest = np.take_along_axis(params.components, np.argmax(np.abs(params.components), axis=1)[:, None], 1)
    assert np.all(largest > 0)
    # Reordering the sample changes nothing but rounding.
    again = fit_pca(features[::-1], 5)
    np.testing.assert_allclose(again.components, params.components, atol=1e-5)


def test_apply_pca_is_the_youtube8m_formula():
    rng = np.random.default_rng(3)
    params = PcaParams(
        mean=rng.normal(size=6).astype(np.float32),
        components=np.linalg.qr(rng.normal(size=(6, 6)))[0][:4].astype(np.float32),
        eigenvalues=np.array([4.0, 2.0, 1.0, 0.0], np.float32),
    )
    features = rng.normal(size=(3, 6)).astype(np.float32)
    expected = ((features - params.mean) @ params.components.T) / np.sqrt(params.eigenvalues + 1e-4)
    np.testing.assert_allclose(apply_pca(params, features), expected, rtol=1e-5)
    assert apply_pca(params, features[0]).shape == (4,)
    with pytest.raises(ValueError, match="length 6"):
        apply_pca(params, features[:, :5])


def test_save_load_round_trip(tmp_path):
    params = fit_pca(correlated_sample(), 4, epsilon=1e-3)
    path = str(tmp_path / "pca.npz")
    save_pca(params, path)
    loaded = load_pca(path)
    for key in ("mean", "components", "eigenvalues"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(params, key))
        assert getattr(loaded, key).dtype == np.float32
    assert loaded.epsilon == 1e-3
    with np.load(path) as npz:
        assert sorted(npz.files) == ["components", "eigenvalues", "epsilon", "mean"]


def test_dims_too_big_or_sample_too_small():
    features = correlated_sample(num_samples=50, input_dim=12)
    with pytest.raises(UsageError, match=r"pca_dims must be an int in 1\.\.12"):
        fit_pca(features, 13)
    with pytest.raises(UsageError, match="pca_dims"):
        fit_pca(features, 0)
    with pytest.raises(DataError, match="more than 10 frames"):
        fit_pca(features[:10], 10)
    assert fit_pca(features[:11], 10).dims == 10
    bad = features.copy()
    bad[3, 4] = np.nan
    with pytest.raises(DataError, match="NaN"):
        fit_pca(bad, 2)


def test_load_names_the_file_on_bad_content(tmp_path):
    with pytest.raises(MissingDataError, match="absent.npz"):
        load_pca(str(tmp_path / "absent.npz"))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an npz")
    with pytest.raises(DataError, match="garbage.npz"):
        load_pca(str(garbage))
    partial = tmp_path / "partial.npz"
    np.savez(partial, mean=np.zeros(3), components=np.zeros((2, 3)))
    with pytest.raises(DataError, match=r"partial.npz lacks eigenvalues, epsilon"):
        load_pca(str(partial))
    mismatched = tmp_path / "mismatched.npz"
    np.savez(mismatched, mean=np.zeros(3), components=np.zeros((2, 4)), eigenvalues=np.ones(2), epsilon=1e-4)
    with pytest.raises(DataError, match="mismatched.npz"):
        load_pca(str(mismatched))


def test_extractor_refuses_a_pca_of_other_dims_and_applies_one_of_its_dims(tmp_path):
    from ac_keras.extraction.extractor import ExtractionSpec, Extractor, ModalitySpec

    pca_file = str(tmp_path / "pca_rgb.npz")
    spec = ExtractionSpec((ModalitySpec("rgb", "model.keras", pca_file=pca_file, pca_dims=3),))
    features = correlated_sample(num_samples=40, input_dim=12)
    four = fit_pca(features, 4)
    with pytest.raises(DataError, match=r"rgb: the PCA \(file .*pca_rgb.npz\) projects to 4 values, but "):
        Extractor(spec, {"rgb": four})
    extractor = Extractor(spec)
    with pytest.raises(DataError, match="projects to 4 values, but --pca_dims is 3"):
        extractor.finish("rgb", features[:5], four)
    three = fit_pca(features, 3)
    stored, mean = Extractor(spec, {"rgb": three}).finish("rgb", features[:5])
    assert stored.dtype == np.uint8 and stored.shape == (5, 3)
    np.testing.assert_allclose(mean, apply_pca(three, features[:5]).mean(axis=0), rtol=1e-4, atol=1e-5)
