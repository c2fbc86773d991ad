"""The code in README.md and docs/*.md runs as written.

Convention: every ```python block runs (the blocks of one file in order, in one namespace, in a
temporary working directory); a ```python no-run block is shown only. In ```bash blocks every line
that starts with ``spiking `` is parsed (not run) by the CLI's own argument parser.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)\s*(.*)$")


def blocks(text: str) -> list[tuple[str, str, int, str]]:
    """(language, flags, first line number, code) of every fenced block."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i].strip())
        if m and m.group(1):
            start, body = i + 1, []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            out.append((m.group(1), m.group(2).strip(), start + 1, "\n".join(body) + "\n"))
        i += 1
    return out


def cli_lines(code: str) -> list[list[str]]:
    """argv (without the program name) of every ``spiking ...`` command, continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [shlex.split(line, comments=True)[1:] for line in joined.splitlines()
            if line.strip().startswith("spiking ")]


def parse_cli(argv: list[str]):
    """Parse argv with ``spiking.cli.build_parser`` (given the ``--method`` when it takes one)."""
    from spiking import cli
    params = inspect.signature(cli.build_parser).parameters
    method = argv[argv.index("--method") + 1] if "--method" in argv[:-1] else None
    parser = cli.build_parser(method) if params else cli.build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`spiking {' '.join(argv)}` does not parse: {err.getvalue().strip()}") from exc


def run_python_blocks(path: Path, workdir: Path, monkeypatch) -> dict:
    """Execute the ```python blocks of ``path`` in order in one namespace inside ``workdir``."""
    monkeypatch.chdir(workdir)
    ns = {"__name__": f"doc_{path.stem}"}
    for lang, flags, line, code in blocks(path.read_text()):
        if lang != "python" or "no-run" in flags.split():
            continue
        exec(compile("\n" * (line - 1) + code, str(path), "exec"), ns)  # noqa: S102 (the docs' own code)
    return ns


def test_block_parser_sees_runnable_and_skipped_blocks():
    text = "x\n```python\na = 1\n```\n```python no-run\nb = 2\n```\n```bash\nspiking run --tasks 2 \\\n  --out r  # c\n```\n"
    found = blocks(text)
    assert [(b[0], b[1], b[2]) for b in found] == [("python", "", 3), ("python", "no-run", 6), ("bash", "", 9)]
    assert cli_lines(found[2][3]) == [["run", "--tasks", "2", "--out", "r"]]


def test_cli_parser_rejects_a_bad_command_line():
    with pytest.raises(AssertionError, match="does not parse"):
        parse_cli(["run", "--tasks", "zero"])


@pytest.mark.parametrize("path", DOCS, ids=[p.relative_to(ROOT).as_posix() for p in DOCS])
def test_doc_code_runs(path, tmp_path, monkeypatch):
    ns = run_python_blocks(path, tmp_path, monkeypatch)
    for lang, _flags, _line, code in blocks(path.read_text()):
        if lang in ("bash", "sh", "console"):
            for argv in cli_lines(code):
                parse_cli(argv)
    if path.name == "README.md":  # the LIF snippet must show spikes, not a silent layer
        assert float(ns["spikes"].sum()) > 0


def test_tutorials_have_code_and_readme_has_cli_lines():
    tutorials = sorted((ROOT / "docs").glob("tutorial-*.md"))
    assert len(tutorials) >= 4
    for path in tutorials:
        assert any(b[0] == "python" for b in blocks(path.read_text())), f"{path} has no python block"
    readme = blocks((ROOT / "README.md").read_text())
    assert any(lang == "python" and "no-run" not in flags for lang, flags, _, _ in readme)
    assert any(cli_lines(code) for lang, _, _, code in readme if lang == "bash")


def test_no_reference_to_files_outside_the_repository():
    pattern = re.compile(r"shared/notes|\.\./shared")
    roots = [ROOT / d for d in ("spiking", "docs", "examples", "bench", "tests")]
    files = [ROOT / "README.md"] + [p for r in roots for p in r.rglob("*")
                                    if p.suffix in (".py", ".md", ".cu", ".cuh", ".cpp", ".c", ".h")]
    offenders = [str(p.relative_to(ROOT)) for p in files
                 if p != Path(__file__).resolve() and pattern.search(p.read_text(errors="replace"))]
    assert offenders == []
