"""The docs a user reads hold: the generated references match their sources (`make docs`), every relative
link and heading anchor of the Markdown files resolves, and every `mlgate ...` command shown in a shell
block names a command, an operation and options that exist."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import pytest
from mlgate.cli import COMMANDS

from tools import gendocs

ROOT = Path(__file__).resolve().parents[2]
SHELL_FENCES = {"", "sh", "bash", "console", "shell", "shell-session"}
SESSION_FENCES = {"console", "shell-session"}  # commands after a `$ ` prompt, the rest their output


# --------------------------------------------------------------------------- the generated references


def test_the_generated_references_are_what_their_sources_generate() -> None:
    stale = gendocs.stale_pages(ROOT)
    assert not stale, (
        f"{', '.join(map(str, stale))} differ from what action.yml, the reusable workflows and mlgate.yaml's "
        "schema generate: run `make docs` and commit the result"
    )


def test_the_config_reference_lists_every_key_of_the_schema_once() -> None:
    from mlgate.config import json_schema

    sections = gendocs.config_keys(json.loads(json_schema()))
    paths = [key.path for keys in sections.values() for key in keys]
    assert len(paths) == len(set(paths)), "a key is listed twice"
    for expected in (
        "project",
        "data.sources.<name>.path",
        "data.expectations.columns.<name>.allowed",
        "model_tests.behavioral.directional[].perturb.scale",
        "train.distributed.rdzv_endpoint",
        "rollout.thresholds.false_alarm_budget",
        "traffic.nginx.split",
    ):
        assert expected in paths, f"{expected} is missing from the config reference"
    by_path = {key.path: key for keys in sections.values() for key in keys}
    assert "`auto` | `cpu` | `cuda`" in by_path["train.device"].type  # an enum shows its allowed values
    assert by_path["project"].default == "required"


# --------------------------------------------------------------------------- Markdown


def markdown_files() -> list[Path]:
    """Every Markdown file a push publishes (tracked, and untracked but not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return sorted(ROOT / name for name in listed if (ROOT / name).is_file())


@dataclass(frozen=True)
class Fence:
    info: str  # the fence's language: sh, yaml, "" for a plain one
    first_line: int  # 1-based line number of the block's first line
    lines: tuple[str, ...]


def split_markdown(text: str) -> tuple[list[tuple[int, str]], list[Fence]]:
    """(number, line) of the prose outside code fences, and the fenced blocks."""
    prose: list[tuple[int, str]] = []
    fences: list[Fence] = []
    fence: tuple[str, str, int] | None = None  # (marker, info, first line)
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        if fence is None:
            opening = re.match(r"(`{3,}|~{3,})\s*([\w+-]*)", stripped)
            if opening:
                fence, body = (opening[1], opening[2].lower(), number + 1), []
            else:
                prose.append((number, line))
        elif stripped.startswith(fence[0]) and not stripped[len(fence[0]) :].strip():
            fences.append(Fence(fence[1], fence[2], tuple(body)))
            fence = None
        else:
            body.append(line)
    return prose, fences


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text as rendered (code, emphasis and links reduced to their text),
    lowercased, punctuation other than - and _ removed, each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"(?<!\w)_+|_+(?!\w)", "", text)  # _emphasis_, not snake_case
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    counts: dict[str, int] = {}
    for _, line in prose:
        heading = re.match(r" {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = github_slug(heading[1])
        seen = counts.get(slug, 0)
        counts[slug] = seen + 1
        found.add(slug if seen == 0 else f"{slug}-{seen}")
    found |= {match for _, line in prose for match in re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", line)}
    return found


LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")


def links(path: Path) -> Iterator[tuple[int, str]]:
    """(line, target) of every link and image of the file's prose, code spans left out."""
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    for number, line in prose:
        reference = REFERENCE_LINK.match(line)
        if reference:
            yield number, reference[1]
            continue
        without_code = re.sub(r"(`+).+?\1", "", line)
        for match in LINK.finditer(without_code):
            yield number, match[1]


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    own = path.relative_to(root).as_posix()
    for number, target in links(path):
        if not target or re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # an absolute URL (https:, mailto:): not the repository's to check
        file_part, _, anchor = target.partition("#")
        destination = path if not file_part else (path.parent / file_part).resolve()
        where = f"{own}:{number}: {target}"
        if not destination.is_relative_to(root.resolve()):
            problems.append(f"{where}: points outside the repository")
            continue
        if not destination.exists():
            problems.append(f"{where}: {destination.relative_to(root.resolve())} does not exist")
            continue
        if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            problems.append(f"{where}: no heading of {destination.name} has the anchor #{anchor}")
    return problems


def test_the_markdown_files_are_found() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in markdown_files()}
    for expected in (
        "README.md",
        "CONTRIBUTING.md",
        "CHANGELOG.md",
        "docs/getting-started.md",
        "docs/reference/config.md",
    ):
        assert expected in names


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    problems = broken_links(path)
    assert not problems, "broken links (fix the target, or the heading it points at):\n" + "\n".join(problems)


def test_a_broken_link_or_anchor_is_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text(
        "# Other page\n## The `mlgate ci` run: what it does\n## Again\n## Again\n"
    )
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n"
        "[ok](other.md#the-mlgate-ci-run-what-it-does) [dup](other.md#again-1) [self](#page)\n"
        "[gone](missing.md) [bad anchor](other.md#nothing-here) [bad self](#nope)\n"
        "`[in code](missing-too.md)` [web](https://example.com/missing)\n"
        "```sh\n[in a block](missing-three.md)\n```\n"
        "[outside](../../etc/passwd)\n",
        encoding="utf-8",
    )
    problems = broken_links(page, tmp_path)
    assert len(problems) == 4, problems
    assert "docs/page.md:3: missing.md: docs/missing.md does not exist" in problems
    assert any("#nothing-here" in problem for problem in problems)
    assert any("#nope" in problem for problem in problems)
    assert any("points outside the repository" in problem for problem in problems)


def test_github_slugs() -> None:
    assert github_slug("Reusable workflow `ml-release.yml`") == "reusable-workflow-ml-releaseyml"
    assert github_slug("Set up the repository: `mlgate github setup`") == "set-up-the-repository-mlgate-github-setup"
    assert github_slug("`mlgate/mlgate@v1` (root: set up mlgate)") == "mlgatemlgatev1-root-set-up-mlgate"
    assert github_slug("`model_tests`") == "model_tests"
    assert github_slug("Every GPU, and several runners (`train.distributed`)") == (
        "every-gpu-and-several-runners-traindistributed"
    )


# --------------------------------------------------------------------------- `mlgate` commands in code blocks


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Each subcommand's parser, built as `mlgate` builds it (mlgate.cli.COMMANDS, each module's add_arguments)."""
    parsers = {}
    for name, (module_name, _) in COMMANDS.items():
        parser = argparse.ArgumentParser(prog=f"mlgate {name}")
        import_module(f"mlgate.commands.{module_name}").add_arguments(parser)
        parsers[name] = parser
    return parsers


PARSERS = command_parsers()


def shown_commands(fence: Fence) -> Iterator[tuple[int, list[str]]]:
    """(line, words) of each `mlgate ...` a shell block shows: at the start of a line (after `$ ` or
    variable assignments) or after `&&`, `||`, `;` or `|`. Continued lines (`\\`) are joined."""
    joined: list[tuple[int, str]] = []
    for offset, line in enumerate(fence.lines):
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line.strip())
        else:
            joined.append((fence.first_line + offset, line.strip()))
    for number, line in joined:
        if fence.info in SESSION_FENCES and not line.startswith("$ "):
            continue  # a terminal session: the lines without a prompt are output
        lexer = shlex.shlex(line.removeprefix("$ "), posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        try:
            words = list(lexer)
        except ValueError:
            continue  # not shell (a line of output with an open quote)
        command: list[str] = []
        for word in [*words, ";"]:
            if word.strip(";&|"):
                command.append(word)
                continue
            while command and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", command[0]):
                command.pop(0)  # NAME=value mlgate ...
            if command and command[0] == "mlgate":
                yield number, command
            command = []


def _option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return dict(parser._option_string_actions)


def command_problems(words: list[str]) -> list[str]:
    """What in `mlgate ...` (its words) does not exist: the command, an operation, an option."""
    if len(words) < 2 or words[1] in ("--help", "-h", "--version"):
        return []
    name = words[1]
    if name not in PARSERS:
        return [f"`mlgate {name}` is no command (mlgate.cli.COMMANDS: {', '.join(COMMANDS)})"]
    parser = PARSERS[name]
    problems: list[str] = []
    positionals = [action for action in parser._actions if not action.option_strings]
    words = [re.sub(r"^\[+|\]+$", "", word) for word in words[2:]]  # [--json]: an optional part, as usage shows it
    skip = 0
    for index, word in enumerate(words):
        if skip:
            skip -= 1
            continue
        if word == "--":
            break  # the rest belongs to another program (pytest's arguments)
        if word.startswith("-") and word != "-":
            option = word.split("=", 1)[0]
            action = _option_actions(parser).get(option)
            if action is None:
                if option.startswith("--"):
                    problems.append(f"`{parser.prog}` has no option {option}")
                continue
            if "=" not in word and action.nargs != 0:
                skip = 1
            continue
        if not positionals:
            continue
        action = positionals[0]
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(word)
            if chosen is None:
                problems.append(f"`{parser.prog}` has no {word!r} (one of: {', '.join(action.choices)})")
                break
            parser = chosen
            positionals = [inner for inner in parser._actions if not inner.option_strings]
            continue
        if action.choices is not None and word not in action.choices and "..." not in word:
            problems.append(f"`{parser.prog}`: {word!r} is not one of {', '.join(map(str, action.choices))}")
        if action.nargs not in ("*", "+", argparse.REMAINDER):
            positionals = positionals[1:]
    return problems


def wrong_commands(path: Path, root: Path = ROOT) -> list[str]:
    _, fences = split_markdown(path.read_text(encoding="utf-8"))
    problems = []
    for fence in fences:
        if fence.info not in SHELL_FENCES:
            continue
        for number, words in shown_commands(fence):
            problems += [
                f"{path.relative_to(root).as_posix()}:{number}: {problem}" for problem in command_problems(words)
            ]
    return problems


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_mlgate_command_shown_exists(path: Path) -> None:
    problems = wrong_commands(path)
    assert not problems, "commands that do not exist (see `mlgate COMMAND --help`):\n" + "\n".join(problems)


def test_the_commands_the_getting_started_guide_shows_are_read() -> None:
    _, fences = split_markdown((ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8"))
    shown = {words[1] for fence in fences if fence.info in SHELL_FENCES for _, words in shown_commands(fence)}
    assert {"check", "ci", "github"} <= shown, shown


def test_a_command_that_does_not_exist_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```sh\n"
        "mlgate check                              # fine\n"
        "$ mlgate registry promote --tracking-uri sqlite:///mlflow.db\n"
        "cd project && mlgate validate-data --drift-current production\n"
        "MLFLOW_TRACKING_URI=x mlgate traffic status [--json]\n"
        "mlgate test-model --model models:/m-1 -- -k latency --whatever\n"
        "mlgate deploy --now                       # no such command\n"
        "mlgate registry publish                   # no such operation\n"
        "cd x && mlgate train --gpus 2             # no such option\n"
        "mlgate github setup --reviewer you \\\n"
        "  --aply\n"
        "mlgate github teardown\n"
        "```\n"
        "```yaml\nrun: mlgate deploy\n```\n"
        "```console\n$ mlgate check --strict\nmlgate check: mlgate.yaml OK\n```\n",
        encoding="utf-8",
    )
    problems = wrong_commands(page, tmp_path)
    assert problems == [
        "page.md:7: `mlgate deploy` is no command (mlgate.cli.COMMANDS: " + ", ".join(COMMANDS) + ")",
        "page.md:8: `mlgate registry`: 'publish' is not one of register, promote, rollback, status, history",
        "page.md:9: `mlgate train` has no option --gpus",
        "page.md:10: `mlgate github setup` has no option --aply",
        "page.md:12: `mlgate github` has no 'teardown' (one of: setup)",
        "page.md:18: `mlgate check` has no option --strict",
    ], problems
