import json

import pytest

from flows.config import PipelineConfig
from helios.cli.config_file import load_config
from helios.errors import UsageError


def test_defaults_are_valid_and_frozen():
    cfg = load_config()
    assert cfg.model.name == "mnist-cnn" and cfg.input is None
    with pytest.raises(Exception):
        cfg.infer.batch_size = 3  # frozen: derive a new config instead


def test_yaml_toml_json_and_set_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("infer:\n  shard_size: 500\nmodel:\n  name: minilm\n")
    (tmp_path / "c.toml").write_text("[infer]\nshard_size = 500\n[model]\nname = 'minilm'\n")
    (tmp_path / "c.json").write_text(json.dumps({"infer": {"shard_size": 500}, "model": {"name": "minilm"}}))
    for name in ("c.yaml", "c.toml", "c.json"):
        cfg = load_config(tmp_path / name, ["infer.batch_size=32", "refine.methods=[tta]"])
        assert (cfg.infer.shard_size, cfg.model.name, cfg.infer.batch_size, cfg.refine.methods) == (500, "minilm", 32, ("tta",))


def test_cli_flags_sit_between_file_and_set(tmp_path):
    (tmp_path / "c.yaml").write_text("out: from-file\n")
    cfg = load_config(tmp_path / "c.yaml", ["out=from-set"], {"out": "from-flag", "labels": None})
    assert cfg.out == "from-set" and cfg.labels is None


def test_numeric_class_names_from_set_become_text():
    cfg = load_config(None, ["model.labels=[0,1,cat]"])
    assert cfg.model.labels == ("0", "1", "cat")


@pytest.mark.parametrize("override, fragment", [
    (["infer.bogus=1"], "unknown setting 'infer.bogus'"),
    (["refine.tta_merge=median"], "refine.tta_merge='median' is not allowed: expected 'mean', 'gmean', 'max' or 'tsharpen'"),
    (["infer.shard_size=5"], "infer.shard_size=5"),
    (["infer"], "not of the form dotted.key=value"),
])
def test_bad_values_name_the_field_and_the_fix(override, fragment):
    with pytest.raises(UsageError) as info:
        load_config(None, override)
    assert fragment in str(info.value)


def test_bad_files(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.ini").write_text("x=1")
    with pytest.raises(UsageError, match="use .yaml, .yml, .toml or .json"):
        load_config(tmp_path / "bad.ini")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_json_schema_is_a_form_for_the_prefect_ui():
    schema = PipelineConfig.model_json_schema()
    assert {"model", "infer", "refine", "review", "report"} <= set(schema["properties"])


@pytest.mark.parametrize("old,new", [("prepare.allow_pickle", "model.allow_pickle"),
                                     ("infer.max_image_pixels", "model.max_image_pixels")])
def test_moved_settings_name_their_new_place(old, new):
    with pytest.raises(UsageError, match=f"moved to '{new}'"):
        load_config(overrides=[f"{old}=1"])
