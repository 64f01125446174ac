import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from ac_keras.errors import DataError, MissingDataError
from ac_keras.extraction import yt8m
from ac_keras.testing.yt8m_standin import write_standin_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_standin_model_dir(str(tmp_path_factory.mktemp("yt8m")))


@pytest.fixture(scope="module")
def embedder(model_dir):
    return yt8m.Yt8mEmbedder(model_dir)


def released_extractor(model_dir, frame):
    """The released extractor's computation: a TF1 session fed at DecodeJpeg:0, then its PCA in NumPy."""
    with open(os.path.join(model_dir, yt8m.GRAPH_FILE), "rb") as file:
        graph_def = tf.compat.v1.GraphDef.FromString(file.read())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as session:
            pool3 = session.run("pool_3/_reshape:0", feed_dict={"DecodeJpeg:0": frame})
    pca_mean = np.load(os.path.join(model_dir, "mean.npy"))[:, 0]
    pca_eigenvals = np.load(os.path.join(model_dir, "eigenvals.npy"))[:1024, 0]
    pca_eigenvecs = np.load(os.path.join(model_dir, "eigenvecs.npy")).T[:, :1024]
    # As the extractor's graph: float32 constants, float32 arithmetic.
    feats = pool3[0] - pca_mean.astype(np.float32)
    feats = feats.reshape((1, 2048)) @ pca_eigenvecs.astype(np.float32)
    feats = feats.reshape((1024,)) / np.sqrt(pca_eigenvals.astype(np.float32) + np.float32(1e-4))
    return pool3[0], feats


def test_standin_graph_has_the_2015_batch_norm_which_is_rewritten(model_dir):
    """The released graph normalizes with an op TF2 functions no longer run; the stand-in does too."""
    with open(os.path.join(model_dir, yt8m.GRAPH_FILE), "rb") as file:
        graph_def = tf.compat.v1.GraphDef.FromString(file.read())
    assert graph_def.versions.producer < 9
    old_ops = [node.name for node in graph_def.node if node.op == "BatchNormWithGlobalNormalization"]
    assert old_ops == ["conv/batchnorm", "mixed/conv/batchnorm"]
    rewritten = yt8m.replace_old_batch_norms(graph_def)
    assert not [node for node in rewritten.node if node.op == "BatchNormWithGlobalNormalization"]
    assert {node.name for node in graph_def.node} <= {node.name for node in rewritten.node}
    assert len([node for node in graph_def.node if node.op == "BatchNormWithGlobalNormalization"]) == 2


@pytest.mark.parametrize("height, width", [(36, 48), (21, 17)])
def test_embed_equals_the_released_extractor(model_dir, embedder, height, width):
    frames = np.random.default_rng(height).integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    features = embedder.embed(frames)
    pool3 = embedder.pool3(frames, batch_size=2)
    assert features.dtype == np.float32 and features.shape == (3, 1024)
    assert pool3.dtype == np.float32 and pool3.shape == (3, 2048)
    for index, frame in enumerate(frames):
        expected_pool3, expected = released_extractor(model_dir, frame)
        np.testing.assert_allclose(pool3[index], expected_pool3, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(features[index], expected, rtol=1e-4, atol=1e-4)
    # Different frames give different features (the stand-in is not constant).
    assert np.abs(features[0] - features[1]).max() > 1e-2


def test_pca_apply_is_the_extractor_formula(model_dir):
    pca = yt8m.Yt8mPca.from_dir(model_dir)
    pool3 = np.random.default_rng(0).uniform(0, 1, (4, 2048)).astype(np.float32)
    mean = np.load(os.path.join(model_dir, "mean.npy"))[:, 0]
    eigenvals = np.load(os.path.join(model_dir, "eigenvals.npy"))[:1024, 0]
    eigenvecs = np.load(os.path.join(model_dir, "eigenvecs.npy")).T[:, :1024]
    expected = ((pool3 - mean) @ eigenvecs) / np.sqrt(eigenvals + 1e-4)
    result = pca.apply(pool3)
    assert result.dtype == np.float32 and result.shape == (4, 1024)
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-4)


def test_more_eigenvectors_than_kept(tmp_path, model_dir):
    """The released files may hold more than 1024 components; the extractor keeps the first 1024."""
    rng = np.random.default_rng(1)
    mean = rng.normal(size=(2048, 1))
    eigenvals = np.linspace(3.0, 0.1, 1100)[:, None]
    eigenvecs = rng.normal(size=(1100, 2048))
    pca = yt8m.Yt8mPca.from_arrays(mean, eigenvals, eigenvecs)
    np.testing.assert_array_equal(pca.eigenvecs, eigenvecs[:1024].T.astype(np.float32))
    np.testing.assert_array_equal(pca.eigenvals, eigenvals[:1024, 0].astype(np.float32))
    with pytest.raises(DataError, match=r"eigenvecs.npy: expected a numeric array of shape \(K, 2048\)"):
        yt8m.Yt8mPca.from_arrays(mean, eigenvals, eigenvecs[:, :2000])
    with pytest.raises(DataError, match=r"eigenvals.npy: .*K >= 1024"):
        yt8m.Yt8mPca.from_arrays(mean, eigenvals[:1000], eigenvecs)


def test_description_is_json_with_file_hashes(embedder):
    description = json.loads(json.dumps(embedder.description))
    assert description["model"] == "yt8m"
    assert sorted(description["files"]) == sorted([yt8m.GRAPH_FILE, *yt8m.PCA_FILES])
    assert all(len(digest) == 64 for digest in description["files"].values())
    assert description["pca_dims"] == 1024
    assert description["whitening_epsilon"] == 1e-4
    assert description["quantization"] == "nearest"
    assert embedder.output_dim == 1024 and embedder.name == "yt8m"


def test_bad_frames_and_empty_batch(embedder):
    assert embedder.embed(np.zeros((0, 8, 8, 3), np.uint8)).shape == (0, 1024)
    with pytest.raises(ValueError, match="RGB uint8"):
        embedder.embed(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="RGB uint8"):
        embedder.embed(np.zeros((8, 8, 3), np.uint8))


def test_missing_files_are_listed_with_their_source(tmp_path, model_dir):
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("mean.npy", "eigenvecs.npy"):
        shutil.copy(os.path.join(model_dir, name), partial / name)
    with pytest.raises(MissingDataError) as raised:
        yt8m.Yt8mEmbedder(str(partial))
    message = str(raised.value)
    assert "classify_image_graph_def.pb, eigenvals.npy" in message
    assert "inception-2015-12-05.tgz" in message and "yt8m_pca.tgz" in message
    missing = message.split("lacks", maxsplit=1)[1].split("Download", maxsplit=1)[0]
    assert "mean.npy" not in missing and "eigenvecs.npy" not in missing


def test_graph_without_the_input_tensor_is_a_data_error(tmp_path, model_dir):
    graph = tf.Graph()
    with graph.as_default():
        image = tf.compat.v1.placeholder(tf.uint8, [None, None, 3], name="input")
        tf.reshape(
            tf.reduce_mean(tf.cast(image, tf.float32)) * tf.ones([2048]), [1, 2048], name="pool_3/_reshape"
        )
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    (other / yt8m.GRAPH_FILE).write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(DataError, match="no tensor DecodeJpeg:0"):
        yt8m.Yt8mEmbedder(str(other))
    (other / yt8m.GRAPH_FILE).write_bytes(b"\xff not a graph")
    with pytest.raises(DataError, match="not a serialized GraphDef"):
        yt8m.Yt8mEmbedder(str(other))
