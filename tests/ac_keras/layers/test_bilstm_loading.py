"""Loading a model of several BiLSTM aggregators never lets Keras's object sharing mix their layers.

While a model loads, Keras keys the configs it serializes by `id()` (`ObjectSharingScope`), and
`keras.layers.Bidirectional` serializes the LSTM it is given twice. If that LSTM were freed during the load,
another aggregator's LSTM could take its address, and the load would hand it this aggregator's layers (a
"different go_backwards" error, or silently shared weights, depending on when the garbage collector ran).
"""

import gc
import weakref

import keras
import numpy as np
import tensorflow as tf
from keras.src.saving import serialization_lib

from ac_keras.model import build_model


def test_lstms_serialized_while_loading_stay_alive_and_the_loaded_model_matches(tmp_path, monkeypatch):
    dims = {"rgb": 8, "flow": 6, "audio": 4}
    model = build_model(dims, None, num_classes=5, aggregator="bilstm")
    path = tmp_path / "bilstm.keras"
    model.save(path)

    serialized = []
    serialize = serialization_lib.serialize_keras_object

    def recording_serialize(obj):
        if isinstance(obj, keras.layers.LSTM):
            serialized.append(weakref.ref(obj))
        return serialize(obj)

    monkeypatch.setattr(serialization_lib, "serialize_keras_object", recording_serialize)
    loaded = keras.models.load_model(path)
    gc.collect()
    assert len(serialized) == 2 * len(dims)  # each Bidirectional serializes its LSTM twice
    assert all(ref() is not None for ref in serialized)  # no address can be reused during a load

    rng = np.random.default_rng(0)
    inputs = {
        name: tf.RaggedTensor.from_row_lengths(rng.normal(size=(7, dim)).astype(np.float32), [3, 4])
        for name, dim in dims.items()
    }
    np.testing.assert_array_equal(loaded(inputs).numpy(), model(inputs).numpy())
