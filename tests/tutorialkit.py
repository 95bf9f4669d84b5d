"""The README's tutorial as commands, and one bash script that runs them as a user would.

README.md marks each ```bash block of its tutorial with ``<!-- tutorial -->`` on the line
before it. :func:`tutorial_commands` splits those blocks into commands (a heredoc or a
``\\``-continued line stays one command); :func:`tutorial_script` writes them into one bash
script, so ``cd``, ``export`` and a background job carry from one command to the next as
in the user's shell, and records each command's exit code, stdout and stderr in a folder
of their own. The unit test checks the script's shape without a broker;
``tests/integration/test_tutorial.py`` runs it against the session's broker.

Imported as a top-level module (``from tutorialkit import ...``): the session's conftest
puts ``tests/`` on the path.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BROKER_COMMANDS",
    "MARK",
    "Command",
    "CommandResult",
    "read_results",
    "tutorial_commands",
    "tutorial_script",
]

MARK = "<!-- tutorial -->"
#: Commands that start or stop a local broker. The tests run the tutorial against the
#: session's broker (``RIVERLINE_BOOTSTRAP``), so the script leaves these out.
BROKER_COMMANDS = ("riverline kafka up", "riverline kafka down")
_BLOCK = re.compile(re.escape(MARK) + r"\n```bash\n(.*?)^```", re.M | re.S)
_HEREDOC = re.compile(r"<<-?\s*'?\"?(\w+)'?\"?")


@dataclass(frozen=True)
class Command:
    """One command of the tutorial, as the README writes it (a heredoc's body included)."""

    index: int
    text: str

    @property
    def head(self) -> str:
        """The first line, without its comment."""
        return self.text.splitlines()[0].split(" #")[0].strip()

    @property
    def background(self) -> bool:
        return self.head.endswith("&") and not self.head.endswith("&&")

    @property
    def starts_or_stops_a_broker(self) -> bool:
        return self.head.startswith(BROKER_COMMANDS)

    def words(self) -> list[str]:
        """The first line split as the shell would (without a trailing ``&``)."""
        return shlex.split(self.head.rstrip("&"))


@dataclass(frozen=True)
class CommandResult:
    """What one command of the script did."""

    command: Command
    code: int
    stdout: str
    stderr: str


def _split(block: str) -> list[str]:
    lines = block.splitlines()
    commands: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [line]
        while parts[-1].endswith("\\") and i < len(lines):
            parts.append(lines[i])
            i += 1
        heredoc = _HEREDOC.search(line.split(" #")[0])
        if heredoc is not None:
            while i < len(lines) and lines[i].strip() != heredoc.group(1):
                parts.append(lines[i])
                i += 1
            parts.append(lines[i])
            i += 1
        commands.append("\n".join(parts))
    return commands


def tutorial_commands(readme: str) -> list[Command]:
    """The commands of every ``<!-- tutorial -->`` block of ``readme``, in order."""
    texts = [text for block in _BLOCK.findall(readme) for text in _split(block)]
    return [Command(index, text) for index, text in enumerate(texts)]


def tutorial_script(commands: list[Command], out: Path) -> str:
    """A bash script that runs ``commands`` and keeps what each did under ``out``.

    It stops at the first command that fails. Background jobs are waited for at the end
    (their exit codes in ``out/background.rc``), and stopped first if the script did not
    get there. ``out/cwd`` is the folder the tutorial ended in.
    """
    folder = shlex.quote(str(out))
    lines = [
        "#!/usr/bin/env bash",
        f"trap '[ -f {folder}/finished ] || kill $(cat {folder}/background.pids 2>/dev/null) "
        "2>/dev/null; wait' EXIT",
    ]
    for command in commands:
        if command.starts_or_stops_a_broker:
            lines.append(f"# left out, the session's broker is used: {command.head}")
            continue
        name = f"{folder}/{command.index}"
        lines += [
            "{ " + command.text,
            f"}} > {name}.out 2> {name}.err",
            f"rc=$?; echo $rc > {name}.rc; [ $rc -eq 0 ] || exit $rc",
        ]
        if command.background:
            lines.append(f"echo $! >> {folder}/background.pids")
    lines += [
        f"pwd > {folder}/cwd",
        f"for pid in $(cat {folder}/background.pids 2>/dev/null); do",
        f"  wait $pid; echo $? >> {folder}/background.rc",
        "done",
        f"touch {folder}/finished",
    ]
    return "\n".join(lines) + "\n"


def read_results(commands: list[Command], out: Path) -> list[CommandResult]:
    """What each command that ran did (commands the script did not reach are left out)."""
    results = []
    for command in commands:
        code = out / f"{command.index}.rc"
        if code.exists():
            results.append(
                CommandResult(
                    command,
                    int(code.read_text()),
                    (out / f"{command.index}.out").read_text(),
                    (out / f"{command.index}.err").read_text(),
                )
            )
    return results
