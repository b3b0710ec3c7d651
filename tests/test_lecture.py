"""The lecture's worked examples as exact numbers."""

import numpy as np

from cnn_cases.analysis import counts, lecture


def test_one_by_one_on_matrix_doubles_it():
    out = lecture.one_by_one_on_matrix()
    np.testing.assert_array_equal(out, 2 * lecture.LECTURE_MATRIX)
    np.testing.assert_array_equal(out[0, :3], [2, 4, 6])


def test_one_by_one_on_volume_is_dense_per_pixel():
    ex = lecture.one_by_one_on_volume()
    assert ex.input_shape == (28, 28, 192) and ex.output_shape == (28, 28, 32)
    assert ex.params == 192 * 32 + 32
    assert ex.macs == 28 * 28 * 32 * 192
    assert ex.max_abs_diff_vs_dense < 1e-4


def test_bottleneck_arithmetic():
    ex = lecture.bottleneck_example()
    assert ex.direct.macs == 120_422_400
    assert [layer.macs for layer in ex.bottleneck.layers] == [2_408_448, 10_035_200]
    assert ex.bottleneck.macs == 12_443_648
    assert ex.direct.params == 5 * 5 * 192 * 32 + 32
    assert ex.bottleneck.params == (192 * 16 + 16) + (5 * 5 * 16 * 32 + 32)
    assert 9.6 < ex.ratio < 9.7


def test_report_labels_multiply_adds():
    text = lecture.report()
    assert "120,422,400 multiply-adds" in text
    assert "2,408,448 + 10,035,200 = 12,443,648 multiply-adds" in text
    assert "parameters" in text


def test_counts_summary_shows_zero_differences():
    text = counts.summary_table()
    for name in ("lenet5 ", "vgg16 ", "resnet50 ", "resnet110 "):
        row = next(line for line in text.splitlines() if line.startswith(name))
        assert " +0 " in row
    google = next(line for line in text.splitlines() if line.startswith("googlenet "))
    assert "in range" in google
    assert "28x28x6" in counts.layer_table("lenet5")
