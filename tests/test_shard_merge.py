"""Sharding across CI jobs (--coreml-shard=I/N) and merging the partial reports (--coreml-merge):
the merge gives exactly what one job gives, on the shipped fixture model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_coreml_quality.dataset import Dataset
from pytest_coreml_quality.errors import DatasetError, SettingError
from pytest_coreml_quality.settings import resolve

from .conftest import FIXTURES

MODEL = FIXTURES / "models" / "TinySeg.mlmodel"
GOLDEN = FIXTURES / "golden"
IMAGES = len(list((GOLDEN / "images").iterdir()))
# Thresholds that pass for some variants and fail for others, so verdicts are compared too.
BOUNDS = ("--coreml-max-drift=0.0005", "--coreml-min-iou=0.5", "--coreml-max-size-mb=100")

pytestmark = pytest.mark.usefixtures("plain_run_environment")


def measure(pytester: pytest.Pytester, cache: Path, *args: str, bounds: tuple[str, ...] = BOUNDS) -> pytest.RunResult:
    return pytester.runpytest(
        f"--coreml-model={MODEL}", f"--coreml-dataset={GOLDEN}", "--coreml-variants=q8,q4", f"--coreml-cache-dir={cache}",
        "--coreml-load-rounds=1", "-p", "no:randomly", "-p", "no:cacheprovider", *bounds, *args,
    )


def merge(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:randomly", "-p", "no:cacheprovider", *args)


def table(result: pytest.RunResult) -> list[str]:
    """The summary table and recommendation: from the section title to the first note."""
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "Core ML model quality" in line)
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("coreml-quality:"))
    return lines[start:end]


TIMINGS = {"build_s", "cold_s", "warm_s", "predict_ms", "cold_load_s", "warm_load_s", "load_speedup", "timer", "load_timer"}
PATHS = {"path", "dataset"}


def comparable(node: Any) -> Any:
    """A report without its timings and paths (they differ between any two runs)."""
    if isinstance(node, dict):
        return {k: comparable(v) for k, v in node.items() if k not in TIMINGS | PATHS}
    if isinstance(node, list):
        return [comparable(v) for v in node]
    return node


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}.{k}: only in one" for k in set(a) ^ set(b)]
        for k in set(a) & set(b):
            out += differences(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for k, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{k}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def test_shards_merged_equal_one_job(pytester: pytest.Pytester, shared_cache: Path) -> None:
    one, junit_one = pytester.path / "one.json", pytester.path / "one.xml"
    single = measure(pytester, shared_cache, "-k", "not load", f"--coreml-report-json={one}", f"--junitxml={junit_one}")
    for count in (2, 3):
        _check_merge_equals_single(pytester, shared_cache, count, single, one, junit_one)


def _check_merge_equals_single(
    pytester: pytest.Pytester, cache: Path, count: int, single: pytest.RunResult, one: Path, junit_one: Path
) -> None:
    shared_cache = cache
    shards = pytester.path / f"shards{count}"
    for index in range(1, count + 1):
        part = measure(pytester, shared_cache, "-k", "not load", f"--coreml-shard={index}/{count}", f"--coreml-report-json={shards}/s{index}.json")
        # A shard judges nothing: its figures cover part of the set.
        part.assert_outcomes(passed=6)
        data = json.loads((shards / f"s{index}.json").read_text())
        assert data["shard"]["index"] == index and data["shard"]["count"] == count
        assert len(data["shard"]["images"]) in (IMAGES // count, IMAGES // count + 1)
    merged_json, junit_merged = pytester.path / f"merged{count}.json", pytester.path / f"merged{count}.xml"
    merged = merge(pytester, "-k", "not load", f"--coreml-merge={shards}", f"--coreml-report-json={merged_json}", f"--junitxml={junit_merged}")
    # The same items pass and fail, with the same messages.
    assert merged.parseoutcomes() == single.parseoutcomes()
    assert single.parseoutcomes().get("failed", 0) > 0 and single.parseoutcomes().get("passed", 0) > 0
    assert [line for line in merged.stdout.lines if "threshold(s) broken" in line or " = " in line and "bound" in line] == [
        line for line in single.stdout.lines if "threshold(s) broken" in line or " = " in line and "bound" in line
    ]
    assert table(merged) == table(single)
    found = differences(comparable(json.loads(merged_json.read_text())), comparable(json.loads(one.read_text())))
    assert not found, found[:10]
    assert _properties(junit_merged) == _properties(junit_one) and _properties(junit_one)


@pytest.mark.parametrize("truth", [True, False], ids=["weighted-manifest", "image-only"])
def test_weighted_manifest_and_image_only_sets_merge_exactly(pytester: pytest.Pytester, shared_cache: Path, truth: bool) -> None:
    """Weights and the manifest's own row order (not the sorted order shards use) survive the merge."""
    images = sorted((GOLDEN / "images").iterdir())[:7]
    rows = ["image,mask,weight" if truth else "image,weight"]
    for k, image in enumerate(reversed(images)):  # rows in reverse name order
        mask = next((GOLDEN / "masks").glob(image.stem + ".*"))
        rows.append(f"{image},{mask},{0.5 + k}" if truth else f"{image},{0.5 + k}")
    manifest = pytester.path / "golden.csv"
    manifest.write_text("\n".join(rows) + "\n")
    args = ("-k", "quality", f"--coreml-dataset={manifest}")
    bounds = BOUNDS if truth else tuple(b for b in BOUNDS if "iou" not in b)
    one = pytester.path / "one.json"
    single = measure(pytester, shared_cache, *args, f"--coreml-report-json={one}", bounds=bounds)
    for index in (1, 2):
        part = f"--coreml-report-json={pytester.path}/s/{index}.json"
        measure(pytester, shared_cache, *args, f"--coreml-shard={index}/2", part, bounds=bounds).assert_outcomes(passed=3)
    out = pytester.path / "merged.json"
    merged = merge(pytester, "-k", "quality", f"--coreml-merge={pytester.path}/s", f"--coreml-report-json={out}")
    assert merged.parseoutcomes() == single.parseoutcomes()
    assert table(merged) == table(single)
    found = differences(comparable(json.loads(out.read_text())), comparable(json.loads(one.read_text())))
    assert not found, found[:10]
    q4 = json.loads(out.read_text())["models"]["TinySeg.mlmodel"]["variants"]["q4"]
    assert bool(q4["metrics"]) is truth and q4["drift"]


def _properties(junit: Path) -> dict[str, list[tuple[str, str]]]:
    import xml.etree.ElementTree as ET

    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        props = [(p.get("name"), p.get("value")) for p in case.iter("property") if p.get("name") not in {f"coreml.{t}" for t in TIMINGS}]
        out[case.get("name")] = props
    return out


def test_shard_one_measures_load_times_and_the_merge_judges_them(pytester: pytest.Pytester, shared_cache: Path) -> None:
    shards = pytester.path / "shards"
    first = measure(pytester, shared_cache, "-k", "q8", "--coreml-shard=1/2", f"--coreml-report-json={shards}/a.json")
    first.assert_outcomes(passed=4)
    second = measure(pytester, shared_cache, "-k", "q8", "-rs", "--coreml-shard=2/2", f"--coreml-report-json={shards}/b.json")
    second.assert_outcomes(passed=2, skipped=2)
    second.stdout.fnmatch_lines(["*load times are measured by shard 1/2 only (this is shard 2/2)*"])
    load = json.loads((shards / "a.json").read_text())["models"]["TinySeg.mlmodel"]["variants"]["q8"]["load"]
    out = pytester.path / "merged.json"
    merged = merge(pytester, "-k", "q8", f"--coreml-merge={shards}/a.json,{shards}/b.json", "--coreml-max-cold-load-s=0", f"--coreml-report-json={out}")
    # The cold bound (set on the merge run only) fails load-cold and load-warm, as in one job.
    merged.assert_outcomes(passed=2, failed=2)
    merged.stdout.fnmatch_lines(["*load-cold[[]q8[]]*", "*cold_load_s = *, bound <= 0*"])
    assert json.loads(out.read_text())["models"]["TinySeg.mlmodel"]["variants"]["q8"]["load"] == load


def test_shard_run_judges_no_threshold(pytester: pytest.Pytester, shared_cache: Path) -> None:
    out = pytester.path / "s.json"
    result = measure(pytester, shared_cache, "-k", "quality and q4", "--coreml-min-iou=1", "--coreml-shard=1/3", f"--coreml-report-json={out}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*shard 1/3: * of 28 images; partial figures, no threshold judged*"])
    data = json.loads(out.read_text())
    q4 = data["models"]["TinySeg.mlmodel"]["variants"]["q4"]
    assert q4["checks"] == [] and "recommendation" not in data
    assert set(q4["per_image"]) == {image["id"] for image in data["shard"]["images"]}
    assert set(q4["curves"][next(iter(q4["curves"]))]) == {"f", "e", "drift_f", "drift_e"}


def test_markers_are_not_judged_on_a_shard(pytester: pytest.Pytester, shared_cache: Path) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.coreml_quality(min_iou=1.0)
        def test_perfect(coreml_metrics):
            pass
        """
    )
    args = ("-k", "test_perfect and q8", "--coreml-shard=2/2", f"--coreml-report-json={pytester.path}/s.json")
    measure(pytester, shared_cache, *args).assert_outcomes(passed=1)
    # The same marker in a single job fails: it is the shard that spares it.
    measure(pytester, shared_cache, "-k", "test_perfect and q8").assert_outcomes(failed=1)


def _four_images_one_broken(tmp_path: Path) -> tuple[Path, Path]:
    """A golden set of four pairs whose second image (by name: shard 2 of 2) is not an image."""
    golden = tmp_path / "golden"
    for kind in ("images", "masks"):
        (golden / kind).mkdir(parents=True)
        for f in sorted((GOLDEN / kind).iterdir())[:4]:
            (golden / kind / f.name).write_bytes(f.read_bytes())
    broken = sorted((golden / "images").iterdir())[1]
    broken.write_bytes(b"not an image")
    return golden, broken


def test_a_broken_image_fails_its_shard_only(pytester: pytest.Pytester, shared_cache: Path, tmp_path: Path) -> None:
    golden, broken = _four_images_one_broken(tmp_path)
    args = ("-k", "size and base", f"--coreml-dataset={golden}")
    ok = measure(pytester, shared_cache, *args, "--coreml-shard=1/2", f"--coreml-report-json={tmp_path}/a.json")
    ok.assert_outcomes(passed=1)
    bad = measure(pytester, shared_cache, *args, "--coreml-shard=2/2", f"--coreml-report-json={tmp_path}/b.json")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines([f"*{broken.name}*"])


# --- shard assignment -----------------------------------------------------------------------------------


def test_shards_split_the_sorted_ids_round_robin() -> None:
    golden = Dataset.open(GOLDEN, validate=False)
    parts = [golden.shard(i, 3) for i in (1, 2, 3)]
    ranked = sorted(golden.ids)
    for i, part in enumerate(parts):
        assert list(part.ids) == [sid for k, sid in enumerate(ranked) if k % 3 == i]
        assert part.whole is golden and part.has_truth
    assert sorted(sid for part in parts for sid in part.ids) == ranked


def test_opening_a_shard_decodes_and_validates_its_own_images_only(tmp_path: Path) -> None:
    golden, broken = _four_images_one_broken(tmp_path)
    first = Dataset.open(golden, shard=(1, 2))
    assert first.ids == Dataset.open(golden, validate=False).shard(1, 2).ids
    assert first.whole is not None and first.whole.ids == Dataset.open(golden, validate=False).ids
    assert len(first._decoded) == len(first.ids)  # validated: every image of the shard decoded
    with pytest.raises(DatasetError, match=broken.name):
        Dataset.open(golden, shard=(2, 2))
    assert Dataset.open(golden, shard=(2, 2), validate=False).ids == ("scene_001", "scene_003")


# --- option validation ----------------------------------------------------------------------------------


def _resolve(**options: Any) -> Any:
    return resolve(lambda dest: options.get(dest), lambda ini: None, invocation_dir=Path.cwd(), rootdir=Path.cwd())


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x", "got 'x', expected I/N"),
        ("2", "got '2', expected I/N"),
        ("0/3", "shards are numbered from 1"),
        ("4/3", "there are only 3 shard(s)"),
        ("1/0", "at least one shard"),
        ("-1/3", "expected I/N"),
        ("1.5/3", "expected I/N"),
    ],
)
def test_shard_option_errors_name_the_option_and_the_form(value: str, message: str) -> None:
    with pytest.raises(SettingError) as info:
        _resolve(coreml_shard=value)
    assert "--coreml-shard / ini 'coreml_shard'" in str(info.value) and message in str(info.value)
    assert "1 <= I <= N" in str(info.value)


def test_shard_option_parses() -> None:
    assert _resolve(coreml_shard=" 2/3 ").shard == (2, 3)
    assert _resolve(coreml_shard="1/1").shard == (1, 1)


def test_merge_refuses_models_and_shards_on_its_command_line() -> None:
    with pytest.raises(SettingError, match="--coreml-merge merges shard reports: got --coreml-model too"):
        _resolve(coreml_merge="reports", coreml_model=[str(MODEL)])
    with pytest.raises(SettingError, match="got --coreml-shard too"):
        _resolve(coreml_merge="reports", coreml_shard="1/2")


def test_merge_says_which_of_its_measuring_options_it_does_not_use() -> None:
    settings = _resolve(coreml_merge="reports", coreml_backend="onnx", coreml_compute_units="CPU_ONLY", coreml_max_mae="0.1")
    notes = [n for n in settings.notes if "not used" in n]
    assert notes == [
        "--coreml-merge: --coreml-backend, --coreml-compute-units not used: the figures were measured "
        "in the shard jobs, with the settings their reports hold"
    ]
    assert not any("not used" in n for n in _resolve(coreml_merge="reports", coreml_max_mae="0.1").notes)  # thresholds apply
    assert _resolve(coreml_merge="reports", coreml_variants=["q8,q4"]).variants == ()  # no header line echoes them


def test_merge_sets_aside_models_from_the_config_file() -> None:
    settings = resolve(
        lambda dest: {"coreml_merge": "reports"}.get(dest),
        lambda ini: {"coreml_model": [str(MODEL)], "coreml_dataset": str(GOLDEN)}.get(ini),
        invocation_dir=Path.cwd(),
        rootdir=Path.cwd(),
    )
    assert settings.models == () and settings.dataset is None and not settings.active
    assert any("not opened" in note for note in settings.notes)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "expected --coreml-report-json=FILE too"),
        (("--coreml-report-json=r.json", "--coreml-save-baseline=b.json"), "baselines compare whole-set figures"),
    ],
)
def test_shard_run_needs_a_report_and_no_baseline(pytester: pytest.Pytester, shared_cache: Path, args: tuple[str, ...], message: str) -> None:
    result = measure(pytester, shared_cache, "--coreml-shard=1/2", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--coreml-shard*{message}*"])


def test_a_shard_beyond_the_images_is_refused(pytester: pytest.Pytester, shared_cache: Path) -> None:
    result = measure(pytester, shared_cache, f"--coreml-shard={IMAGES + 1}/{IMAGES + 1}", "--coreml-report-json=r.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*holds no image*expected at most {IMAGES} shards*"])


# --- merge refuses shards that do not belong together ---------------------------------------------------------


_BUILT: dict[str, Path] = {}


@pytest.fixture
def two_shards(pytester: pytest.Pytester, shared_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Partial reports of a 2-shard run (size and quality of base and q8), built once per module."""
    if str(shared_cache) in _BUILT:
        return _BUILT[str(shared_cache)]
    folder = tmp_path_factory.mktemp("two-shards")
    for index in (1, 2):
        out = folder / f"s{index}.json"
        part = pytester.runpytest(
            f"--coreml-model={MODEL}", f"--coreml-dataset={GOLDEN}", "--coreml-variants=q8", f"--coreml-cache-dir={shared_cache}",
            "-k", "not load", "-p", "no:randomly", "-p", "no:cacheprovider", f"--coreml-shard={index}/2", f"--coreml-report-json={out}",
        )
        part.assert_outcomes(passed=4)
    _BUILT[str(shared_cache)] = folder
    return folder


def _copy(two_shards: Path, into: Path, change: Any = None, which: str = "s2.json") -> Path:
    into.mkdir()
    for name in ("s1.json", "s2.json"):
        data = json.loads((two_shards / name).read_text())
        if change is not None and name == which:
            change(data)
        (into / name).write_text(json.dumps(data))
    return into


def _set(path: str, value: Any) -> Any:
    def change(data: dict) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("shard.index", 1), "*s2.json*field 'shard.index': shard 1/2 again (also *s1.json)*"),
        (_set("shard.count", 3), "*s2.json*field 'shard.count': 3 here but 2 in *s1.json (shard 1/2)*"),
        (_set("shard.settings.precision", "fp16"), "*s2.json*field 'shard.settings.precision': 'fp16' here but 'fp32'*"),
        (_set("shard.golden_set.listing", "0000"), "*s2.json*field 'shard.golden_set.listing'*"),
        (_set("models.TinySeg.mlmodel.content_hash", "abc"), None),
        (_set("versions.onnxruntime", "0.0.1"), "*s2.json*field 'versions.onnxruntime': '0.0.1' here*"),
        (_set("shard.format", 99), "*s2.json*field 'shard.format': format 99*"),
        (lambda d: d.pop("shard"), "*s2.json*field 'shard': not a shard report*"),
    ],
)
def test_merge_names_the_file_and_field_that_do_not_fit(
    pytester: pytest.Pytester, two_shards: Path, change: Any, message: str | None
) -> None:
    if message is None:  # a dotted model name: set it by hand
        def change(data: dict) -> None:
            data["models"]["TinySeg.mlmodel"]["variants"]["q8"]["content_hash"] = "abc"

        message = "*s2.json*field 'models.TinySeg.mlmodel.variants.q8': 'abc' here*"
    folder = _copy(two_shards, pytester.path / "reports", change)
    result = merge(pytester, f"--coreml-merge={folder}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_merge_names_a_damaged_curve(pytester: pytest.Pytester, two_shards: Path) -> None:
    def damage(data: dict) -> None:
        curves = data["models"]["TinySeg.mlmodel"]["variants"]["q8"]["curves"]
        curves[next(iter(curves))]["drift_f"] = "not base64!"

    folder = _copy(two_shards, pytester.path / "reports", damage)
    result = merge(pytester, f"--coreml-merge={folder}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*s2.json: field 'models.TinySeg.mlmodel.variants.q8.curves.scene_*': 'drift_f': not a packed curve*"])


def test_curves_are_packed_exactly() -> None:
    from pytest_coreml_quality.shard import pack_curve, unpack_curve

    curve = np.random.default_rng(0).random(256) / 3.0
    curve[7] = math.inf
    back = unpack_curve(pack_curve(curve))
    assert back.dtype == np.float64 and back.tobytes() == curve.tobytes()
    for junk in ("", "abc", pack_curve(curve)[:-8]):
        with pytest.raises(ValueError, match="not a packed curve"):
            unpack_curve(junk)


def test_merge_needs_every_shard_once(pytester: pytest.Pytester, two_shards: Path) -> None:
    missing = merge(pytester, f"--coreml-merge={two_shards / 's1.json'}")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(["*shard(s) 2/2 missing (given: 1/2)*"])

    def steal(data: dict) -> None:  # shard 2 claims one of shard 1's images
        first = json.loads((two_shards / "s1.json").read_text())["shard"]["images"][0]
        data["shard"]["images"][0] = first

    folder = _copy(two_shards, pytester.path / "twice", steal)
    twice = merge(pytester, f"--coreml-merge={folder}")
    assert twice.ret == pytest.ExitCode.USAGE_ERROR
    twice.stderr.fnmatch_lines(["*s2.json*field 'shard.images': image '*' is in *s1.json (shard 1/2) too*"])
    empty = pytester.path / "empty"
    empty.mkdir()
    none = merge(pytester, f"--coreml-merge={empty}")
    none.stderr.fnmatch_lines(["*empty*the directory holds no .json file*"])


def test_merged_html_says_it_has_no_images(pytester: pytest.Pytester, two_shards: Path) -> None:
    page = pytester.path / "r.html"
    result = merge(pytester, f"--coreml-merge={two_shards}", f"--coreml-report-html={page}")
    # The shards ran no load item: the merge has no load time to judge.
    result.assert_outcomes(passed=4, skipped=4)
    result.stdout.fnmatch_lines(["coreml-quality: merging 2 shard report(s) of 28 images*", "*s2.json (shard 2/2): 14 images"])
    text = page.read_text()
    assert "Merged from 2 shard reports" in text and "shows no images" in text and "<img" not in text


def test_merge_recomputes_set_figures_from_curves_not_means(two_shards: Path) -> None:
    """max F is the max of the weighted mean curve: not the mean of the shards' max F."""
    from pytest_coreml_quality.merge import merge_partials

    run = merge_partials([two_shards]).results
    q8 = run.models["TinySeg.mlmodel"].variants["q8"]
    parts = [json.loads((two_shards / f"s{i}.json").read_text())["models"]["TinySeg.mlmodel"]["variants"]["q8"] for i in (1, 2)]
    sizes = [len(p["per_image"]) for p in parts]
    naive = sum(p["metrics"]["max_f"] * n for p, n in zip(parts, sizes)) / sum(sizes)
    assert len(q8.per_image) == IMAGES and q8.curves == {}
    assert math.isclose(q8.metrics["mae"], sum(p["metrics"]["mae"] * n for p, n in zip(parts, sizes)) / sum(sizes), rel_tol=1e-12)
    assert q8.metrics["max_f"] != naive


def test_merge_will_not_overwrite_a_shard_report(pytester: pytest.Pytester, two_shards: Path) -> None:
    result = merge(pytester, f"--coreml-merge={two_shards}", f"--coreml-report-json={two_shards / 's1.json'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--coreml-report-json*a shard report*"])
