"""Adam and AdamW whose update is TensorFlow's fused `ResourceApplyAdam` kernel.

Keras applies Adam with about ten element-wise ops per variable, each a full pass over the
weights and the two moment slots; for U-Net's 24M parameters that took ~0.1 s of a ~1.2 s
mixed_bfloat16 step on 2 CPU cores. `ResourceApplyAdam` does the same arithmetic (the same
formula, bias correction folded into the step size) in one multi-threaded pass. Everything
else (weight decay, clipping, schedules, slots, saving) is Keras' own, so checkpoints and
backups are interchangeable with `keras.optimizers.Adam` / `AdamW`.

Encoder learning-rate multiplier: `Adam`, `AdamW` and `SGD` here take ``encoder_lr_mult``
(default 1): the learning rate (and the decoupled weight decay, which Keras scales by the
learning rate) of every encoder variable is multiplied by it, as a PyTorch parameter group
with its own learning rate would be. Encoder variables are those a zoo model's encoder
created (`mark_encoder_variables`; `SegmentationModel` marks them when it is built). The
optimizer's variables (slots, iterations) are Keras' own, so backups and resumed runs see
the same state as without a multiplier; the multiplier itself is in the optimizer's config.

Weight averaging (`use_ema=True`): Keras' moving average of the weights, with the momentum
warmed up as in `tf.train.ExponentialMovingAverage` (``min(ema_momentum, (1 + step) / (10 +
step))``) so the average forgets the random initialization within the first few dozen steps
instead of the first few hundred; ``ema_warmup=False`` gives Keras' constant momentum. Unlike
Keras, `fit` leaves the raw weights in the model at its end (it trains in several `fit` calls);
`zoo.training.averaging.swap_averaged_weights` puts the average in.
"""

from __future__ import annotations

from typing import Any

import keras

ENCODER_TAG = "_zoo_encoder_variable"


def mark_encoder_variables(variables: Any) -> None:
    """Mark `variables` (Keras variables) as encoder variables for `encoder_lr_mult`."""
    for variable in variables:
        setattr(variable, ENCODER_TAG, True)


def is_encoder_variable(variable: Any) -> bool:
    return bool(getattr(variable, ENCODER_TAG, False))


class _EncoderLRMultiplier:
    """Mixin: encoder variables get ``learning_rate * encoder_lr_mult``."""

    def __init__(self, *args: Any, encoder_lr_mult: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(encoder_lr_mult, bool) or not isinstance(encoder_lr_mult, (int, float)):
            encoder_lr_mult = -1
        if encoder_lr_mult < 0:
            raise ValueError(
                "Invalid value for argument `encoder_lr_mult`: expected a number >= 0 (0 "
                f"stops the encoder's updates, 1 trains it like the rest). Received: "
                f"encoder_lr_mult={encoder_lr_mult!r}"
            )
        self.encoder_lr_mult = float(encoder_lr_mult)
        self._lr_mults: list[float] = []

    def build(self, variables: Any) -> None:
        super().build(variables)
        self._lr_mults = [
            self.encoder_lr_mult if is_encoder_variable(v) else 1.0 for v in variables
        ]

    def _lr_mult(self, variable: Any) -> float:
        if not self._lr_mults:
            return 1.0
        return self._lr_mults[self._get_variable_index(variable)]

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> Any:
        mult = self._lr_mult(variable)
        if mult != 1.0:
            learning_rate = learning_rate * mult
        return super().update_step(gradient, variable, learning_rate)

    def _apply_weight_decay(self, variables: Any) -> None:
        if self.weight_decay is None or self.encoder_lr_mult == 1.0:
            return super()._apply_weight_decay(variables)
        # Keras' decoupled decay (variable -= variable * wd * lr), with each variable's lr.
        import tensorflow as tf  # the zoo runs on the TensorFlow backend

        def apply(distribution: Any, variables: Any) -> None:
            for variable in variables:
                if not self._use_weight_decay(variable):
                    continue
                mult = self._lr_mult(variable)

                def decay(var: Any, mult: float = mult) -> None:
                    lr = tf.cast(self.learning_rate, var.dtype) * mult
                    var.assign_sub(var * tf.cast(self.weight_decay, var.dtype) * lr)

                value = variable.value if isinstance(variable, keras.Variable) else variable
                distribution.extended.update(value, decay, group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(
            apply, self._distribution_strategy, variables
        )
        return None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "encoder_lr_mult": self.encoder_lr_mult}


def _handle(variable: Any) -> Any:
    return variable.value.handle if isinstance(variable, keras.Variable) else variable.handle


class _WarmedUpEMA:
    """Mixin: the weights' moving average uses ``min(ema_momentum, (1 + t) / (10 + t))``."""

    def __init__(self, *args: Any, ema_warmup: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ema_warmup = bool(ema_warmup)

    def _update_model_variables_moving_average(self, trainable_variables: Any) -> None:
        if not (self.use_ema and self.ema_warmup):
            return super()._update_model_variables_moving_average(trainable_variables)
        ops = keras.ops
        # `iterations` counts the steps before this one: 0 copies the weights.
        step = ops.cast(self.iterations, "float32")
        momentum = ops.minimum(self.ema_momentum, (1.0 + step) / (10.0 + step))
        momentum = momentum * ops.cast(ops.not_equal(self.iterations, 0), "float32")
        for variable, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is None:
                continue
            m = ops.cast(momentum, variable.dtype)
            average.assign(m * average + (1.0 - m) * variable)
        return None

    def finalize_variable_values(self, var_list: Any) -> None:
        # Keras' fit ends by overwriting the weights with their average. The zoo trains in
        # several fit calls (resume, budget segments) that must go on from the raw weights; its
        # loop swaps the average in where it is used (zoo.training.averaging).
        return None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "ema_warmup": self.ema_warmup}


class _FusedAdamUpdate:
    """Mixin: `update_step` on `ResourceApplyAdam` where it is exact, Keras' path elsewhere."""

    def _fusable(self, gradient: Any, variable: Any) -> bool:
        import tensorflow as tf  # the fused path exists only on the TensorFlow backend

        return (
            keras.backend.backend() == "tensorflow"
            and not self.amsgrad
            # One replica: under a multi-replica strategy the slots are mirrored and Keras'
            # assign_* ops pick each replica's copy; raw handles would not.
            and not tf.distribute.has_strategy()
            and isinstance(gradient, tf.Tensor)
            and keras.backend.standardize_dtype(variable.dtype) == "float32"
        )

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> Any:
        if not self._fusable(gradient, variable):
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1 = tf.cast(self.beta_1, tf.float32)
        beta_2 = tf.cast(self.beta_2, tf.float32)
        return tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, tf.float32),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, tf.float32),
            grad=tf.cast(gradient, tf.float32),
        )


@keras.saving.register_keras_serializable(package="zoo")
class Adam(_EncoderLRMultiplier, _WarmedUpEMA, _FusedAdamUpdate, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with the update in one fused TensorFlow kernel per variable.

    Same arguments and results as Keras' Adam (see this module's docstring for why), plus
    ``encoder_lr_mult`` (the encoder's learning rate is ``learning_rate * encoder_lr_mult``).
    Falls back to Keras' update for `amsgrad=True`, sparse gradients, non-float32 variables
    and under a multi-replica `tf.distribute` strategy.

    Example:

    ```python
    opt = zoo.optimizers.Adam(learning_rate=1e-3)
    ```

    Reference:
        Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    """


@keras.saving.register_keras_serializable(package="zoo")
class AdamW(_EncoderLRMultiplier, _WarmedUpEMA, _FusedAdamUpdate, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with the Adam update in one fused TensorFlow kernel.

    Keras applies the decoupled weight decay before `update_step`, so only the Adam part is
    fused; the fallbacks are those of `Adam`. ``encoder_lr_mult`` scales the encoder's
    learning rate and, with it, its weight decay.

    Example:

    ```python
    opt = zoo.optimizers.AdamW(learning_rate=1e-3, weight_decay=1e-4)
    ```

    Reference:
        Loshchilov and Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """


@keras.saving.register_keras_serializable(package="zoo")
class SGD(_EncoderLRMultiplier, _WarmedUpEMA, keras.optimizers.SGD):
    """`keras.optimizers.SGD` with ``encoder_lr_mult`` (the encoder's learning rate is
    ``learning_rate * encoder_lr_mult``); otherwise Keras' SGD.

    Example:

    ```python
    opt = zoo.optimizers.SGD(learning_rate=0.01, momentum=0.9, encoder_lr_mult=0.1)
    ```
    """
