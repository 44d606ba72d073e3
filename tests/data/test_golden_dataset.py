"""Golden-set discovery, validation (every problem at once, with file names) and decoding rules."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pytest_coreml_quality.dataset import Dataset
from pytest_coreml_quality.errors import DatasetError


def _masks_dir(root: Path) -> Path:
    (root / "masks").mkdir(parents=True, exist_ok=True)
    return root / "masks"


def _photo(path: Path, size: tuple[int, int] = (24, 16), exif_orientation: int | None = None) -> Path:
    """A photo with a red block in its stored top-left corner."""
    arr = np.full((size[1], size[0], 3), 40, dtype=np.uint8)
    arr[: size[1] // 2, : size[0] // 2] = (250, 10, 10)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr, "RGB")
    if exif_orientation is None:
        im.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        im.save(path, exif=exif.tobytes())
    return path


def _mask(path: Path, size: tuple[int, int] = (24, 16), value: int = 255, mode: str = "L") -> Path:
    arr = np.zeros((size[1], size[0]), dtype=np.uint8)
    arr[: size[1] // 2] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "L").convert(mode).save(path)
    return path


def _pair(root: Path, stem: str, image_ext: str = ".jpg", mask_ext: str = ".png") -> None:
    _photo(root / "images" / f"{stem}{image_ext}")
    _mask(root / "masks" / f"{stem}{mask_ext}")


def _problems(path: Path) -> list[str]:
    with pytest.raises(DatasetError) as info:
        Dataset.open(path)
    return info.value.problems  # type: ignore[attr-defined]


# --- discovery --------------------------------------------------------------------------


def test_pairs_by_stem_with_mixed_case_extensions(tmp_path: Path) -> None:
    _pair(tmp_path, "b_second", ".JPG", ".PNG")
    _pair(tmp_path, "a_first", ".jpeg", ".tiff")
    _pair(tmp_path, "c_third", ".webp", ".bmp")
    (tmp_path / "images" / "notes.txt").write_text("ignored")
    (tmp_path / "masks" / ".DS_Store").write_bytes(b"\0")
    ds = Dataset.open(tmp_path)
    assert ds.ids == ("a_first", "b_second", "c_third")
    for sample in ds:
        assert sample.entry.image_path.stem == sample.entry.mask_path.stem == sample.id


def test_a_missing_mask_does_not_shift_the_other_pairs(tmp_path: Path) -> None:
    # The article paired sorted lists by position: one missing mask shifted every later pair.
    for stem in ("a", "b", "c"):
        _pair(tmp_path, stem)
    (tmp_path / "masks" / "a.png").unlink()
    problems = _problems(tmp_path)
    assert len(problems) == 1
    assert "a.jpg" in problems[0] and "image without mask" in problems[0]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    _pair(tmp_path, "good")
    _photo(tmp_path / "images" / "lonely_image.jpg")
    _mask(tmp_path / "masks" / "lonely_mask.png")
    _photo(tmp_path / "images" / "twin.jpg")
    _photo(tmp_path / "images" / "twin.png")
    _mask(tmp_path / "masks" / "twin.png")
    with pytest.raises(DatasetError) as info:
        Dataset.open(tmp_path)
    text = str(info.value)
    assert "3 problems" in text
    assert "lonely_image.jpg: image without mask" in text
    assert "lonely_mask.png: mask without image" in text
    assert "twin.jpg" in text and "twin.png" in text and "share the stem 'twin'" in text


def test_pairing_and_decoding_problems_are_reported_together(tmp_path: Path) -> None:
    """A missing mask must not hide a truncated photo or a wrong-size mask until the next run."""
    _pair(tmp_path, "good")
    _photo(tmp_path / "images" / "lonely.jpg")
    _pair(tmp_path, "cut")
    photo = tmp_path / "images" / "cut.jpg"
    photo.write_bytes(photo.read_bytes()[:200])
    _photo(tmp_path / "images" / "small.jpg")
    _mask(tmp_path / "masks" / "small.png", size=(5, 4))
    problems = _problems(tmp_path)
    assert len(problems) == 3
    assert any("lonely.jpg" in p and "image without mask" in p for p in problems)
    assert any("cut.jpg" in p for p in problems)
    assert any("small.png" in p and "differs from its image" in p for p in problems)


def test_duplicate_mask_stems(tmp_path: Path) -> None:
    _pair(tmp_path, "cat")
    _mask(tmp_path / "masks" / "cat.jpg")
    (problem,) = _problems(tmp_path)
    assert "masks/cat.jpg" in problem and "masks/cat.png" in problem and "mask files share the stem" in problem


def test_unreadable_and_truncated_files(tmp_path: Path) -> None:
    _pair(tmp_path, "fine")
    _pair(tmp_path, "garbage")
    (tmp_path / "images" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    _pair(tmp_path, "cut", ".jpg", ".png")
    big = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    Image.fromarray(big, "L").save(tmp_path / "masks" / "cut.png")
    data = (tmp_path / "masks" / "cut.png").read_bytes()
    (tmp_path / "masks" / "cut.png").write_bytes(data[: len(data) // 2])
    problems = _problems(tmp_path)
    assert len(problems) == 2
    assert any("images/garbage.jpg: cannot be decoded" in p for p in problems)
    assert any("masks/cut.png: cannot be decoded" in p for p in problems)


def test_file_names_that_are_not_utf8_are_named(tmp_path: Path) -> None:
    # They reached the dataset's content hash as lone surrogates: an INTERNALERROR at start.
    _pair(tmp_path, "fine")
    _photo(tmp_path / "images" / "x.jpg").rename(os.fsdecode(os.fsencode(tmp_path / "images") + b"/sc\xe9ne.jpg"))
    _mask(tmp_path / "masks" / "x.png").rename(os.fsdecode(os.fsencode(tmp_path / "masks") + b"/sc\xe9ne.png"))
    problems = _problems(tmp_path)
    assert len(problems) == 2
    assert all("sc\\xe9ne" in p and "not valid UTF-8" in p for p in problems)
    assert problems[0].encode("utf-8")  # printable, as a message must be


def test_partner_of_an_unread_type_is_named(tmp_path: Path) -> None:
    _pair(tmp_path, "a")
    _mask(tmp_path / "masks" / "b.png")
    Image.new("RGB", (24, 16)).save(tmp_path / "images" / "b.gif")
    (problem,) = _problems(tmp_path)
    assert "b.png: mask without image" in problem
    assert "b.gif is there but not read" in problem and "png" in problem


@pytest.mark.parametrize("mode", ["L", "I;16"])
def test_masks_holding_only_0_and_1_are_refused(tmp_path: Path, mode: str) -> None:
    # Read as 0..255 such a mask binarises to empty: IoU 0 for a perfect model, silently.
    _pair(tmp_path, "a")
    _photo(tmp_path / "images" / "b.jpg")
    arr = np.zeros((16, 24), dtype=np.uint8 if mode == "L" else np.uint16)
    arr[:8] = 1
    Image.fromarray(arr).save(tmp_path / "masks" / "b.png")
    (problem,) = _problems(tmp_path)
    assert "b.png" in problem and "only the values 0 and 1" in problem and "rescale the mask" in problem


def test_mask_size_mismatch_names_both_files(tmp_path: Path) -> None:
    _photo(tmp_path / "images" / "dog.jpg", size=(24, 16))
    _mask(tmp_path / "masks" / "dog.png", size=(12, 8))
    (problem,) = _problems(tmp_path)
    assert "masks/dog.png" in problem and "images/dog.jpg" in problem
    assert "12x8" in problem and "24x16" in problem


def test_empty_set(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (problem,) = _problems(tmp_path)
    assert str(tmp_path) in problem and "empty" in problem


def test_images_without_masks_directory_is_an_image_only_set(tmp_path: Path) -> None:
    _photo(tmp_path / "images" / "a.jpg")
    _photo(tmp_path / "images" / "b.png")
    ds = Dataset.open(tmp_path)
    assert ds.ids == ("a", "b") and not ds.has_truth
    sample = ds.sample("a")
    assert sample.mask is None and sample.mask_hash == "" and sample.size == (24, 16)
    assert ds.entries[0].mask_path is None and ds.outside_paths == ()


def test_a_set_with_masks_is_not_image_only(tmp_path: Path) -> None:
    _pair(tmp_path, "a")
    assert Dataset.open(tmp_path).has_truth


def test_missing_images_directory(tmp_path: Path) -> None:
    _mask(tmp_path / "masks" / "a.png")
    (problem,) = _problems(tmp_path)
    assert f"{tmp_path}/images: missing directory" in problem


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        Dataset.open(tmp_path / "nope")


# --- manifests --------------------------------------------------------------------------


def _flat_layout(root: Path) -> None:
    _photo(root / "photos" / "one.jpg")
    _mask(root / "gt" / "one_mask.png")
    _photo(root / "photos" / "two.png")
    _mask(root / "gt" / "two_mask.png")


def test_csv_manifest_with_weights_and_tags(tmp_path: Path) -> None:
    _flat_layout(tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("image,mask,weight,tags\nphotos/one.jpg,gt/one_mask.png,2,indoor;hair\nphotos/two.png,gt/two_mask.png,,\n")
    for source in (manifest, tmp_path):  # the file, or the directory holding it
        ds = Dataset.open(source)
        assert ds.ids == ("photos/one", "photos/two")
        assert [e.weight for e in ds.entries] == [2.0, 1.0]
        assert ds.entries[0].tags == ("indoor", "hair")
        assert ds.entries[1].mask_path == tmp_path / "gt" / "two_mask.png"


def test_json_manifest(tmp_path: Path) -> None:
    _flat_layout(tmp_path)
    manifest = tmp_path / "set.json"
    rows = [{"image": "photos/one.jpg", "mask": "gt/one_mask.png", "tags": ["a"]}, {"image": "photos/two.png", "mask": "gt/two_mask.png"}]
    manifest.write_text(json.dumps({"samples": rows}))
    ds = Dataset.open(manifest)
    assert len(ds) == 2 and ds.entries[0].tags == ("a",)


def test_bad_manifest_fields_are_all_listed(tmp_path: Path) -> None:
    _flat_layout(tmp_path)
    manifest = tmp_path / "manifest.json"
    rows = [
        {"image": "photos/one.jpg", "mask": "gt/one_mask.png", "weight": "heavy"},
        {"image": "photos/two.png"},
        {"image": "photos/missing.jpg", "mask": "gt/two_mask.png"},
        {"image": "photos/one.jpg", "mask": "gt/one_mask.png", "weight": -1},
        {"image": "photos/two.png", "mask": "gt/two_mask.png", "tags": 5},
        "not an object",
    ]
    manifest.write_text(json.dumps(rows))
    text = "\n".join(_problems(manifest))
    assert f"{manifest}: entry 0: field 'weight': 'heavy' is not a number" in text
    assert "entry 1: field(s) 'mask' missing or empty" in text
    assert "entry 2: field 'image':" in text and "photos/missing.jpg does not exist" in text
    assert "entry 3: field 'weight': -1" in text and "already listed at" in text
    assert "entry 4: field 'tags': 5" in text
    assert "entry 5: expected an object" in text


def test_csv_manifest_without_mask_column_is_image_only(tmp_path: Path) -> None:
    _flat_layout(tmp_path)
    manifest = tmp_path / "list.csv"
    manifest.write_text("image,weight\nphotos/one.jpg,2\nphotos/two.png,\n")
    ds = Dataset.open(manifest)
    assert ds.ids == ("photos/one", "photos/two") and not ds.has_truth
    assert [e.weight for e in ds.entries] == [2.0, 1.0] and ds.sample("photos/two").mask is None


def test_json_manifest_without_masks_is_image_only(tmp_path: Path) -> None:
    _flat_layout(tmp_path)
    manifest = tmp_path / "set.json"
    manifest.write_text(json.dumps([{"image": "photos/one.jpg"}, {"image": "photos/two.png"}]))
    assert not Dataset.open(manifest).has_truth


def test_csv_manifest_without_image_column(tmp_path: Path) -> None:
    manifest = tmp_path / "list.csv"
    manifest.write_text("mask,weight\na.png,1\n")
    (problem,) = _problems(manifest)
    assert str(manifest) in problem and "lacks column(s) image" in problem


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [("m.json", "{not json", "invalid JSON"), ("m.json", '{"a": 1}', "expected a list"), ("m.yaml", "x: 1", "unsupported manifest")],
)
def test_unusable_manifests(tmp_path: Path, name: str, content: str, message: str) -> None:
    manifest = tmp_path / name
    manifest.write_text(content)
    (problem,) = _problems(manifest)
    assert str(manifest) in problem and message in problem


def test_csv_row_numbers_in_messages(tmp_path: Path) -> None:
    _flat_layout(tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("image,mask\nphotos/one.jpg,gt/one_mask.png\nphotos/two.png,gt/nope.png\n")
    (problem,) = _problems(manifest)
    assert f"{manifest}:3: field 'mask'" in problem and "gt/nope.png does not exist" in problem


# --- decoding rules ----------------------------------------------------------------------


def test_exif_orientation_is_applied_to_images_and_masks(tmp_path: Path) -> None:
    # Stored 24x16 with orientation 6 (rotate 90 degrees clockwise to display): 16x24 upright.
    _photo(tmp_path / "images" / "phone.jpg", size=(24, 16), exif_orientation=6)
    _mask(tmp_path / "masks" / "phone.png", size=(16, 24))
    # A mask that carries the same orientation tag is rotated too.
    _photo(tmp_path / "images" / "tagged.jpg", size=(24, 16), exif_orientation=6)
    mask = np.zeros((16, 24), dtype=np.uint8)
    mask[:, :12] = 255  # stored left half -> displayed top half
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(mask, "L").save(tmp_path / "masks" / "tagged.png", exif=exif.tobytes())
    ds = Dataset.open(tmp_path)
    phone = ds.sample("phone")
    assert phone.size == (16, 24)
    rgb = np.asarray(phone.image)
    # The stored top-left red block is displayed top-right after a clockwise turn.
    assert rgb[2, 13, 0] > 200 and rgb[2, 2, 0] < 100
    tagged = ds.sample("tagged").mask
    assert tagged.shape == (24, 16)
    assert tagged[:12].min() == 1.0 and tagged[12:].max() == 0.0


def test_sixteen_bit_masks(tmp_path: Path) -> None:
    _photo(tmp_path / "images" / "deep.png", size=(4, 2))
    _masks_dir(tmp_path)
    arr = np.array([[0, 65535, 32768, 16384], [65535, 0, 1, 49152]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "masks" / "deep.png")
    with Image.open(tmp_path / "masks" / "deep.png") as im:
        assert im.mode.startswith("I")  # really a 16-bit file
    mask = Dataset.open(tmp_path).sample("deep").mask
    assert mask.dtype == np.float32
    np.testing.assert_allclose(mask, arr / 65535.0, atol=1e-7)


def test_rgba_masks_use_alpha_unless_opaque(tmp_path: Path) -> None:
    _photo(tmp_path / "images" / "cutout.png", size=(2, 1))
    _photo(tmp_path / "images" / "opaque.png", size=(2, 1))
    _masks_dir(tmp_path)
    # Cut-out: colour is irrelevant (white everywhere), alpha carries the mask.
    Image.fromarray(np.array([[[255, 255, 255, 0], [255, 255, 255, 128]]], dtype=np.uint8), "RGBA").save(
        tmp_path / "masks" / "cutout.png"
    )
    # Opaque RGBA: the luminance carries the mask.
    Image.fromarray(np.array([[[0, 0, 0, 255], [255, 255, 255, 255]]], dtype=np.uint8), "RGBA").save(
        tmp_path / "masks" / "opaque.png"
    )
    ds = Dataset.open(tmp_path)
    np.testing.assert_allclose(ds.sample("cutout").mask, [[0.0, 128 / 255]], atol=1e-7)
    np.testing.assert_allclose(ds.sample("opaque").mask, [[0.0, 1.0]], atol=1e-7)


def test_rgb_bilevel_and_palette_masks(tmp_path: Path) -> None:
    for stem in ("rgb", "bilevel", "palette"):
        _photo(tmp_path / "images" / f"{stem}.png", size=(2, 1))
    _masks_dir(tmp_path)
    Image.fromarray(np.array([[[255, 0, 0], [255, 255, 255]]], dtype=np.uint8), "RGB").save(tmp_path / "masks" / "rgb.png")
    Image.fromarray(np.array([[0, 255]], dtype=np.uint8), "L").convert("1").save(tmp_path / "masks" / "bilevel.png")
    Image.fromarray(np.array([[0, 255]], dtype=np.uint8), "L").convert("P").save(tmp_path / "masks" / "palette.png")
    ds = Dataset.open(tmp_path)
    np.testing.assert_allclose(ds.sample("rgb").mask, [[76 / 255, 1.0]], atol=1e-7)  # ITU-R 601 luma of red
    np.testing.assert_array_equal(ds.sample("bilevel").mask, [[0.0, 1.0]])
    np.testing.assert_allclose(ds.sample("palette").mask, [[0.0, 1.0]], atol=1e-7)


def test_float_mask_out_of_range(tmp_path: Path) -> None:
    _photo(tmp_path / "images" / "hdr.png", size=(2, 1))
    _masks_dir(tmp_path)
    Image.fromarray(np.array([[0.0, 3.0]], dtype=np.float32), "F").save(tmp_path / "masks" / "hdr.tif")
    (problem,) = _problems(tmp_path)
    assert "masks/hdr.tif" in problem and "outside [0, 1]" in problem


def test_samples_are_decoded_once_and_hashed_by_pixels(tmp_path: Path) -> None:
    _pair(tmp_path, "a")
    ds = Dataset.open(tmp_path)
    first = ds.sample("a")
    assert ds.sample("a") is first and next(iter(ds)) is first
    # A copy elsewhere has the same pixel hash; other pixels change it.
    copy = tmp_path / "copy"
    _pair(copy, "a")
    assert Dataset.open(copy).sample("a").image_hash == first.image_hash
    assert Dataset.open(copy).content_hash == ds.content_hash
    _photo(copy / "images" / "a.jpg", size=(24, 18))
    _mask(copy / "masks" / "a.png", size=(24, 18))
    assert Dataset.open(copy).sample("a").image_hash != first.image_hash


def test_golden_fixture_set_is_valid(golden_set: Dataset) -> None:
    assert len(golden_set) >= 24
    for sample in golden_set:
        assert sample.mask.shape == (sample.size[1], sample.size[0])
        assert 0.0 <= sample.mask.min() and sample.mask.max() <= 1.0


@pytest.mark.parametrize("where", ["images", "masks"])
def test_pictures_in_a_sub_folder_are_named_not_skipped(tmp_path: Path, where: str) -> None:
    # Sub-folders are not read: their photos would otherwise drop out of every figure unseen.
    _pair(tmp_path, "a")
    nested = tmp_path / where / "batch2" / "deeper"
    nested.mkdir(parents=True)
    (_photo if where == "images" else _mask)(nested / "b.png")
    (problem,) = _problems(tmp_path)
    assert f"{where}/batch2: a folder of pictures inside {where}/" in problem and "manifest" in problem


def test_hidden_empty_and_macos_folders_are_ignored(tmp_path: Path) -> None:
    _pair(tmp_path, "a")
    for name in (".thumbnails", "__MACOSX", "notes"):
        (tmp_path / "images" / name).mkdir()
    _photo(tmp_path / "images" / ".thumbnails" / "a.jpg")
    _photo(tmp_path / "images" / "__MACOSX" / "a.jpg")
    (tmp_path / "images" / "notes" / "readme.txt").write_text("not a picture")
    assert [e.id for e in Dataset.open(tmp_path).entries] == ["a"]
