"""YAML and files a user controls are read defensively: duplicate keys, alias bombs, deep nesting, symlinks
leaving the project, devices, FIFOs, folders and non-UTF-8 files are one clear error, and no message quotes
a file's contents."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlgate.check import check_config
from mlgate.cli import main
from mlgate.config import MAX_CONFIG_BYTES, load_config
from mlgate.errors import ConfigError, InputError
from mlgate.paths import escapes_lexically
from mlgate.yamlio import MAX_ALIAS_NODES, MAX_DEPTH, YamlRefused, parse_yaml

CANARY = "CANARY-7f3a-do-not-echo"
GOOD = """\
version: 1
project: demo
data:
  sources:
    train: {path: train.csv}
"""
EXAMPLE = Path(__file__).resolve().parents[2] / "example-project" / "mlgate.yaml"
# Nine lists of nine aliases, nine levels deep: 9**9 (~387 million) leaves once expanded.
BILLION_LAUGHS = "version: 1\nproject: lol\ntrain:\n  command: x\n  profiles:\n    quick:\n" + "".join(
    f"      l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else '"lol"'] * 9) + "]\n" for i in range(10)
)


def write(root: Path, text: str | bytes, name: str = "mlgate.yaml") -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.delenv("MLGATE_INPUT_CONFIG", raising=False)


# -- duplicate keys ----------------------------------------------------------------------------------


def test_a_duplicate_section_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    # With plain yaml.safe_load the second `data:` silently replaced the first, and its sources vanished.
    error = config_error(write(tmp_path, GOOD + "lint: {mypy: false}\ndata: {dvc: true}\n"))
    assert "duplicate key 'data' at lines 3 and 7" in error.message
    assert error.line == 7
    assert error.hint and "unique" in error.hint


def test_a_duplicate_nested_key_is_an_error(tmp_path: Path) -> None:
    text = GOOD + "  expectations:\n    columns:\n      amount: {type: float}\n      amount: {type: int}\n"
    error = config_error(write(tmp_path, text))
    assert "duplicate key 'amount' at lines 8 and 9" in error.message


def test_yaml_spellings_of_one_key_are_duplicates() -> None:
    with pytest.raises(YamlRefused, match=r"duplicate key True at lines 1 and 2"):
        parse_yaml("on: push\ntrue: pull_request\n")


def test_a_merge_key_may_be_overridden() -> None:
    document = parse_yaml("base: &base {epochs: 1, lr: 0.1}\nfull:\n  <<: *base\n  epochs: 5\n")
    assert document.data["full"] == {"epochs": 5, "lr": 0.1}


def test_cli_reports_a_duplicate_with_exit_2_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD + "project: other\n")
    assert main(["lint", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert "duplicate key 'project' at lines 2 and 6" in captured.out
    assert "Traceback" not in captured.out + captured.err


# -- aliases and nesting -----------------------------------------------------------------------------


def test_billion_laughs_is_refused_quickly_in_bounded_memory(tmp_path: Path) -> None:
    """In a child with a 1 GiB address-space limit: expanding the aliases would need far more, or hang."""
    path = write(tmp_path, BILLION_LAUGHS)
    code = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from mlgate.cli import main
        sys.exit(main(["lint", "--config", {str(path)!r}]))
        """
    )
    env = {**os.environ, "GITHUB_ACTIONS": ""}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"aliases expand to more than {MAX_ALIAS_NODES} nodes" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_aliases_within_the_budget_load(tmp_path: Path) -> None:
    text = GOOD + "train:\n  command: x\n  profiles:\n    quick: &quick {epochs: 1, lr: 0.1}\n    full: *quick\n"
    loaded = load_config(write(tmp_path, text))
    assert loaded.model.train is not None and loaded.model.train.profiles["full"] == {"epochs": 1, "lr": 0.1}


def test_an_anchor_containing_itself_is_refused(tmp_path: Path) -> None:
    error = config_error(write(tmp_path, GOOD + "lint: &loop {paths: [*loop]}\n"))
    assert "an anchor contains an alias to itself" in error.message
    assert error.line == 6


@pytest.mark.parametrize(
    "nested",
    [
        "lint: " + "[" * 50_000 + "]" * 50_000 + "\n",
        "lint:\n" + "".join("  " * (depth + 1) + f"k{depth}:\n" for depth in range(200)),
        "x: &deep " + "[" * 40 + "]" * 40 + "\ny: &deeper " + "[" * 40 + "*deep" + "]" * 40 + "\n",
    ],
    ids=["flow", "block", "through-aliases"],
)
def test_deep_nesting_is_a_config_error_not_a_recursion_error(tmp_path: Path, nested: str) -> None:
    error = config_error(write(tmp_path, GOOD + nested))
    assert f"more than {MAX_DEPTH} levels deep" in error.message
    assert error.line is not None and error.line >= 6


# -- the config file itself --------------------------------------------------------------------------


def test_a_config_symlinked_out_of_the_project_is_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = write(tmp_path / "elsewhere", f"root:x:0:0:{CANARY}:/root:/bin/bash\nproject: [{CANARY}\n", "passwd")
    project = tmp_path / "project"
    project.mkdir()
    (project / "mlgate.yaml").symlink_to(secret)
    error = config_error(project / "mlgate.yaml")
    assert "outside the project folder" in error.message and str(secret) in error.message
    assert main(["check", "--config", str(project / "mlgate.yaml")]) == 2
    captured = capsys.readouterr()
    assert CANARY not in captured.out + captured.err + error.message + str(error.hint)


def test_a_yaml_error_shows_the_line_and_problem_not_the_file(tmp_path: Path) -> None:
    text = f"version: 1\n# {CANARY}\nproject: {CANARY}\ndata: [unclosed, {CANARY}\n"
    error = config_error(write(tmp_path, text))
    assert error.message.startswith(f"{tmp_path / 'mlgate.yaml'}:5: not valid YAML: ")
    assert CANARY not in error.message


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda root: (root / "mlgate.yaml").mkdir(), "is a folder, not a file"),
        (lambda root: os.mkfifo(root / "mlgate.yaml"), "is a FIFO (named pipe), not a regular file"),
        (lambda root: (root / "mlgate.yaml").symlink_to("/dev/zero"), "outside the project folder"),
        (lambda root: write(root, b"version: 1\nproject: caf\xe9\n"), "is not UTF-8 text (byte 0xe9 at line 2"),
        (lambda root: write(root, GOOD + "#" * MAX_CONFIG_BYTES), f"more than the {MAX_CONFIG_BYTES} allowed"),
        (lambda root: write(root, "version: 1\nproject: a\x00b\n"), "unacceptable character #x0000"),
    ],
    ids=["folder", "fifo", "device-symlink", "latin-1", "too-big", "nul"],
)
def test_a_config_that_is_not_a_small_utf8_file_is_refused(
    tmp_path: Path, make: object, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert callable(make)
    make(tmp_path)
    error = config_error(tmp_path / "mlgate.yaml")
    assert expected in error.message
    assert main(["check", "--config", str(tmp_path / "mlgate.yaml")]) == 2  # and the check does not hang
    assert expected in capsys.readouterr().out


def test_dev_zero_as_the_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="/dev/zero: is a device, not a regular file"):
        load_config("/dev/zero")


# -- data paths --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.csv", "data/../../outside.csv", "~/x.csv"])
def test_a_data_path_leaving_the_project_is_a_config_error_naming_the_key(tmp_path: Path, path: str) -> None:
    error = config_error(write(tmp_path, GOOD.replace("train.csv", path)))
    assert "invalid key data.sources.train.path" in error.message and "outside the project" in error.message
    assert error.line == 5
    assert error.hint and "allow_outside_project: true" in error.hint


def test_escapes_lexically() -> None:
    assert not escapes_lexically("data/../train.csv") and not escapes_lexically("./a/b.csv")
    assert escapes_lexically("a/../../b.csv") and escapes_lexically("/abs.csv")


def test_an_outside_path_is_read_when_the_config_opts_in(tmp_path: Path) -> None:
    outside = write(tmp_path, "id,amount\n1,2.5\n", "shared/train.csv")
    project = tmp_path / "project"
    text = GOOD.replace("{path: train.csv}", f"{{path: {outside}, allow_outside_project: true}}")
    loaded = load_config(write(project, text))
    from mlgate.sources import load_source

    assert load_source(loaded, "train").rows == 1


def test_a_data_symlink_leaving_the_project_is_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlgate.sources import load_source

    secret = write(tmp_path, f"{CANARY};x\n1;2\n", "elsewhere/secret.csv")
    project = tmp_path / "project"
    loaded = load_config(write(project, GOOD))
    (project / "train.csv").symlink_to(secret)
    with pytest.raises(InputError) as caught:
        load_source(loaded, "train")
    assert "outside the project" in caught.value.message and caught.value.line == 5
    assert caught.value.hint and "allow_outside_project" in caught.value.hint
    report = check_config(project / "mlgate.yaml")
    assert [p.line for p in report.errors] == [5]
    assert "resolves through a symlink" in report.errors[0].message
    assert CANARY not in caught.value.message + " ".join(p.message for p in report.problems)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda path: path.mkdir(), "is a folder, not a file"),
        (lambda path: os.mkfifo(path), "is a FIFO (named pipe), not a regular file"),
    ],
    ids=["folder", "fifo"],
)
def test_a_data_path_that_is_not_a_regular_file_is_refused(tmp_path: Path, make: object, expected: str) -> None:
    from mlgate.sources import load_source

    assert callable(make)
    loaded = load_config(write(tmp_path, GOOD))
    make(tmp_path / "train.csv")
    with pytest.raises(InputError, match=re.escape(expected)):
        load_source(loaded, "train")  # a FIFO would block pandas forever
    assert expected in check_config(tmp_path / "mlgate.yaml").errors[0].message


def test_a_device_named_on_purpose_is_still_refused(tmp_path: Path) -> None:
    from mlgate.sources import load_source

    text = GOOD.replace("{path: train.csv}", "{path: /dev/zero, allow_outside_project: true, format: csv}")
    loaded = load_config(write(tmp_path, text))
    with pytest.raises(InputError, match="is a device, not a regular file"):
        load_source(loaded, "train")


def test_a_non_utf8_csv_header_is_reported_without_its_contents(tmp_path: Path) -> None:
    write(tmp_path, f"id,{CANARY}\xe9\n1,2\n".encode("latin-1"), "train.csv")
    write(tmp_path, GOOD + "  expectations:\n    columns:\n      id: {type: int}\n")
    report = check_config(tmp_path / "mlgate.yaml")
    assert "cannot be read as CSV" in report.errors[0].message
    assert CANARY not in report.errors[0].message


# -- the other YAML mlgate reads ---------------------------------------------------------------------


def test_dvc_yaml_and_workflows_are_read_with_the_same_loader(tmp_path: Path) -> None:
    text = GOOD + "train:\n  stage: fit\n  profiles: {quick: {}}\n"
    write(tmp_path, text)
    write(tmp_path, "stages:\n  fit: {cmd: a}\n  fit: {cmd: b}\n", "dvc.yaml")
    write(tmp_path, "schema: '2.0'\nstages: {}\n", "dvc.lock")
    write(tmp_path, "id\n1\n", "train.csv")
    workflow = "on: push\njobs:\n  a: {runs-on: x, steps: [{run: a}]}\n  a: {runs-on: y, steps: [{run: b}]}\n"
    write(tmp_path, workflow, ".github/workflows/ci.yml")
    messages = {p.file: (p.line, p.message) for p in check_config(tmp_path / "mlgate.yaml").errors}
    assert "duplicate key 'fit' at lines 2 and 3" in messages[str(tmp_path / "mlgate.yaml")][1]
    assert messages[str(tmp_path / ".github/workflows/ci.yml")][0] == 4
    assert "duplicate key 'a' at lines 3 and 4" in messages[str(tmp_path / ".github/workflows/ci.yml")][1]


def test_dvc_lock_with_a_duplicate_key_is_an_input_error(tmp_path: Path) -> None:
    from mlgate.train.lineage import data_hashes

    loaded = load_config(write(tmp_path, GOOD))
    write(tmp_path, "schema: '2.0'\nstages:\n  fit: {outs: []}\n  fit: {outs: []}\n", "dvc.lock")
    with pytest.raises(InputError, match=r"dvc.lock:4: duplicate key 'fit' at lines 3 and 4"):
        data_hashes(loaded)


# -- properties --------------------------------------------------------------------------------------

# No example database: it would write .hypothesis/ into the checkout; a failure prints its reproduction.
_FAST = settings(
    max_examples=200, deadline=2000, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_KEYS = st.sampled_from(
    ["version", "project", "data", "sources", "path", "lint", "train", "profiles", "<<", "on", "1", "&a", "*a"]
)
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12))
_TREES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.one_of(_KEYS, st.text(max_size=6)), children, max_size=4)
    ),
    max_leaves=30,
)


def _loads_or_config_error(root: Path, text: str | bytes) -> None:
    path = write(root, text)
    try:
        load_config(path)
    except ConfigError as error:
        assert error.message and error.hint, error


@_FAST
@given(text=st.text(max_size=400))
def test_arbitrary_text_loads_or_is_a_config_error(tmp_path: Path, text: str) -> None:
    _loads_or_config_error(tmp_path, text)


@_FAST
@given(tree=_TREES)
def test_arbitrary_yaml_trees_load_or_are_a_config_error(tmp_path: Path, tree: object) -> None:
    document = {"version": 1, "project": "p", "data": tree} if isinstance(tree, dict) else tree
    _loads_or_config_error(tmp_path, yaml.safe_dump(document, allow_unicode=True))


@_FAST
@given(
    cut=st.integers(min_value=0, max_value=10_000),
    length=st.integers(min_value=0, max_value=40),
    insert=st.text(alphabet=" \n\t:-[]{}&*!|>'\"#,?%@`\\x0", max_size=20),
)
def test_mutations_of_the_example_config_load_or_are_a_config_error(
    tmp_path: Path, cut: int, length: int, insert: str
) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    at = cut % (len(text) + 1)
    _loads_or_config_error(tmp_path, text[:at] + insert + text[at + length :])


@_FAST
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_load_or_are_a_config_error(tmp_path: Path, data: bytes) -> None:
    _loads_or_config_error(tmp_path, data)
