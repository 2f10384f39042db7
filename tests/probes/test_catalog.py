import subprocess
import sys
import textwrap

import pytest
import yaml

from probes import catalog as cat
from probes.errors import CatalogError

ONCOLOGY = cat.CATALOG_DIR / "oncology.yaml"
CHEST = cat.CATALOG_DIR / "chest_xray.yaml"


@pytest.fixture(scope="module")
def oncology():
    return cat.load_catalog(ONCOLOGY)


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def minimal(**overrides):
    data = {
        "name": "mini", "version": 1,
        "styles": [{"id": "xray", "label": "X-ray", "template": "An x-ray image of {topic}", "group": "radiology"},
                   {"id": "photo", "label": "Photo", "template": "A photo of {topic}", "group": "other"}],
        "topics": [{"id": "heart", "short": "the heart", "detailed": "the heart, the organ that pumps blood", "group": "anatomy"},
                   {"id": "lungs", "short": "the lungs", "detailed": "the lungs, where gas exchange happens", "group": "anatomy"}],
    }
    data.update(overrides)
    return data


def test_oncology_expands_to_the_published_design(oncology):
    table = cat.expand(oncology)
    assert list(table.columns) == cat.PROMPT_COLUMNS
    assert len(table) == 272
    assert table.groupby("style").size().to_dict() == {s: 34 for s in
        ["microscopy", "histopathology", "xray", "mri", "ct", "photo", "poster", "illustration"]}
    assert table.groupby("detail").size().to_dict() == {"short": 136, "detailed": 136}
    assert set(table.loc[table.style_group == "radiology", "style"]) == {"xray", "mri", "ct"}
    assert set(table.loc[table.style_group == "microscopy", "style"]) == {"microscopy", "histopathology"}
    assert table.prompt_id.is_unique and table.text.is_unique
    assert "A histopathological image of breast cancer" in set(table.text)
    assert (table.catalog == "oncology").all()
    detailed = table[table.detail == "detailed"].text
    assert detailed.str.contains(", ").all()


def test_prompt_ids_do_not_change_when_other_prompts_change(tmp_path):
    before = cat.expand(cat.parse_catalog(minimal())).set_index("text").prompt_id
    data = minimal()
    data["styles"] = data["styles"][1:] + [{"id": "ct", "label": "CT", "group": "radiology",
                                            "template": "A computed tomography image of {topic}"}]
    data["topics"].insert(0, {"id": "brain", "short": "the brain", "detailed": "the brain, in the skull", "group": "anatomy"})
    after = cat.expand(cat.parse_catalog(data)).set_index("text").prompt_id
    common = before.index.intersection(after.index)
    assert len(common) == 4
    assert (before[common] == after[common]).all()
    assert cat.prompt_id("A photo of the heart") == cat.prompt_id("  a photo of  THE heart. ")


@pytest.mark.parametrize("path", [ONCOLOGY, CHEST], ids=["oncology", "chest_xray"])
def test_every_expanded_prompt_matches_back(path):
    catalog = cat.load_catalog(path)
    table = cat.expand(catalog)
    for row in table.itertuples():
        for variant in (row.text, row.text.upper(), f"  {row.text}.  ", row.text.replace(" ", "   ")):
            assert cat.match_prompt(catalog, variant) == cat.Match(row.style, row.topic, row.detail), variant


def test_reworded_description_counts_as_detailed(oncology):
    hit = cat.match_prompt(oncology, "An X-ray image of lung cancer, a tumour seen as a spiculated mass.")
    assert hit == cat.Match("xray", "lung_cancer", "detailed")
    assert cat.match_prompt(oncology, "An x-ray image of a unicorn") is None
    assert cat.match_prompt(oncology, "A drawing of the heart") is None


def test_match_prompts_returns_prompt_ids(oncology):
    table = cat.match_prompts(oncology, ["a photo of malaria", "nonsense"])
    assert table.matched.tolist() == [True, False]
    assert table.prompt_id[0] == cat.prompt_id("A photo of malaria")


def test_extra_prompts_join_the_table_and_match():
    data = minimal(extra_prompts=[
        {"text": "A chest radiograph of a heart that is too big", "style": "xray", "topic": "cardiomegaly",
         "topic_group": "cardiac"},
        {"text": "A woodcut of the lungs", "style": "woodcut", "style_group": "other", "topic": "lungs"}])
    catalog = cat.parse_catalog(data)
    table = cat.expand(catalog)
    assert len(table) == 10
    extra = table.iloc[-2]
    assert (extra.style, extra.style_group, extra.topic_group, extra.detail) == ("xray", "radiology", "cardiac", "custom")
    assert cat.match_prompt(catalog, "a woodcut of the lungs.") == cat.Match("woodcut", "lungs", "custom")
    ids = cat.match_prompts(catalog, ["A woodcut of the lungs", "A chest radiograph of a heart that is too big",
                                      "a photo of THE heart."])
    assert list(ids.prompt_id) == [cat.prompt_id("A woodcut of the lungs"),
                                   cat.prompt_id("A chest radiograph of a heart that is too big"),
                                   cat.prompt_id("A photo of the heart")]


def test_detail_levels_can_be_restricted():
    assert set(cat.expand(cat.parse_catalog(minimal(detail=["short"]))).detail) == {"short"}


def test_chest_catalog_has_laterality_and_size_variants():
    table = cat.expand(cat.load_catalog(CHEST))
    assert "A chest x-ray showing a small left-sided pleural effusion" in set(table.text)
    assert (table.groupby("topic_group").topic.nunique() > 1).sum() >= 3
    assert {"no_finding", "pneumothorax", "cardiomegaly", "consolidation", "atelectasis", "edema"} <= set(table.topic_group)


BAD = {
    "yaml syntax": ("name: x\nstyles: [a, b\n", ["line 3", "YAML syntax error"]),
    "unknown key": (yaml.safe_dump(minimal(colour="red")), ["top level", "unknown key 'colour'"]),
    "missing key": (yaml.safe_dump({k: v for k, v in minimal().items() if k != "topics"}), ["missing key 'topics'"]),
    "unknown style key": (yaml.safe_dump(minimal(styles=[{"id": "a", "label": "A", "template": "A {topic}",
                                                          "group": "other", "colour": 1}])),
                          ["styles[0]", "unknown key 'colour'"]),
    "duplicate id": (yaml.safe_dump(minimal(topics=minimal()["topics"] * 2)), ["topics[2].id", "duplicate id 'heart'"]),
    "template without topic": (yaml.safe_dump(minimal(styles=[{"id": "a", "label": "A", "template": "An image",
                                                               "group": "other"}])),
                               ["styles[0].template", "{topic}"]),
    "empty list": (yaml.safe_dump(minimal(styles=[])), ["styles", "empty list"]),
    "non-string value": (yaml.safe_dump(minimal(topics=[{"id": "a", "short": 42, "detailed": "x, y", "group": "g"}])),
                         ["topics[0].short", "42 is a int, not a string"]),
    "bad group": (yaml.safe_dump(minimal(styles=[{"id": "a", "label": "A", "template": "A {topic}",
                                                  "group": "nuclear"}])),
                  ["styles[0].group", "unknown modality group 'nuclear'", "radiology or microscopy or other"]),
    "detailed without short": (yaml.safe_dump(minimal(topics=[{"id": "a", "short": "x", "detailed": "y, z",
                                                              "group": "g"}])),
                               ["topics[0].detailed", "start with the short form"]),
    "empty file": ("", ["top level", "is empty"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_catalogs_say_what_where_and_what_is_expected(tmp_path, case):
    text, needles = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as err:
        cat.load_catalog(path)
    message = str(err.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message
    assert "expected" in message


def test_non_utf8_and_unreadable_paths(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: x\nversion: 1\ndescription: Röntgen\n".encode("latin-1"))
    with pytest.raises(CatalogError, match=r"latin.yaml: line 3: byte 0xf6 is not UTF-8"):
        cat.load_catalog(latin)
    with pytest.raises(CatalogError, match="file not found.*oncology"):
        cat.load_catalog(tmp_path / "nope.yaml")
    with pytest.raises(CatalogError, match="is a folder"):
        cat.load_catalog(tmp_path)


def test_duplicate_prompt_text_after_normalisation():
    data = minimal(styles=[{"id": "a", "label": "A", "template": "A photo of {topic}", "group": "other"},
                           {"id": "b", "label": "B", "template": "a PHOTO of {topic}.", "group": "other"}])
    with pytest.raises(CatalogError, match="is produced 2 times"):
        cat.parse_catalog(data)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "probes", *args], capture_output=True, text=True)


def test_cli_show_validate_expand(tmp_path):
    shown = run_cli("catalog", "show", "oncology")
    assert shown.returncode == 0
    assert "272 prompts (8 styles x 17 topics x 2 detail levels)" in shown.stdout
    assert "radiology          102" in shown.stdout
    assert run_cli("catalog", "validate", str(CHEST)).stdout.startswith("ok:")
    out = tmp_path / "sub" / "prompts.csv"
    done = run_cli("catalog", "expand", str(ONCOLOGY), "-o", str(out))
    assert done.returncode == 0 and out.exists()
    assert out.read_text().count("\n") == 273


def test_cli_bad_catalog_gives_message_not_traceback(tmp_path):
    path = write(tmp_path, yaml.safe_dump(minimal(styles=[])))
    done = run_cli("catalog", "validate", str(path))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {path}: styles: is an empty list")


def billion_laughs(levels: int = 9) -> str:
    """The classic alias bomb inside a catalog's description: about 600 bytes, 9**9 values."""
    lines = ["name: bomb", "version: 1", "description:", '  - &l0 "lol"']
    for i in range(1, levels + 1):
        lines.append(f"  - &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\nstyles: []\ntopics: []\n"


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    import time

    path = write(tmp_path, billion_laughs())
    assert path.stat().st_size < 700
    start = time.perf_counter()
    with pytest.raises(CatalogError) as err:
        cat.load_catalog(path)
    assert time.perf_counter() - start < 2
    message = str(err.value)
    assert str(path) in message and "line 11" in message  # l7: 9**7 values
    assert "expands to more than 1,000,000 values" in message


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path):
    path = write(tmp_path, "name: deep\nversion: 1\nstyles: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(CatalogError, match=r"c.yaml: line 3, column 58: catalog refused: nested more than 50 levels"):
        cat.load_catalog(path)


def test_a_huge_catalog_file_is_refused_by_its_size(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("name: huge\nversion: 1\ndescription: '" + "x" * 6_000_000 + "'\n")
    with pytest.raises(CatalogError, match=r"huge.yaml: is 6.0 MB, larger than a catalog may be \(5 MB\)"):
        cat.load_catalog(path)


def test_a_catalog_that_expands_to_too_many_prompts_is_refused(tmp_path):
    styles = [{"id": f"s{i}", "label": f"S{i}", "template": f"Style {i} of {{topic}}", "group": "other"}
              for i in range(500)]
    topics = [{"id": f"t{i}", "short": f"topic {i}", "detailed": f"topic {i}, number {i}", "group": "g"}
              for i in range(201)]
    path = write(tmp_path, yaml.safe_dump(minimal(styles=styles, topics=topics)))
    with pytest.raises(CatalogError, match=r"expands to 201,000 prompts \(500 styles x 201 topics x 2 detail "
                                           r"levels \+ 0 extra\), more than the 200,000"):
        cat.load_catalog(path)
