"""`--set` overrides are applied together, then validated once; `train --config FILE` is real.

Issue 13, item 8: `--set data.source=ml-100k --set data.path=...` must work in either order (each
alone is invalid), and the usage line in every `configs/*.toml` comment must run as written.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from gr_core.config import RunConfig, replace_path
from gr_scaling.cli import _load_config, build_parser, main

REPO = Path(__file__).resolve().parents[2]


def replace_paths(config: RunConfig, updates: dict) -> RunConfig:
    from gr_core.config import replace_paths as many  # new in issue 13; imported here so the CLI tests run on older code

    return many(config, updates)


def _flops_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    assert main(["flops", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_source_and_path_overrides_work_in_either_order(
    tiny_ml100k: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, path = "data.source=ml-100k", f"data.path={tiny_ml100k}"
    first = _flops_json(capsys, ["--set", source, "--set", path, "--set", "model.max_seq_len=8"])
    second = _flops_json(capsys, ["--set", "model.max_seq_len=8", "--set", path, "--set", source])
    expected = RunConfig.from_dict({"data": {"source": "ml-100k", "path": str(tiny_ml100k)}, "model": {"max_seq_len": 8}})
    assert first["run_id"] == second["run_id"] == expected.run_id
    assert first["flops"]["train"] == second["flops"]["train"] > 0


@pytest.mark.parametrize("order", [1, -1])
def test_overrides_on_a_file_are_validated_together(tmp_path: Path, order: int) -> None:
    path = tmp_path / "run.toml"
    path.write_text("[model]\nembedding_dim = 30\nnum_heads = 3\n")
    # 4 heads do not divide 30 and 3 heads do not divide 32: only both changes together are valid.
    sets = ["--set", "model.num_heads=4", "--set", "model.embedding_dim=32"]
    pairs = [sets[i : i + 2] for i in range(0, 4, 2)][::order]
    config = _load_config(build_parser().parse_args(["flops", "--config", str(path), *sum(pairs, [])]))
    assert (config.model.embedding_dim, config.model.num_heads, config.model.dqk) == (32, 4, 8)
    assert config == replace_paths(RunConfig.from_toml(path), {"model.num_heads": 4, "model.embedding_dim": 32})


def test_an_invalid_combination_names_the_field_and_the_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flops", "--set", "model.embedding_dim=30", "--set", "model.num_heads=4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: --set model.embedding_dim=30 --set model.num_heads=4: model.embedding_dim=30 is not divisible by "
        "model.num_heads=4; set attention_dim and linear_dim explicitly"
    ]


@pytest.mark.parametrize(("item", "fragment"), [
    ("model.num_blocks", "expected key=value"),
    ("modle.num_blocks=2", "expected 'data.<key>', 'model.<key>' or 'train.<key>'"),
    ("model.num_blockz=2", "unknown key(s) ['num_blockz'] in [model]"),
])
def test_malformed_overrides_are_user_errors(capsys: pytest.CaptureFixture[str], item: str, fragment: str) -> None:
    assert main(["flops", "--set", item]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and fragment in err


def test_replace_path_still_sets_one_field() -> None:
    config = replace_path(RunConfig(), "train.lr", 3e-3)
    assert config.train.lr == 3e-3 and config == replace_paths(RunConfig(), {"train.lr": 3e-3})


@pytest.mark.parametrize("command", ["train", "flops"])
def test_config_option_and_positional_agree(tmp_path: Path, command: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text("[model]\nnum_blocks = 3\n")
    by_option = _load_config(build_parser().parse_args([command, "--config", str(path), "--set", "train.epochs=2"]))
    by_position = _load_config(build_parser().parse_args([command, str(path), "--set", "train.epochs=2"]))
    assert by_option == by_position
    assert (by_option.model.num_blocks, by_option.train.epochs) == (3, 2)
    with pytest.raises(ValueError, match="give the run config once"):
        _load_config(build_parser().parse_args([command, str(path), "--config", str(path)]))


CONFIGS = sorted((REPO / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_the_usage_in_each_config_comment_runs_as_written(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The `gr-scaling train ...` line of each config's comment parses and loads that config."""
    monkeypatch.chdir(REPO)  # the comments give paths from the repository root
    usage = [line.lstrip("# ").strip() for line in path.read_text().splitlines()
             if line.startswith("#") and "gr-scaling " in line]
    assert usage, f"{path.name} documents no gr-scaling command"
    for line in usage:
        argv = shlex.split(line)
        assert argv[0] == "gr-scaling"
        args = build_parser().parse_args(argv[1:])
        assert args.command == "train"
        config = _load_config(args)
        documented = replace_paths(RunConfig.from_toml(REPO / "configs" / path.name),
                                   {"data.path": argv[argv.index("--set") + 1].partition("=")[2]})
        assert config == documented and config.data.path != RunConfig.from_toml(path).data.path
