"""`zoo.build_context.shapes_only()`: variables with shapes and no values, nothing drawn later."""

import keras
import numpy as np

from zoo.build_context import shapes_only


def counting_initializer(calls: list):
    def initializer(shape, dtype=None):
        calls.append(tuple(shape))
        return keras.ops.zeros(shape, dtype=dtype)

    return initializer


def dense(units: int, calls: list, input_dim: int) -> keras.layers.Dense:
    layer = keras.layers.Dense(units, kernel_initializer=counting_initializer(calls))
    layer.build((None, input_dim))
    return layer


def test_shapes_only_counts_without_running_any_initializer():
    calls = []
    with shapes_only():
        layer = dense(3, calls, input_dim=5)
        assert layer.count_params() == 5 * 3 + 3
        assert tuple(layer.kernel.shape) == (5, 3)
    # Nor later: neither another scope's exit nor eager code draws the skipped variables.
    with keras.StatelessScope():
        pass
    keras.layers.Dense(1).build((None, 1))
    assert calls == []


def test_plain_stateless_scope_draws_its_variables_at_exit():
    # Why shapes_only exists: keras.StatelessScope only defers the initializers.
    calls = []
    with keras.StatelessScope():
        dense(3, calls, input_dim=5)
        assert calls == []
    assert calls == [(5, 3)]


def test_an_outer_scopes_variables_are_still_drawn_at_its_exit():
    outer_calls, inner_calls = [], []
    with keras.StatelessScope():
        outer = dense(2, outer_calls, input_dim=4)
        with shapes_only():
            dense(3, inner_calls, input_dim=5)
    assert outer_calls == [(4, 2)] and inner_calls == []
    np.testing.assert_array_equal(np.asarray(outer.kernel), np.zeros((4, 2)))
