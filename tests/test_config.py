"""Config loading: defaults, YAML, command-line overrides, clear errors, a stable hash."""

import pytest

from pipeline.config import ConfigError, RelabelConfig, config_hash, load_config


def test_defaults_follow_the_design():
    cfg = load_config([])
    assert isinstance(cfg, RelabelConfig)
    assert cfg.model.path == "Qwen/Qwen3-VL-8B-Instruct"
    assert cfg.frames.fps == 2.0 and cfg.prefixes.num == 15
    assert cfg.scoring.chat_template is False
    assert cfg.scoring.prompt_suffix.endswith("The answer is: True")


def test_overrides_are_typed():
    cfg = load_config(["frames.fps=4", "source.uris=[s3://fleet/a,/local/b]", "curation.min_voc=0.5"])
    assert cfg.frames.fps == 4.0
    assert cfg.source.uris == ["s3://fleet/a", "/local/b"]
    assert cfg.curation.min_voc == 0.5


def test_config_is_frozen():
    cfg = load_config([])
    with pytest.raises(AttributeError):
        cfg.frames.fps = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("frames.fpz=1", "frames.fpz"),
        ("frames.fps=fast", "frames.fps"),
        ("nosuch.key=1", "nosuch"),
        ("prefixes.num=0", "prefixes.num"),
        ("frames.max_frames=7", "frames.max_frames"),
        ("model.dtype=int8", "model.dtype"),
        ("publish.keep_superseded_s=-1", "publish.keep_superseded_s"),
        ("publish.keep_superseded_s=nan", "publish.keep_superseded_s"),
    ],
)
def test_bad_overrides_name_the_key(override, needle):
    with pytest.raises(ConfigError) as info:
        load_config([override])
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_hash_tracks_numbers_not_paths():
    base = config_hash(load_config([]))
    assert config_hash(load_config(["output.uri=s3://elsewhere", "ray.scorer_actors=4"])) == base
    assert config_hash(load_config(["source.uris=[s3://x/y]", "scoring.suffix_chunk=4"])) == base
    assert config_hash(load_config(["frames.fps=4"])) != base
    assert config_hash(load_config(["model.path=/models/other"])) != base
    assert config_hash(load_config(["scoring.chat_template=true"])) != base
    assert config_hash(load_config(["prefixes.num=8"])) != base


def test_yaml_file_is_merged(tmp_path):
    path = tmp_path / "custom.yaml"
    path.write_text("frames:\n  fps: 5.0\nprefixes:\n  num: 4\n")
    cfg = load_config(["prefixes.num=6"], yaml_path=path)
    assert cfg.frames.fps == 5.0 and cfg.prefixes.num == 6


def test_missing_yaml_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config([], yaml_path=tmp_path / "absent.yaml")


def test_installed_without_conf_dir_uses_defaults(tmp_path, monkeypatch):
    import pipeline.config as config

    monkeypatch.setattr(config, "CONF_DIR", tmp_path)
    cfg = load_config(["frames.fps=3"])
    assert cfg.frames.fps == 3.0 and cfg.model.path == "Qwen/Qwen3-VL-8B-Instruct"
