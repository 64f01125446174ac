"""FusedUpdate against Keras 3's own `optimizer.apply`: same slots, same variables, same step counter."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ac_keras.optimizers import FusedUpdate, fused_update_unsupported

# Repeated shapes: one compiled update function serves every variable of a shape.
SHAPES = [(37, 11), (11,), (5, 3, 2), (11,), (37, 11)]


def _variables(seed):
    rng = np.random.default_rng(seed)
    return [keras.Variable(rng.normal(size=shape).astype("float32")) for shape in SHAPES]


def _gradients(step, scale):
    rng = np.random.default_rng(100 + step)
    return [tf.constant(scale * rng.normal(size=shape).astype("float32")) for shape in SHAPES]


def _make(name, clip):
    clip = {"global_clipnorm": clip} if clip else {}
    if name == "rmsprop":
        return keras.optimizers.RMSprop(0.01, **clip)
    if name == "rmsprop_momentum":
        return keras.optimizers.RMSprop(0.01, momentum=0.5, **clip)
    return keras.optimizers.Adam(0.01, **clip)


@pytest.mark.parametrize("name", ["rmsprop", "rmsprop_momentum", "adam"])
@pytest.mark.parametrize("clip", [0.0, 1.0])
@pytest.mark.parametrize("jit_compile", [True, False])
def test_fused_update_matches_keras_apply(name, clip, jit_compile):
    keras_vars, fused_vars = _variables(0), _variables(0)
    keras_opt, fused_opt = _make(name, clip), _make(name, clip)
    keras_opt.build(keras_vars)
    fused_opt.build(fused_vars)
    fused = FusedUpdate(fused_opt, fused_vars, jit_compile=jit_compile)

    @tf.function
    def keras_step(gradients):
        keras_opt.apply(gradients, keras_vars)

    @tf.function
    def fused_step(gradients):
        fused(gradients, fused_vars)

    for step in range(5):
        # Large gradients on odd steps, so clipping is active on some steps and not on others.
        gradients = _gradients(step, 3.0 if step % 2 else 0.05)
        keras_step(gradients)
        fused_step(gradients)
    assert int(fused_opt.iterations.numpy()) == int(keras_opt.iterations.numpy()) == 5
    for want, got in zip(keras_vars, fused_vars, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-7)
    for want, got in zip(keras_opt.variables, fused_opt.variables, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)


def test_fused_update_under_mirrored_strategy_sums_replicas_then_clips():
    devices = [device.name for device in tf.config.list_logical_devices("CPU")][:2]
    # Reduction through one device: collective ops would reuse the instance keys of an earlier
    # MirroredStrategy in the same test process (TensorFlow numbers them per strategy object).
    strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    assert strategy.num_replicas_in_sync == 2
    plain_vars = _variables(1)
    plain_opt = _make("rmsprop_momentum", 1.0)
    plain_opt.build(plain_vars)
    with strategy.scope():
        mirrored_vars = _variables(1)
        mirrored_opt = _make("rmsprop_momentum", 1.0)
        mirrored_opt.build(mirrored_vars)
        fused = FusedUpdate(mirrored_opt, mirrored_vars)

    def replica_step(first, second):
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        gradients = [tf.where(tf.equal(replica, 0), a, b) for a, b in zip(first, second, strict=True)]
        fused(gradients, mirrored_vars)

    step = tf.function(lambda first, second: strategy.run(replica_step, args=(first, second)))
    for index in range(3):
        first, second = _gradients(2 * index, 2.0), _gradients(2 * index + 1, 0.1)
        step(first, second)
        # One device with the summed gradients and the Keras optimizer: the same update.
        plain_opt.apply([a + b for a, b in zip(first, second, strict=True)], plain_vars)
    # Every device's copy of every variable and slot matches.
    for want, got in zip(
        [*plain_vars, *plain_opt.variables], [*mirrored_vars, *mirrored_opt.variables], strict=True
    ):
        for copy in strategy.experimental_local_results(got.value):
            np.testing.assert_allclose(copy.numpy(), np.asarray(want), rtol=1e-5, atol=1e-7)
    assert int(mirrored_opt.iterations.numpy()) == 3


def test_unsupported_configurations_are_named():
    assert fused_update_unsupported(keras.optimizers.Adam()) is None
    assert fused_update_unsupported(keras.optimizers.RMSprop(global_clipnorm=5.0)) is None
    lso = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam())
    assert "LossScaleOptimizer" in fused_update_unsupported(lso)
    assert "SGD" in fused_update_unsupported(keras.optimizers.SGD())
    assert "clipnorm" in fused_update_unsupported(keras.optimizers.Adam(clipnorm=1.0))
    assert "amsgrad" in fused_update_unsupported(keras.optimizers.Adam(amsgrad=True))
    assert "centered" in fused_update_unsupported(keras.optimizers.RMSprop(centered=True))
    with pytest.raises(ValueError, match="LossScaleOptimizer"):
        FusedUpdate(lso, [])


def test_missing_keras_internals_fall_back_with_a_reason(caplog):
    variables = [keras.Variable(np.ones((3, 2), "float32"), name="w")]
    optimizer = keras.optimizers.RMSprop(momentum=0.5)
    optimizer.build(variables)
    assert fused_update_unsupported(optimizer, variables) is None
    # A Keras version without the slot lists the fused update reads: it says so instead of failing.
    del optimizer._momentums
    assert "no slot list _momentums" in fused_update_unsupported(optimizer, variables)
    adam = keras.optimizers.Adam()
    adam.build(variables)
    other = [keras.Variable(np.ones((2,), "float32"), name="other")]
    assert "not built with" in fused_update_unsupported(adam, other)
    # The training loop then uses Keras's own update and says why in one warning line (commands show
    # warnings); asked not to fuse, it says nothing.
    from ac_keras.trainer import make_apply_gradients

    with caplog.at_level("WARNING", logger="ac_keras"):
        apply = make_apply_gradients(optimizer, variables, fused=True)
        assert make_apply_gradients(adam, variables, fused=False) == adam.apply
    assert apply == optimizer.apply
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert "no slot list _momentums" in caplog.records[0].getMessage()
    assert len(caplog.records[0].getMessage().splitlines()) == 1
