"""Fused optimizer updates: RMSProp and Adam with global-norm clipping in one pass over each variable.

Keras 3's `apply` runs the clipping and the RMSProp/Adam formulas as separate TensorFlow ops, each reading
and writing a whole variable-sized tensor (why that matters for this model's large classifier, measured:
docs/benchmarks.md). `FusedUpdate` computes the same formulas with the optimizer's own state, but compiles
each variable's update (clip scale, slot updates, variable update) into one XLA kernel that reads the
gradient, variable and slots once and writes them once.

The Keras optimizer stays the owner of every state variable (slots, `iterations`, learning rate), so
checkpoints, `optimizer.variables` and resuming are unchanged, and a run may switch between the fused and the
Keras path at any checkpoint.

Under a multi-replica strategy the per-replica gradients are summed first (`ReplicaContext.all_reduce`), the
global norm is taken of the summed gradients, and each variable is updated on its devices with
`strategy.extended.update`, so Mirrored and MultiWorkerMirrored runs clip by the same norm as a single-device
run. (Keras 3's `apply` clips each replica's partial gradients by their own norm before summing them.)

The slots are read through Keras 3's optimizer internals (`_velocities`, `_momentums`,
`_get_variable_index`); `fused_update_unsupported` checks that they exist and fit the variables, so another
Keras version that changes them falls back to `apply` with a warning line giving the reason instead of failing.
`fused_update_unsupported(optimizer)` names what the fused path cannot do; the training loop then uses the
Keras optimizer's `apply`: `LossScaleOptimizer` (mixed_float16), weight decay, EMA, gradient accumulation,
`clipnorm`/`clipvalue`, variable constraints, RMSProp `centered=True`, Adam `amsgrad=True`, and any other
optimizer class. Sparse gradients (`tf.IndexedSlices`, from embedding lookups; this model has none) are made
dense. The kernels need TensorFlow's XLA JIT (part of the standard Linux and macOS wheels, CPU and GPU).
"""

import keras
import tensorflow as tf


def fused_update_unsupported(optimizer, variables=()):  # noqa: PLR0911 (one return per unsupported feature)
    """Why `optimizer` cannot use `FusedUpdate`, or None when it can.

    Args:
        optimizer: a Keras optimizer.
        variables: the trainable variables it updates (checked for constraints).

    Returns:
        None, or a str naming the first feature the fused path does not implement.
    """
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return "LossScaleOptimizer (mixed_float16 loss scaling)"
    if type(optimizer) is keras.optimizers.RMSprop:
        if optimizer.centered:
            return "RMSprop(centered=True)"
    elif type(optimizer) is keras.optimizers.Adam:
        if optimizer.amsgrad:
            return "Adam(amsgrad=True)"
    else:
        return f"optimizer class {type(optimizer).__name__}"
    for attribute in ("clipnorm", "clipvalue", "weight_decay", "gradient_accumulation_steps"):
        if getattr(optimizer, attribute, None):
            return f"{attribute}={getattr(optimizer, attribute)}"
    if optimizer.use_ema:
        return "use_ema=True"
    if getattr(optimizer, "loss_scale_factor", None) is not None:
        return "loss_scale_factor"
    for variable in variables:
        if getattr(variable, "constraint", None) is not None:
            return f"a constraint on variable {variable.name}"
    return _missing_internals(optimizer, variables)


def _slot_names(optimizer):
    """The private slot lists `FusedUpdate` reads, in the order its kernel takes them (None: unused)."""
    if type(optimizer) is keras.optimizers.RMSprop:
        return ["_velocities", "_momentums" if optimizer.momentum > 0 else None]
    return ["_momentums", "_velocities"]


def _missing_internals(optimizer, variables):
    """Why the Keras internals `FusedUpdate` reads are absent or do not fit `variables`, or None."""
    if not callable(getattr(optimizer, "_get_variable_index", None)):
        return f"this Keras version's {type(optimizer).__name__} (no _get_variable_index)"
    if not variables:
        return None  # the slots exist once the optimizer is built; FusedUpdate checks them with the variables
    for name in filter(None, _slot_names(optimizer)):
        if not isinstance(getattr(optimizer, name, None), list):
            return f"this Keras version's {type(optimizer).__name__} (no slot list {name})"
    for variable in variables:
        try:
            index = optimizer._get_variable_index(variable)
        except (KeyError, ValueError, AttributeError):
            return f"variable {variable.name}, which the optimizer was not built with"
        for name in filter(None, _slot_names(optimizer)):
            if index >= len(getattr(optimizer, name)):
                return f"an optimizer not built for variable {variable.name}"
    return None


def _tf_variable(variable):
    """The `tf.Variable` (or distributed variable) behind a Keras variable."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def clip_scale(gradients, clip_norm):
    """Keras 3's global-norm clipping factor `clip_norm / max(norm, clip_norm)`; NaN for a non-finite norm.

    The norm comes from `tf.linalg.global_norm` (one fused L2Loss per tensor), the factor from the formula of
    `keras.optimizers.base_optimizer.clip_by_global_norm`, so a non-finite gradient makes every update NaN as
    it does in Keras.
    """
    norm = tf.linalg.global_norm(gradients)
    scale = clip_norm * tf.minimum(1.0 / norm, 1.0 / clip_norm)
    return scale + (norm - norm)


def _rmsprop_update(
    variable, gradient, scale, learning_rate, velocity, momentum, *, rho, epsilon, momentum_rate
):
    """Keras 3 `RMSprop.update_step` (not centered) on clipped gradients `gradient * scale`."""
    gradient = tf.cast(gradient, variable.dtype) * tf.cast(scale, variable.dtype)
    learning_rate = tf.cast(learning_rate, variable.dtype)
    new_velocity = rho * velocity + (1 - rho) * tf.square(gradient)
    velocity.assign(new_velocity)
    increment = learning_rate * gradient / tf.sqrt(new_velocity + epsilon)
    if momentum is not None:
        increment = momentum_rate * momentum + increment
        momentum.assign(increment)
    variable.assign_sub(increment)


def _adam_update(variable, gradient, scale, alpha, momentum, velocity, *, beta_1, beta_2, epsilon):
    """Keras 3 `Adam.update_step` (no amsgrad) on clipped gradients; `alpha` is the bias-corrected rate."""
    gradient = tf.cast(gradient, variable.dtype) * tf.cast(scale, variable.dtype)
    alpha = tf.cast(alpha, variable.dtype)
    new_momentum = momentum + (gradient - momentum) * (1 - beta_1)
    new_velocity = velocity + (tf.square(gradient) - velocity) * (1 - beta_2)
    momentum.assign(new_momentum)
    velocity.assign(new_velocity)
    variable.assign_sub(new_momentum * alpha / (tf.sqrt(new_velocity) + epsilon))


class FusedUpdate:
    """Applies gradients the way `optimizer.apply` does, with one XLA-compiled kernel per variable.

    Call it in a replica context (inside `strategy.run`), in place of `optimizer.apply(gradients, variables)`.
    Clipping uses `optimizer.global_clipnorm`; the learning rate is `optimizer.learning_rate` (schedules too);
    `optimizer.iterations` is incremented as Keras does.

    Args:
        optimizer: a built `keras.optimizers.RMSprop` or `keras.optimizers.Adam` for which
            `fused_update_unsupported` returns None.
        variables: the trainable variables the optimizer was built with.
        jit_compile: bool, whether each variable's update is one XLA kernel. False runs the same formulas as
            plain TensorFlow ops (slower on CPU; for debugging). Defaults to True.
    """

    def __init__(self, optimizer, variables, jit_compile=True):
        reason = fused_update_unsupported(optimizer, variables)
        if reason is not None:
            raise ValueError(f"FusedUpdate does not support {reason}; use optimizer.apply().")
        self.optimizer = optimizer
        self.variables = list(variables)
        slots = [None if name is None else getattr(optimizer, name) for name in _slot_names(optimizer)]
        if type(optimizer) is keras.optimizers.RMSprop:
            kernel = _rmsprop_update
            hyper = {"rho": optimizer.rho, "epsilon": optimizer.epsilon, "momentum_rate": optimizer.momentum}
        else:
            kernel = _adam_update
            hyper = {"beta_1": optimizer.beta_1, "beta_2": optimizer.beta_2, "epsilon": optimizer.epsilon}
        # Per variable, its slot variables in the order the kernel takes them (None: slot not used).
        self._slots = []
        for variable in self.variables:
            index = optimizer._get_variable_index(variable)
            self._slots.append(tuple(None if slot is None else _tf_variable(slot[index]) for slot in slots))

        def kernel_call(variable, gradient, scale, rate, *slot_values):
            kernel(variable, gradient, scale, rate, *slot_values, **hyper)

        # One compiled function; it is traced once per variable shape.
        self._kernel = tf.function(kernel_call, jit_compile=jit_compile, autograph=False)

    def _rate(self):
        """The learning rate (RMSProp) or Adam's bias-corrected step size, a float32 scalar."""
        optimizer = self.optimizer
        learning_rate = tf.cast(optimizer.learning_rate, tf.float32)
        if type(optimizer) is keras.optimizers.RMSprop:
            return learning_rate
        local_step = tf.cast(optimizer.iterations + 1, tf.float32)
        beta_1_power = tf.pow(tf.cast(optimizer.beta_1, tf.float32), local_step)
        beta_2_power = tf.pow(tf.cast(optimizer.beta_2, tf.float32), local_step)
        return learning_rate * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)

    def __call__(self, gradients, variables=None):
        """Updates `variables` (by default those given at construction) with `gradients`; replica context."""
        variables = self.variables if variables is None else list(variables)
        if len(variables) != len(self.variables) or any(
            a is not b for a, b in zip(variables, self.variables, strict=True)
        ):
            raise ValueError("FusedUpdate must be called with the variables it was built for.")
        pairs = [
            (tf.convert_to_tensor(gradient), index)
            for index, gradient in enumerate(gradients)
            if gradient is not None
        ]
        if not pairs:
            raise ValueError("No gradients provided for any variable.")
        gradients = [gradient for gradient, _ in pairs]
        context = tf.distribute.get_replica_context()
        if context is None:
            raise ValueError("FusedUpdate must be called in a replica context (inside strategy.run).")
        if context.num_replicas_in_sync > 1:
            gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
        clip_norm = self.optimizer.global_clipnorm
        if clip_norm and clip_norm > 0:
            scale = clip_scale(gradients, float(clip_norm))
        else:
            scale = tf.constant(1.0, tf.float32)
        indices = [index for _, index in pairs]
        context.merge_call(self._apply, args=(gradients, scale, indices))
        self.optimizer.iterations.assign_add(1)

    def _update(self, variable, gradient, scale, rate, *slots):
        """Runs the kernel on one device's copy: `variable` is that copy, slots are resolved to theirs."""
        self._kernel(variable, gradient, scale, rate, *(_local_copy(slot, variable) for slot in slots))

    def _apply(self, strategy, gradients, scale, indices):
        rate = self._rate()
        for gradient, index in zip(gradients, indices, strict=True):
            strategy.extended.update(
                _tf_variable(self.variables[index]),
                self._update,
                args=(gradient, scale, rate, *self._slots[index]),
                group=False,
            )


def _local_copy(slot, variable):
    """The copy of a (possibly mirrored) slot variable on `variable`'s device.

    `strategy.extended.update` hands the update function each device's copy of the updated variable but
    passes other distributed variables whole; a compiled function given the whole mirrored variable would
    capture one copy and update it once per device, so each slot is resolved to its local copy here.
    """
    if slot is None or not isinstance(slot, tf.distribute.DistributedValues):
        return slot
    for copy in slot.values:
        if copy.device == variable.device:
            return copy
    raise ValueError(f"No copy of {slot.name} on device {variable.device}.")
