"""Every shell and Python example of README.md runs, as printed, against a real server
(issues 10 and 12).

Each fenced ```bash / ```sh block is run with `bash` (`set -euo pipefail`) in README
order, in one temporary working directory whose `data/` is the DATA_DIR of one real
`tfstorage serve` process (first start: it writes `data/admin.token` and `data/admin.s3`,
as for a user), with its S3 endpoint on. A ```python block is run by `python -` in the
same shell, as a user pastes it into a terminal. The blocks are one terminal session:
files and exported variables of earlier blocks are there for later ones (`$AUTH` of the
first walk, `AWS_SHARED_CREDENTIALS_FILE` of the S3 tools). Running a single block with
`-k` therefore runs it without what the earlier blocks made.

What differs from a user's terminal, and nothing else:
- the server listens on free ports, not 8083 and 9000 (a user's own `make serve` may hold
  them): the literal `127.0.0.1:8083` and `localhost:8083` in a block are rewritten to the
  REST port, `127.0.0.1:9000` and `localhost:9000` to the S3 port, and `TFSTORAGE_URL`
  (the CLI's documented variable) names the REST port;
- the developer's own AWS, MLflow and rclone variables are not passed on, and DVC's and
  MLflow's usage reports are off (`DVC_NO_ANALYTICS`, `DO_NOT_TRACK`);
- `tfstorage` is the project's CLI: the running interpreter's bin directory comes first
  on PATH;
- a block preceded by `<!-- readme-test: aiobotocore-venv -->` (s3fs, DVC) runs with the bin
  directory of `.venv-aiobotocore` (made by `make test`) before that: those tools pin an
  older botocore than the test venv's boto3, so, as the README tells users, they live in an
  environment of their own;
- `curl` is wrapped to add `--fail-with-body`, so an example whose request the server
  refuses fails here (curl itself exits 0 on a 401). An example that shows the status it
  gets (`-i`, `-I`, `-w`, or `-f` itself) is left alone: it may show a refusal on purpose.

A block preceded (on the previous non-blank line) by `<!-- readme-test: skip (reason) -->`
is not run; the reason is reported as the skip's message, and a marker without a reason
(or any other marker) fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import botocore
import pytest

from tests.s3clients.tools_venv import tools_bin
from tests.server.conftest import ServerProcess

pytestmark = pytest.mark.server

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK_TIMEOUT = 90.0
SHELLS = ("bash", "sh")
RUNNABLE = (*SHELLS, "python")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,})\s*(?P<info>[^`]*?)\s*$")
_SKIP = re.compile(r"^\s*<!--\s*readme-test:\s*skip\b\s*(?:\((?P<reason>.*)\))?\s*-->\s*$")
_AIOBOTOCORE_VENV = re.compile(r"^\s*<!--\s*readme-test:\s*aiobotocore-venv\s*-->\s*$")
_ANY_MARKER = re.compile(r"<!--\s*readme-test:")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    skip: str | None  # None: run it; "": a skip marker without a reason
    aiobotocore_venv: bool = False  # run with .venv-aiobotocore first on PATH (s3fs, DVC)


def shell_blocks(markdown: str) -> list[Block]:
    """The fenced bash/sh/python blocks, dedented by their fence's indent (list items)."""
    blocks: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, ticks = opening["indent"], opening["ticks"]
        lang = opening["info"].split()[0].lower() if opening["info"] else ""
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != ticks:
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        if lang in RUNNABLE:
            text = "\n".join(body) + "\n"
            marker = _marker(lines, i)
            if marker is not None and _AIOBOTOCORE_VENV.match(marker):
                blocks.append(Block(i + 1, lang, text, None, aiobotocore_venv=True))
            else:
                blocks.append(Block(i + 1, lang, text, _skip_reason(marker)))
        i = j + 1
    return blocks


def _marker(lines: list[str], fence: int) -> str | None:
    """The readme-test marker on the last non-blank line before the fence, if any."""
    k = fence - 1
    while k >= 0 and not lines[k].strip():
        k -= 1
    return lines[k] if k >= 0 and _ANY_MARKER.search(lines[k]) else None


def _skip_reason(marker: str | None) -> str | None:
    if marker is None:
        return None
    skip = _SKIP.match(marker)
    return (skip["reason"] or "").strip() if skip else ""


def _rewrite_port(text: str, port: int, s3_port: int) -> str:
    # Only the literal addresses of the README's default server; nothing else is rewritten.
    for host in ("127.0.0.1", "localhost"):
        text = text.replace(f"{host}:8083", f"{host}:{port}")
        text = text.replace(f"{host}:9000", f"{host}:{s3_port}")
    return text


_PYTHON_END = "__README_PYTHON_BLOCK__"


def _as_shell(block: Block) -> str:
    """A Python block as a user runs it from the terminal: pasted into `python -`."""
    if block.lang != "python":
        return block.text
    assert _PYTHON_END not in block.text
    return f"python - <<'{_PYTHON_END}'\n{block.text}{_PYTHON_END}\n"


_CURL_WRAPPER = """#!/usr/bin/env bash
# README test: a request the server refuses fails the example, unless the example
# shows the status itself (-i, -I, -w) or already asks curl to fail (-f).
for arg in "$@"; do
  case "$arg" in
    --include|--head|--write-out|--write-out=*|--fail|--fail-with-body) exec {curl} "$@" ;;
    --*) ;;
    -*[iIwf]*) exec {curl} "$@" ;;
  esac
done
exec {curl} --fail-with-body "$@"
"""

# Runs one block; on success saves the shell variables it (or an earlier block) set, so
# the next block starts where a user's terminal would be.
_PRELUDE = """set -euo pipefail
__tfs_base=" $(compgen -v | tr '\\n' ' ') "
__tfs_save() {
  local v
  for v in $(compgen -v); do
    case "$__tfs_base" in *" $v "*) continue ;; esac
    case "$v" in __tfs_* | BASH* | FUNCNAME | PIPESTATUS | _) continue ;; esac
    declare -p "$v"
  done > "$README_TEST_STATE"
}
trap '[[ $? == 0 ]] && __tfs_save' EXIT
if [[ -f "$README_TEST_STATE" ]]; then source "$README_TEST_STATE"; fi
"""


@dataclass
class Session:
    server: ServerProcess
    workdir: Path
    env: dict[str, str]

    def run(self, block: Block) -> subprocess.CompletedProcess[str]:
        script = _PRELUDE + _rewrite_port(_as_shell(block), self.server.port, self.server.s3_port)
        env = self.env
        if block.aiobotocore_venv:
            env = {**env, "PATH": os.pathsep.join([str(tools_bin()), env["PATH"]])}
        return subprocess.run(
            ["bash", "-c", script],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    root = tmp_path_factory.mktemp("readme")
    workdir, shims, home = root / "work", root / "shims", root / "home"
    for d in (workdir, shims, home):
        d.mkdir()
    real_curl = shutil.which("curl")
    assert real_curl, "the README's examples need curl on PATH"
    wrapper = shims / "curl"
    wrapper.write_text(_CURL_WRAPPER.replace("{curl}", real_curl))
    wrapper.chmod(0o755)
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "tfstorage").exists(), f"no tfstorage CLI beside {sys.executable}"

    # ADMIN_TOKEN empty: the first start writes data/admin.token, as on a user's machine.
    server = ServerProcess(workdir / "data", {"ADMIN_TOKEN": "", "S3_PORT": "auto"}, log_dir=root)
    server.start()
    own = ("TFSTORAGE_", "AWS_", "MLFLOW_", "RCLONE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    env.pop("DATA_DIR", None)  # ./data, the README's default, is the server's
    env.update(
        PATH=os.pathsep.join([str(shims), str(venv_bin), env.get("PATH", "")]),
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        TFSTORAGE_URL=server.base_url,
        README_TEST_STATE=str(root / "shell-state.sh"),
        DVC_NO_ANALYTICS="1",
        DO_NOT_TRACK="true",
    )
    yield Session(server, workdir, env)
    server.stop()


BLOCKS = shell_blocks(README.read_text())


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.line}" for b in BLOCKS])
def test_readme_example(block: Block, session: Session) -> None:
    where = f"README.md line {block.line} (```{block.lang})"
    if block.skip == "":
        pytest.fail(f"{where}: a readme-test skip marker needs a reason: skip (why)")
    if block.skip is not None:
        pytest.skip(f"{where} not run: {block.skip}")
    try:
        result = session.run(block)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{where} did not finish in {BLOCK_TIMEOUT:.0f} s; output:\n{exc.output}")
    assert result.returncode == 0, (
        f"{where} failed with exit status {result.returncode}\n"
        f"--- the block (ports rewritten to {session.server.port}, {session.server.s3_port}) ---\n"
        f"{block.text}"
        f"--- its stdout ---\n{result.stdout[-6000:]}\n--- its stderr ---\n{result.stderr[-6000:]}\n"
        f"--- server log ---\n{session.server.log_tail(3000)}"
    )


def test_the_readme_has_shell_examples() -> None:
    assert len([b for b in BLOCKS if b.skip is None]) >= 5


def test_the_s3_tools_are_all_shown() -> None:
    """Issue 12: each tool of "Use it from S3 tools" has an example this test runs."""
    text = README.read_text()
    section = text[text.index("## Use it from S3 tools") :]
    section = section[: section.index("\n## ", 1)]
    run = "".join(b.text for b in shell_blocks(section) if b.skip is None)
    for tool in ("aws --endpoint-url", "boto3.client(", "s3fs.S3FileSystem(", "rclone copy"):
        assert tool in run, tool
    for tool in ("MLFLOW_S3_ENDPOINT_URL", "mlflow.log_artifact(", "dvc push", "dvc pull"):
        assert tool in run, tool


def test_a_python_block_runs_in_the_session(session: Session) -> None:
    """Python blocks see what the shell blocks exported, and a failing one fails."""
    ok = Block(0, "python", "import os\nassert os.environ['README_TEST_STATE']\n", None)
    assert session.run(ok).returncode == 0
    failing = Block(0, "python", "raise SystemExit(3)\n", None)
    assert session.run(failing).returncode == 3


def test_s3fs_and_dvc_blocks_run_in_their_own_venv(session: Session) -> None:
    """The boto3 example runs on the test venv's (current) botocore; a block marked
    aiobotocore-venv finds s3fs and dvc, on the older botocore aiobotocore pins."""
    probe = "import sys, botocore; print(sys.prefix, botocore.__version__)\n"
    main = session.run(Block(0, "python", probe, None))
    assert main.returncode == 0, main.stderr
    assert main.stdout.split() == [sys.prefix, botocore.__version__]
    tools = session.run(Block(0, "python", "import s3fs\n" + probe, None, aiobotocore_venv=True))
    assert tools.returncode == 0, tools.stderr
    prefix, version = tools.stdout.split()
    assert Path(prefix).resolve() == tools_bin().parent.resolve()
    assert version != botocore.__version__
    dvc = session.run(Block(0, "bash", "command -v dvc\n", None, aiobotocore_venv=True))
    assert dvc.stdout.strip() == str(tools_bin() / "dvc")


def test_every_shell_example_is_fenced_to_run() -> None:
    # A shell example under another fence (console, shell, zsh) would escape this test.
    other_shells = [
        (number, fence.strip())
        for number, fence in enumerate(README.read_text().splitlines(), 1)
        if re.fullmatch(r"\s*`{3,}\s*(console|shell|shell-session|zsh|fish)\b.*", fence)
    ]
    assert other_shells == [], f"shell examples fenced so they never run: {other_shells}"


def test_blocks_markers_and_fences_are_read_as_written() -> None:
    markdown = "\n".join(
        [
            "```bash",
            "echo one",
            "```",
            "<!-- readme-test: skip (needs docker) -->",
            "",
            "```sh",
            "docker compose up",
            "```",
            "- a list item:",
            "",
            "  ```bash",
            "  echo indented",
            "  ```",
            "<!-- readme-test: skip -->",
            "```bash",
            "echo no reason",
            "```",
            "```python",
            "print('not shell')",
            "```",
            "```console",
            "$ not run either",
            "```",
            "<!-- readme-test: aiobotocore-venv -->",
            "```python",
            "import s3fs",
            "```",
            "<!-- readme-test: aiobotocore -->",
            "```bash",
            "dvc push",
            "```",
        ]
    )
    blocks = shell_blocks(markdown)
    assert [(b.line, b.lang, b.text, b.skip, b.aiobotocore_venv) for b in blocks] == [
        (1, "bash", "echo one\n", None, False),
        (6, "sh", "docker compose up\n", "needs docker", False),
        (11, "bash", "echo indented\n", None, False),
        (15, "bash", "echo no reason\n", "", False),
        (18, "python", "print('not shell')\n", None, False),
        (25, "python", "import s3fs\n", None, True),
        (29, "bash", "dvc push\n", "", False),
    ]
    assert _rewrite_port("curl http://127.0.0.1:8083/x localhost:8083 :8083 :9000", 9, 7) == (
        "curl http://127.0.0.1:9/x localhost:9 :8083 :9000"
    )
    assert _rewrite_port("--endpoint-url http://127.0.0.1:9000 localhost:9000", 9, 7) == (
        "--endpoint-url http://127.0.0.1:7 localhost:7"
    )


def test_a_request_the_server_refuses_fails_its_example(session: Session) -> None:
    """Without a token the server answers 401, and plain curl would still exit 0."""
    refused = Block(0, "bash", "curl -s http://127.0.0.1:8083/api/v1/buckets\n", None)
    result = session.run(refused)
    assert result.returncode == 22 and '"code":"Unauthenticated"' in result.stdout
    shown = Block(0, "bash", "curl -s -i http://127.0.0.1:8083/api/v1/buckets\n", None)
    result = session.run(shown)
    assert result.returncode == 0 and "401 Unauthorized" in result.stdout
