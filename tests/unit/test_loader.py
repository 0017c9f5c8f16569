"""Loading flag files: strict YAML and JSON parsing, and one fixture file per malformed input
class in `tests/data/invalid/` (DESIGN.md, "Flag definition format")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import flagsync.loader
from flagsync import FlagClient, FlagsyncError, InvalidFlagError, Rollout, load_flags
from tests.unit.builders import DATA_DIR, KEY_HINT

INVALID = DATA_DIR / "invalid"
EXAMPLES = DATA_DIR.parents[1] / "examples" / "flags.yaml"


def _issues(path: Path) -> list[str]:
    with pytest.raises(InvalidFlagError) as caught:
        load_flags(path)
    return [str(issue) for issue in caught.value.issues]


class TestValidFiles:
    """Valid YAML and JSON files load into the same `FlagSet`."""

    def test_design_example_in_yaml_and_json_is_identical(self) -> None:
        """The DESIGN.md example loads the same from YAML and from JSON."""
        from_yaml = load_flags(DATA_DIR / "flags.yaml")
        assert from_yaml == load_flags(DATA_DIR / "flags.json")
        assert list(from_yaml.flags) == ["llm-model-version", "prompt-template-v2"]
        assert from_yaml.segments["beta-testers"].keys == ["user-1", "user-2"]

    def test_on_and_off_stay_strings_in_yaml(self) -> None:
        """`variants: {on: true, off: false}` / `off: off` keep `on`/`off` as names (YAML 1.2)."""
        prompt = load_flags(DATA_DIR / "flags.yaml").flags["prompt-template-v2"]
        assert prompt.variants == {"on": True, "off": False}
        assert prompt.off == "off"
        assert isinstance(prompt.default, Rollout)
        assert prompt.default.rollout == {"on": 5, "off": 95}

    def test_yaml_1_1_booleans_stay_strings(self, tmp_path: Path) -> None:
        """yes/no/y/n/on/off are strings; only true/false (any case form) are booleans."""
        path = tmp_path / "words.yaml"
        path.write_text(
            "flags:\n"
            "  words:\n"
            "    variants: {yes: yes, no: no, y: Y, n: N, on: On, off: OFF}\n"
            "    off: no\n"
            "    default: yes\n"
            "  switch:\n"
            "    variants: {a: true, b: False}\n"
            "    off: a\n"
            "    default: b\n",
            encoding="utf-8",
        )
        flags = load_flags(path).flags
        assert flags["words"].variants == {
            "yes": "yes",
            "no": "no",
            "y": "Y",
            "n": "N",
            "on": "On",
            "off": "OFF",
        }
        assert (flags["words"].off, flags["words"].default) == ("no", "yes")
        assert flags["switch"].variants == {"a": True, "b": False}

    def test_path_forms(self) -> None:
        """A `str` path, a `Path`, a mapping and a `FlagSet` are all accepted sources."""
        path = DATA_DIR / "flags.yaml"
        flags = load_flags(path)
        assert load_flags(str(path)) == flags
        assert load_flags(flags.to_builtins()) == flags
        assert load_flags(flags) == flags
        assert FlagClient.offline(str(path)).snapshot.definitions == flags

    def test_examples_file_loads(self) -> None:
        """The repository's `examples/flags.yaml` is valid."""
        assert len(load_flags(EXAMPLES).flags) >= 1

    def test_json_suffix_is_case_insensitive(self, tmp_path: Path) -> None:
        """A `.JSON` file is parsed as JSON (so its duplicate keys are caught as JSON)."""
        path = tmp_path / "FLAGS.JSON"
        path.write_text(json.dumps(load_flags(DATA_DIR / "flags.yaml").to_builtins()))
        assert load_flags(path) == load_flags(DATA_DIR / "flags.yaml")


class TestStrictParsing:
    """Files a lenient parser would silently change are refused, naming the file."""

    @pytest.mark.parametrize(
        ("name", "message"),
        [
            ("duplicate-keys.yaml", "invalid yaml: duplicate key 'llm-model-version'"),
            ("duplicate-variant.yaml", "invalid yaml: duplicate key 'current'"),
            ("duplicate-keys.json", "invalid json: duplicate key 'llm-model-version'"),
            ("alias.yaml", "invalid yaml: aliases are not allowed in flag files"),
            ("nan.json", "invalid json: NaN is not a JSON number"),
            ("syntax-error.yaml", "invalid yaml: while parsing a flow mapping"),
            ("syntax-error.json", "invalid json: Expecting property name enclosed in double"),
        ],
    )
    def test_refused_file(self, name: str, message: str) -> None:
        """The file is refused with one issue at the file's path."""
        path = INVALID / name
        with pytest.raises(InvalidFlagError) as caught:
            load_flags(path)
        (issue,) = caught.value.issues
        assert issue.path == str(path)
        assert issue.message.startswith(message)
        assert caught.value.__cause__ is not None

    @pytest.mark.parametrize("constant", ["Infinity", "-Infinity", "NaN"])
    def test_json_non_finite_constants(self, tmp_path: Path, constant: str) -> None:
        """JSON's non-standard NaN/Infinity constants are refused anywhere in the file."""
        path = tmp_path / "flags.json"
        template = '{"flags": {"f": {"variants": {"a": VALUE}, "off": "a", "default": "a"}}}'
        path.write_text(template.replace("VALUE", constant))
        assert _issues(path) == [f"{path}: invalid json: {constant} is not a JSON number"]

    def test_json_lone_surrogate_escape(self, tmp_path: Path) -> None:
        """A `"\\ud800"` escape parses as JSON but is refused as invalid text, not crashing."""
        path = tmp_path / "flags.json"
        path.write_text(
            '{"flags": {"f": {"variants": {"a": "\\ud800"}, "off": "a", "default": "a"}}}'
        )
        assert _issues(path) == [
            "flags.f: contains text that is not valid Unicode: surrogates not allowed"
        ]

    def test_yaml_nan_is_refused_by_validation(self, tmp_path: Path) -> None:
        """YAML's `.nan` parses, then validation refuses it as a variant value."""
        path = tmp_path / "flags.yaml"
        path.write_text("flags:\n  f:\n    variants: {a: .nan}\n    off: a\n    default: a\n")
        assert _issues(path) == ["flags.f.variants.a: nan is not a JSON number"]

    def test_yaml_timestamps_are_not_json(self, tmp_path: Path) -> None:
        """A YAML date is not a JSON value, so it cannot be a variant value."""
        path = tmp_path / "flags.yaml"
        path.write_text("flags:\n  f:\n    variants: {a: 2026-11-25}\n    off: a\n    default: a\n")
        assert _issues(path) == ["flags.f.variants.a: date is not a JSON value"]

    def test_yaml_integer_flag_key_is_not_a_string(self, tmp_path: Path) -> None:
        """An unquoted `123:` flag key is an integer in YAML and is refused, not coerced."""
        path = tmp_path / "flags.yaml"
        path.write_text("flags:\n  123:\n    variants: {a: 1}\n    off: a\n    default: a\n")
        assert _issues(path) == [f"flags.123: invalid key 123: {KEY_HINT}"]


class TestUnreadableFiles:
    """Files that cannot be read are reported as `InvalidFlagError` naming the file."""

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is refused with `cannot read`."""
        path = tmp_path / "absent.yaml"
        (issue,) = _issues(path)
        assert issue.startswith(f"{path}: cannot read: ")
        assert "No such file" in issue

    def test_directory(self, tmp_path: Path) -> None:
        """A directory is refused with `cannot read`."""
        (issue,) = _issues(tmp_path)
        assert issue.startswith(f"{tmp_path}: cannot read: ")

    def test_not_utf8(self, tmp_path: Path) -> None:
        """A file that is not UTF-8 is refused with `cannot read`."""
        path = tmp_path / "flags.yaml"
        path.write_bytes(b"flags: {}\n\xff\xfe")
        (issue,) = _issues(path)
        assert issue.startswith(f"{path}: cannot read: 'utf-8' codec can't decode")

    def test_file_over_the_size_limit(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file larger than the loader's limit is refused before it is parsed."""
        monkeypatch.setattr(flagsync.loader, "MAX_FILE_BYTES", 10)
        path = tmp_path / "flags.yaml"
        path.write_text("flags: {}\n# padding\n")
        assert _issues(path) == [f"{path}: file is 20 bytes, over 10"]

    def test_empty_file(self, tmp_path: Path) -> None:
        """An empty file is not a document with flags."""
        path = tmp_path / "flags.yaml"
        path.write_text("")
        assert _issues(path) == ["$: expected a mapping with 'flags', got null"]

    def test_parse_errors_are_flagsync_and_value_errors(self) -> None:
        """Parse failures are `InvalidFlagError`, a `FlagsyncError` and a `ValueError`."""
        with pytest.raises(FlagsyncError):
            load_flags(INVALID / "syntax-error.yaml")
        with pytest.raises(ValueError, match="invalid json"):
            load_flags(INVALID / "syntax-error.json")


class TestInvalidFixtureFiles:
    """Each malformed-definition fixture is refused with exactly the expected issues."""

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            (
                "unknown-variant.yaml",
                ["flags.llm-model-version.rules[1].serve: unknown variant 'candidat'"],
            ),
            (
                "weights-sum-90.yaml",
                ["flags.llm-model-version.default.rollout: weights sum to 90, not 100"],
            ),
            (
                "weights-4-decimals.yaml",
                [
                    "flags.llm-model-version.default.rollout.candidate: "
                    "weight 33.3333 has more than 3 decimals"
                ],
            ),
            (
                "mixed-variant-types.yaml",
                [
                    "flags.context-window.variants: all variants must share one type, "
                    "got small=number, large=string"
                ],
            ),
            (
                "null-variant.yaml",
                ["flags.fallback-provider.variants.none: null is not a variant value"],
            ),
            (
                "unknown-field.yaml",
                ["flags.llm-model-version: object contains unknown field `owner`"],
            ),
            (
                "wrong-field-type.yaml",
                ["flags.llm-model-version.enabled: expected `bool`, got `str`"],
            ),
            ("bad-key.yaml", [f"flags.LLM_Model: invalid key 'LLM_Model': {KEY_HINT}"]),
            (
                "bad-regex.yaml",
                [
                    "flags.llm-model-version.rules[0].when[0].values[0]: invalid regex "
                    "'(@acme\\\\.com': missing ): (@acme\\.com"
                ],
            ),
            (
                "unknown-operator.yaml",
                [
                    "flags.llm-model-version.rules[0].when[0].op: unknown operator 'like' (known: "
                    "contains, ends_with, eq, gt, gte, in, in_segment, lt, lte, matches, neq, "
                    "not_in, semver_eq, semver_gt, semver_lt, starts_with)"
                ],
            ),
            (
                "unknown-segment.yaml",
                [
                    "flags.sampling-params.rules[0].when[0].values[0]: "
                    "unknown segment 'beta-testers'"
                ],
            ),
            (
                "prerequisite-cycle.yaml",
                [
                    "flags.context-window.requires: prerequisite cycle: "
                    "context-window -> llm-model-version -> context-window"
                ],
            ),
            ("not-a-mapping.yaml", ["$: expected a mapping with 'flags', got list"]),
        ],
    )
    def test_fixture(self, name: str, expected: list[str]) -> None:
        """The fixture's issues are exactly the expected ones, with their paths."""
        assert _issues(INVALID / name) == expected

    def test_weights_150(self) -> None:
        """A 150 % weight is refused, naming the variant."""
        issues = _issues(INVALID / "weights-150.yaml")
        assert (
            issues[0]
            == "flags.llm-model-version.default.rollout.candidate: weight 150 is not in 0..100"
        )

    def test_many_problems_reported_together(self) -> None:
        """Problems in several flags and a segment of one file come in one error."""
        assert sorted(_issues(INVALID / "many-problems.yaml")) == sorted(
            [
                f"segments.Beta-Testers: invalid key 'Beta-Testers': {KEY_HINT}",
                "flags.llm-model-version.off: unknown variant 'curent'",
                "flags.llm-model-version.default.rollout: weights sum to 90, not 100",
                "flags.prompt-template-v2.variants: all variants must share one type, "
                "got on=boolean, off=number",
                "flags.context-window.requires.retrieval-strategy: "
                "unknown flag 'retrieval-strategy'",
            ]
        )

    def test_every_fixture_is_refused(self) -> None:
        """No file in `tests/data/invalid/` loads (a fixture that became valid is a bug)."""
        files = sorted(INVALID.iterdir())
        assert len(files) >= 20
        for path in files:
            with pytest.raises(InvalidFlagError):
                load_flags(path)

    def test_nothing_is_returned_on_error(self) -> None:
        """`FlagClient.offline` on an invalid file raises instead of serving part of it."""
        with pytest.raises(InvalidFlagError):
            FlagClient.offline(INVALID / "many-problems.yaml")


def _flag_with(value_text: str) -> str:
    """A one-flag YAML document whose variant `a` is `value_text` (variant `b` is 1)."""
    return f"flags:\n  f:\n    variants: {{a: {value_text}, b: 1}}\n    off: b\n    default: b\n"


class TestShapeLimits:
    """Nesting and integers a flag cannot hold are refused by path, never by a crash."""

    @pytest.mark.parametrize(
        ("suffix", "text"),
        [
            (".json", "[" * 50_000 + "]" * 50_000),
            (".yaml", "[" * 5_000 + "]" * 5_000),
            (".yaml", "a:\n" + "".join(" " * (2 * n) + "- \n" for n in range(1, 2_000))),
        ],
        ids=["json", "yaml-flow", "yaml-block"],
    )
    def test_nesting_beyond_the_parser_is_refused(
        self, tmp_path: Path, suffix: str, text: str
    ) -> None:
        """A file nested deeper than any parser recursion is one issue at the file's path,
        not a RecursionError."""
        path = tmp_path / f"deep{suffix}"
        path.write_text(text)

        issues = _issues(path)

        assert len(issues) == 1
        assert issues[0].startswith(f"{path}")
        assert "nested deeper than 64 levels" in issues[0]

    def test_nesting_past_the_limit_names_where(self, tmp_path: Path) -> None:
        """A value 70 levels deep (parseable, but past the document limit) is refused at
        the path where the limit is crossed."""
        path = tmp_path / "deep.yaml"
        path.write_text(_flag_with("[" * 70 + "]" * 70))

        [issue] = _issues(path)

        assert issue.startswith(f"{path} at flags.f.variants.a[0][0]")
        assert issue.endswith(": nested deeper than 64 levels")

    @pytest.mark.parametrize(
        ("value", "ok"),
        [
            (2**64 - 1, True),
            (2**64, False),
            (-(2**63), True),
            (-(2**63) - 1, False),
            (10**30, False),
        ],
        ids=["u64-max", "u64-max+1", "i64-min", "i64-min-1", "1e30"],
    )
    def test_integers_msgpack_cannot_store_are_refused(
        self, tmp_path: Path, value: int, ok: bool
    ) -> None:
        """Integers in -2**63 .. 2**64-1 load; one outside is refused naming its path (the
        publisher would otherwise fail with an OverflowError)."""
        path = tmp_path / "ints.yaml"
        path.write_text(_flag_with(str(value)).replace("b: 1", "b: 2"))

        if ok:
            assert load_flags(path).flags["f"].variants["a"] == value
        else:
            shown = str(value) if abs(value) < 10**30 else f"of {len(str(abs(value)))} digits"
            assert _issues(path) == [
                f"{path} at flags.f.variants.a: integer {shown} is outside -2**63..2**64-1"
            ]

    def test_a_mapping_is_checked_too(self) -> None:
        """A plain mapping with a huge integer is refused with the value's path."""
        document = {"flags": {"f": {"variants": {"a": 2**70, "b": 1}, "off": "b", "default": "b"}}}

        with pytest.raises(InvalidFlagError) as caught:
            load_flags(document)

        assert [str(i) for i in caught.value.issues] == [
            f"flags.f.variants.a: integer {2**70} is outside -2**63..2**64-1"
        ]

    def test_check_shape_walks_any_depth_without_recursion(self) -> None:
        """`check_shape` refuses a 100,000-level structure built in memory (no recursion)."""
        deep: list[object] = []
        for _ in range(100_000):
            deep = [deep]

        with pytest.raises(InvalidFlagError, match="nested deeper than 8 levels"):
            flagsync.loader.check_shape(deep, "--context", max_depth=8)

    @pytest.mark.parametrize("container", ["list", "dict"])
    def test_check_shape_depth_limit_is_exact(self, container: str) -> None:
        """A value nested exactly `max_depth` levels passes; one level more is refused, with
        its path, for lists and mappings alike."""

        def nested(levels: int) -> object:
            value: object = 1
            for _ in range(levels):
                value = [value] if container == "list" else {"k": value}
            return value

        flagsync.loader.check_shape(nested(8), "--context", max_depth=8)
        with pytest.raises(InvalidFlagError, match="nested deeper than 8 levels") as caught:
            flagsync.loader.check_shape(nested(9), "--context", max_depth=8)
        assert str(caught.value.issues[0]).startswith("--context at ")

    @pytest.mark.parametrize("value", [2**64, -(2**63) - 1])
    def test_check_shape_finds_a_huge_integer_anywhere(self, value: int) -> None:
        """An unstorable integer deep inside lists and mappings is refused naming its path;
        the limits themselves pass."""
        flagsync.loader.check_shape({"a": [{"b": [2**64 - 1, -(2**63)]}]}, "x")
        with pytest.raises(InvalidFlagError) as caught:
            flagsync.loader.check_shape({"a": [{"b": [1, "s", value]}]}, "x")
        assert str(caught.value.issues[0]).startswith("x at a[0].b[2]: integer")


class TestYamlErrorMessages:
    def test_a_yaml_error_names_line_and_column_not_the_stream(self, tmp_path: Path) -> None:
        """A YAML syntax error gives line and column; PyYAML's `"<unicode string>"` stream
        name never appears (the issue's path is the file)."""
        path = tmp_path / "broken.yaml"
        path.write_text("flags:\n  f: {a: 1\n  g: 2\n")

        [issue] = _issues(path)

        assert issue.startswith(f"{path}: invalid yaml: ")
        assert "(line " in issue
        assert ", column " in issue
        assert "<unicode string>" not in issue
