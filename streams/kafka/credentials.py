"""The secure local broker's passwords, kept private.

Each principal's password comes from ``settings.kafka_<principal>_password`` or, if that
is unset, is generated once, when the data dir is formatted, into ``credentials.json``
(mode 0600) beside the broker's data. SCRAM credentials reach Kafka's ``StorageTool``
through a private argument file, never a command line, and are hidden in what the tool
prints.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import SecretStr

from streams.errors import KafkaSetupError
from streams.kafka.auth import MECHANISM, PRINCIPALS
from streams.kafka.server_properties import BROKER_PRINCIPAL
from streams.settings import Settings

__all__ = [
    "BrokerCredentials",
    "argfile_text",
    "java_argfile",
    "redact_scram",
    "write_private",
]

_CREDENTIALS_FILE = "credentials.json"
_SCRAM_ITERATIONS = 8192


class BrokerCredentials:
    """The password of every principal of the secure broker keeping its data in ``data_dir``."""

    def __init__(self, settings: Settings, data_dir: Path) -> None:
        self._settings = settings
        self._data_dir = data_dir

    @property
    def path(self) -> Path:
        """The generated passwords (JSON, mode 0600)."""
        return self._data_dir / _CREDENTIALS_FILE

    def passwords(self) -> dict[str, SecretStr]:
        """The password of each principal of this secure broker, by principal name.

        ``settings.kafka_<principal>_password`` where set, else the one generated at
        format time into :attr:`path`.
        """
        stored = self._stored()
        passwords: dict[str, SecretStr] = {}
        for principal in (*PRINCIPALS, BROKER_PRINCIPAL):
            configured = getattr(self._settings, f"kafka_{principal}_password", None)
            if isinstance(configured, SecretStr):
                passwords[principal] = configured
            elif principal in stored:
                passwords[principal] = SecretStr(stored[principal])
            else:
                raise KafkaSetupError(
                    f"no password for the Kafka principal '{principal}' of the secure broker "
                    f"in {self._data_dir}: {self.path} does not name it, so it "
                    f"was set with RIVERLINE_KAFKA_{principal.upper()}_PASSWORD when the "
                    f"broker was formatted. Set that variable again."
                )
        return passwords

    def _stored(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise KafkaSetupError(
                f"cannot read {self.path}: {type(exc).__name__}. Restore it, or "
                f"remove {self._data_dir} to start over with a new secure broker."
            ) from exc
        generated = data.get("generated", {})
        return {str(k): str(v) for k, v in generated.items()}

    def ensure(self, log: Callable[[str], None]) -> None:
        """Before a first format: generate the passwords settings do not give (0600 file)."""
        stored = self._stored()
        generated = dict(stored)
        for principal in (*PRINCIPALS, BROKER_PRINCIPAL):
            configured = getattr(self._settings, f"kafka_{principal}_password", None)
            if configured is None and principal not in generated:
                generated[principal] = secrets.token_urlsafe(24)
        if generated != stored or not self.path.exists():
            document = {"mechanism": MECHANISM, "generated": generated}
            write_private(self.path, json.dumps(document, indent=2) + "\n")
        named = sorted(set(generated) - {BROKER_PRINCIPAL})
        if named:
            log(f"generated Kafka passwords for {', '.join(named)} in {self.path} (mode 0600)")

    def scram_arguments(self) -> list[str]:
        """``--add-scram`` options with salted credentials (RFC 5802).

        A salted password logs in as well as the password itself, so these go to
        ``StorageTool`` through an argument file (:func:`java_argfile`), never on a
        command line.
        """
        arguments: list[str] = []
        for principal, password in self.passwords().items():
            salt = os.urandom(16)
            salted = hashlib.pbkdf2_hmac(
                "sha256", password.get_secret_value().encode(), salt, _SCRAM_ITERATIONS
            )
            arguments += [
                "--add-scram",
                f"{MECHANISM}=[name={principal},iterations={_SCRAM_ITERATIONS},"
                f'salt="{base64.b64encode(salt).decode()}",'
                f'saltedpassword="{base64.b64encode(salted).decode()}"]',
            ]
        return arguments


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read (it may hold passwords)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)  # an older file keeps its mode through O_CREAT
        fh.write(text)


@contextlib.contextmanager
def java_argfile(path: Path, arguments: list[str]) -> Iterator[str]:
    """Write ``arguments`` (a main class and its arguments) to a private ``@argfile``.

    Yields the ``@path`` argument for the ``java`` launcher, which reads the file in its
    own process. It expands an ``@argfile`` only before the main class, so the main class
    goes in the file too. The file is removed when the block ends.
    """
    write_private(path, argfile_text(arguments))
    try:
        yield f"@{path}"
    finally:
        path.unlink(missing_ok=True)


def argfile_text(arguments: list[str]) -> str:
    r"""One argument per line, double-quoted, as the ``java`` launcher reads an argfile.

    Inside double quotes it takes ``\\`` and ``\"`` as escapes; a line break cannot be
    written, so an argument with one is refused.

    Examples
    --------
    >>> print(argfile_text(["Main", 'a "b" c', "C:\\x"]), end="")
    "Main"
    "a \"b\" c"
    "C:\\x"
    """
    lines = []
    for argument in arguments:
        if "\n" in argument or "\r" in argument:
            raise KafkaSetupError("an argument with a line break cannot go in a java argfile")
        escaped = argument.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'"{escaped}"\n')
    return "".join(lines)


def redact_scram(text: str) -> str:
    """``text`` with the (salted) passwords and salts of SCRAM options hidden.

    Examples
    --------
    >>> redact_scram('bad value [name=a,salt="c2FsdA==",saltedpassword="cHc="]')
    'bad value [name=a,salt="<hidden>",saltedpassword="<hidden>"]'
    """
    return re.sub(r'(salt|saltedpassword|password)=("[^"]*"|[^,\]\s]*)', r'\1="<hidden>"', text)
