"""Config loading: defaults, YAML, command-line overrides, clear errors, a stable hash."""

from dataclasses import asdict

import pytest

from pipeline.config import (
    ConfigError,
    RelabelConfig,
    config_hash,
    config_with_recorded,
    load_config,
    read_config_file,
    resolved_dtype,
)


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


def test_hash_covers_the_resolved_dtype_and_the_device_class():
    cpu_auto = config_hash(load_config(["model.device=cpu"]))  # dtype auto
    assert cpu_auto == config_hash(load_config(["model.device=cpu", "model.dtype=float32"]))
    cuda_bf16 = config_hash(load_config(["model.device=cuda", "model.dtype=bfloat16"]))
    assert cpu_auto != cuda_bf16
    assert cuda_bf16 == config_hash(load_config(["model.device=cuda:1"]))  # the class, not the ordinal
    # The same dtype on another device class is another hash: CPU and GPU kernels round differently.
    assert config_hash(load_config(["model.device=cpu", "model.dtype=bfloat16"])) != cuda_bf16
    assert (resolved_dtype("auto", "cuda:0"), resolved_dtype("auto", "cpu")) == ("bfloat16", "float32")
    assert (resolved_dtype("float16", "cpu"), resolved_dtype("auto", "auto")) == ("float16", "auto")


def _recorded(*overrides: str) -> dict:
    """A run record's ``config``: a resolved run config as a plain dict, storage options without secrets."""
    cfg = load_config(
        [
            "model.device=cpu",
            "model.dtype=float32",
            "success.threshold=-6.2",
            "curation.min_voc=0.5",
            "source.storage_options={endpoint_url: 'http://minio:9000',"
            " config_kwargs: {retries: {mode: standard}}}",
            *overrides,
        ]
    )
    return asdict(cfg)


def test_recorded_config_sits_between_defaults_and_overrides():
    recorded = _recorded()
    recorded["frames"].pop("fps")  # a key the record lacks takes the default
    cfg, explicit = config_with_recorded(recorded, ["success.threshold=-3", "prefixes.num=8"])
    assert cfg.success.threshold == -3.0 and cfg.prefixes.num == 8  # given
    assert cfg.curation.min_voc == 0.5 and cfg.model.dtype == "float32"  # recorded
    assert cfg.frames.fps == 2.0  # default
    assert explicit == ["success.threshold", "prefixes.num"]
    assert config_with_recorded({}, []) == (RelabelConfig(), [])
    assert config_with_recorded(recorded, [])[0].success.threshold == -6.2


def test_recorded_storage_options_never_erase_credentials():
    recorded = _recorded()
    # Nothing given: the recorded options name no credentials, so the backend's environment supplies them.
    cfg, _ = config_with_recorded(recorded, [])
    assert set(cfg.source.storage_options) == {"endpoint_url", "config_kwargs"}
    # Given on the command line: merged key by key with the recorded ones, neither side lost.
    cfg, explicit = config_with_recorded(recorded, ["source.storage_options={key: k, secret: s}"])
    assert cfg.source.storage_options == {
        "endpoint_url": "http://minio:9000",
        "config_kwargs": {"retries": {"mode": "standard"}},
        "key": "k",
        "secret": "s",
    }
    assert explicit == ["source.storage_options"]


def test_recorded_keys_this_version_lacks_are_ignored_and_bad_values_refused():
    recorded = _recorded()
    recorded["frames"]["retired_knob"] = 1
    recorded["gone_section"] = {"x": 1}
    cfg, _ = config_with_recorded(recorded, [])
    assert cfg.success.threshold == -6.2
    recorded["prefixes"]["num"] = 0
    with pytest.raises(ConfigError, match=r"prefixes\.num"):
        config_with_recorded(recorded, [])
    with pytest.raises(ConfigError, match="nosuch"):
        config_with_recorded({}, ["nosuch.key=1"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("source.uris=s3://x", "config error at 'source.uris': wants a list: source.uris='[s3://x]'"),
        ("source.episodes=3", "config error at 'source.episodes': wants a list: source.episodes='[3]'"),
        (
            "source.storage_options=http://minio:9000",
            "config error at 'source.storage_options': wants a mapping: "
            "source.storage_options='{endpoint_url: http://...}'",
        ),
        (
            "curation.enabled=maybe",
            "config error at 'curation.enabled': wants true or false, got 'maybe': curation.enabled=true",
        ),
        ("frames.fps=fast", "config error at 'frames.fps': wants a number, got 'fast': frames.fps=2.0"),
        ("frames.max_frames=1.5", "wants a whole number, got '1.5': frames.max_frames=64"),
        ("curation.min_voc=high", "wants a number or null, got 'high'"),
        ("frames.fpz=1", "config error at 'frames.fpz': unknown key; did you mean frames.fps?"),
        (
            "sucess.threshold=-3",
            "config error at 'sucess.threshold': unknown key; did you mean success.threshold?",
        ),
        ("ray.scorer_actor=2", "did you mean ray.scorer_actors?"),
        ("nosuch.key=1", "config error at 'nosuch.key': unknown key (--help lists the settings)"),
        ("frames=3", "config error at 'frames': a section, not a value: give frames.fps=..."),
        ("source.uris.x=1", "config error at 'source.uris.x': source.uris is a setting, not a section"),
        ("source.uris=[a, b]x", "config error at 'source.uris': '[a, b]x' is not a YAML value"),
        ("frames.fps", "config error: 'frames.fps' is not key=value"),
    ],
)
def test_type_errors_and_unknown_keys_give_a_hint(override, message):
    with pytest.raises(ConfigError) as info:
        load_config([override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_config_file_entries_merge_between_the_yaml_and_the_command_line(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "frames: {fps: 4, max_frames: 32}\n"
        "source:\n  uris: [s3://fleet/a, 's3://fleet/b c']\n"
        "  storage_options: {endpoint_url: 'http://minio:9000', client_kwargs: {region_name: eu}}\n"
        "curation.min_voc: 0.5\n"  # a dotted key reads as its nested form
        "scoring: {prompt_prefix: \"two\\nlines: 'quoted'\"}\n"
    )
    entries = read_config_file(str(path))
    cfg = load_config([*entries, "frames.fps=8"])
    assert cfg.frames.fps == 8.0 and cfg.frames.max_frames == 32  # the command line wins, key by key
    assert cfg.prefixes.num == 15  # conf/relabel.yaml and the defaults stay under the file
    assert cfg.source.uris == ["s3://fleet/a", "s3://fleet/b c"]
    assert cfg.source.storage_options == {
        "endpoint_url": "http://minio:9000",
        "client_kwargs": {"region_name": "eu"},
    }
    assert cfg.curation.min_voc == 0.5 and cfg.scoring.prompt_prefix == "two\nlines: 'quoted'"
    assert read_config_file(f"file://{path}") == entries


@pytest.mark.parametrize(
    ("text", "needle"),
    [(None, "no such file"), ("[1, 2]\n", "not a mapping of settings"), ("a: [\n", "is not YAML")],
)
def test_bad_config_files_are_one_line(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=needle) as info:
        read_config_file(str(path))
    assert "\n" not in str(info.value)


def test_a_mistyped_config_file_key_is_named(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("frames:\n  fsp: 4\n")
    with pytest.raises(ConfigError, match=r"'frames\.fsp': unknown key; did you mean frames\.fps\?"):
        load_config(read_config_file(str(path)))
