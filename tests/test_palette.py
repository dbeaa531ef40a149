"""One palette for the report and predict overlays."""

import numpy as np

from segbench.palette import class_palette


def test_declared_colours_win_and_the_rest_are_distinct_and_stable():
    classes = [
        {"id": 0, "name": "a", "color": [1, 2, 3]},
        {"id": 1, "name": "b"},
        {"id": 2, "name": "c", "color": None},
    ]
    pal = class_palette(classes)
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[0].tolist() == [1, 2, 3]
    assert pal[1].tolist() != pal[2].tolist()
    np.testing.assert_array_equal(class_palette(classes), pal)  # same colours every call (no randomness)


def test_report_and_predict_use_the_same_palette():
    from segbench import predict
    from segbench.report import context

    assert predict.class_palette is context.class_palette is class_palette
