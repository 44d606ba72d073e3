"""Mask contracts: parsing --coreml-mask, reading layouts, and what 'auto' decides or refuses."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_coreml_quality.masks import (
    MaskError,
    MaskSpec,
    are_probabilities,
    channels_first,
    decide_auto,
    parse_mask_spec,
    read_mask,
    stretch,
)

RNG = np.random.default_rng(3)
LOGITS = RNG.normal(0, 4, (6, 5))  # one channel of logits, (H, W)
SIGMOID = 1 / (1 + np.exp(-LOGITS))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("auto", MaskSpec("auto")),
        (" PROB ", MaskSpec("prob")),
        ("logits", MaskSpec("logits")),
        ("channel:1", MaskSpec("channel", channel=1)),
        ("class:15", MaskSpec("class", classes=(15,))),
        ("class:15,3,15", MaskSpec("class", classes=(3, 15))),
    ],
)
def test_specs_parse_to_a_canonical_form(text: str, expected: MaskSpec) -> None:
    spec = parse_mask_spec(text)
    assert spec == expected
    assert parse_mask_spec(str(spec)) == spec


@pytest.mark.parametrize("text", ["", "probs!", "channel", "channel:", "channel:-1", "channel:x", "class:", "class:1,a", "logits:2"])
def test_bad_specs_name_the_option_and_the_values_it_takes(text: str) -> None:
    with pytest.raises(MaskError) as info:
        parse_mask_spec(text)
    assert "--coreml-mask" in str(info.value) and "channel:K" in str(info.value) and f"'{text}'" in str(info.value)


@pytest.mark.parametrize(
    ("shape", "layout"),
    [
        ((6, 5), "(H,W)"),
        ((1, 6, 5), "(C,H,W)"),
        ((1, 1, 6, 5), "(C,H,W)"),
        ((2, 6, 5), "(C,H,W)"),
        ((1, 2, 6, 5), "(C,H,W)"),
        ((6, 5, 2), "(H,W,C)"),
        ((6, 5, 1), "(H,W,C)"),
        ((1, 1, 1, 2, 6, 5), "(C,H,W)"),
    ],
)
def test_layouts_are_read_channels_first(shape: tuple[int, ...], layout: str) -> None:
    arr = RNG.normal(size=shape)
    chw, name = channels_first(arr)
    assert name == layout
    channels = 1 if len(shape) == 2 else (shape[-1] if layout == "(H,W,C)" else shape[-3])
    assert chw.shape == (channels, 6, 5)
    if layout == "(H,W,C)":
        np.testing.assert_array_equal(chw[-1], arr[..., -1])


def test_ambiguous_layout_is_refused() -> None:
    with pytest.raises(MaskError, match=r"shape \(4, 4, 4\): cannot tell its channel axis"):
        channels_first(np.zeros((4, 4, 4)))


def test_prob_and_logits_read_one_channel() -> None:
    np.testing.assert_allclose(read_mask(SIGMOID[None, None], MaskSpec("prob"), "m"), SIGMOID)
    np.testing.assert_allclose(read_mask(LOGITS[None], MaskSpec("logits"), "m"), SIGMOID)
    with pytest.raises(MaskError, match="not probabilities") as info:
        read_mask(LOGITS, MaskSpec("prob"), "m")
    assert "--coreml-mask=logits" in str(info.value)
    with pytest.raises(MaskError, match=r"'prob' reads one channel .*channel:K \(K in 0..1\)"):
        read_mask(np.zeros((2, 6, 5)), MaskSpec("prob"), "m")


def test_channel_of_logits_is_softmaxed_and_channel_of_probabilities_is_not() -> None:
    two_logits = np.stack([np.zeros_like(LOGITS), LOGITS])  # softmax channel 1 == sigmoid(LOGITS)
    np.testing.assert_allclose(read_mask(two_logits, MaskSpec("channel", channel=1), "m"), SIGMOID, rtol=1e-12)
    two_probs = np.stack([1 - SIGMOID, SIGMOID])
    assert are_probabilities(two_probs) and not are_probabilities(two_logits)
    # Probabilities are read as they are: a softmax over them would squash them towards 0.5.
    np.testing.assert_allclose(read_mask(two_probs, MaskSpec("channel", channel=1), "m"), SIGMOID, rtol=1e-12)
    hwc = np.moveaxis(two_logits, 0, -1)[None]  # (1, H, W, C)
    np.testing.assert_allclose(read_mask(hwc, MaskSpec("channel", channel=0), "m"), 1 - SIGMOID, rtol=1e-9)
    with pytest.raises(MaskError, match=r"has no channel 2 \(expected channel:K with K in 0..1\)"):
        read_mask(two_logits, MaskSpec("channel", channel=2), "m")


def test_class_reads_class_maps_and_argmax_of_score_maps() -> None:
    labels = np.array([[0, 15, 15], [3, 0, 15]], dtype=np.int32)
    np.testing.assert_array_equal(read_mask(labels[None, None], MaskSpec("class", classes=(15,)), "m"), labels == 15)
    np.testing.assert_array_equal(
        read_mask(labels.astype(np.float32), MaskSpec("class", classes=(3, 15)), "m"), np.isin(labels, (3, 15))
    )
    scores = RNG.normal(size=(4, 6, 5))
    np.testing.assert_array_equal(read_mask(scores, MaskSpec("class", classes=(2,)), "m"), scores.argmax(0) == 2)
    with pytest.raises(MaskError, match="not a class-index map"):
        read_mask(SIGMOID, MaskSpec("class", classes=(1,)), "m")
    with pytest.raises(MaskError, match="no class 4 among its channels"):
        read_mask(scores, MaskSpec("class", classes=(4,)), "m")


def test_auto_reads_one_channel_of_probabilities_and_two_channels() -> None:
    assert decide_auto(SIGMOID[None, None].astype(np.float32), "m") == (MaskSpec("prob"), None)
    two_logits = np.stack([np.zeros_like(LOGITS), LOGITS])[None]
    assert decide_auto(two_logits, "m") == (MaskSpec("channel", channel=1), "channel 1 of 2, softmax")
    two_probs = np.stack([1 - SIGMOID, SIGMOID])
    assert decide_auto(two_probs, "m") == (MaskSpec("channel", channel=1), "channel 1 of 2, already probabilities")


def test_auto_refuses_one_channel_far_outside_0_1_and_suggests_logits() -> None:
    with pytest.raises(MaskError) as info:
        decide_auto(LOGITS[None, None].astype(np.float32), "out", where=" on the first image (a)")
    text = str(info.value)
    lo, hi = LOGITS.astype(np.float32).min(), LOGITS.astype(np.float32).max()
    assert f"output 'out' on the first image (a): shape (1, 1, 6, 5) (C,H,W), dtype float32, values in [{lo:.4g}, {hi:.4g}]" in text
    assert "--coreml-mask=logits" in text


def test_auto_refuses_a_class_map_and_lists_the_class_ids() -> None:
    labels = np.array([[[0, 15], [15, 7]]], dtype=np.int32)
    with pytest.raises(MaskError) as info:
        decide_auto(labels, "semanticPredictions")
    text = str(info.value)
    assert "shape (1, 2, 2) (C,H,W), dtype int32, values in [0, 15]" in text
    assert "class ids seen: 0, 7, 15" in text and "--coreml-mask=class:7" in text and "class:7,15" in text
    # Floats holding whole numbers above 1 are class ids too.
    with pytest.raises(MaskError, match="class ids seen: 0, 7, 15"):
        decide_auto(labels.astype(np.float32), "m")


def test_auto_refuses_more_than_two_channels_and_lists_what_works() -> None:
    with pytest.raises(MaskError) as info:
        decide_auto(np.zeros((1, 21, 32, 24), dtype=np.float32), "scores")
    text = str(info.value)
    assert "shape (1, 21, 32, 24) (C,H,W), dtype float32, values in [0, 0]: 21 channels" in text
    assert "--coreml-mask=channel:K with K in 0..20" in text and "--coreml-mask=class:K / class:K1,K2" in text


def test_stretch_spans_0_1_and_leaves_constant_masks() -> None:
    out = stretch(np.array([[0.2, 0.4], [0.6, 0.3]]))
    np.testing.assert_allclose(out, [[0, 0.5], [1, 0.25]], atol=1e-7)
    np.testing.assert_array_equal(stretch(np.full((2, 2), 0.3)), np.full((2, 2), 0.3, dtype=np.float32))
