"""One command-line shape for every job: its arguments, ``--config``, ``--print-config``, ``key=value``.

    python -m jobs.<job> [arguments] [--config FILE] [--print-config] [key=value ...]

Settings merge in this order, later winning: the dataclass defaults (:mod:`pipeline.config`) <
``conf/relabel.yaml`` < the ``--config`` file (a YAML of one's own, local path or URI) < ``key=value``
on the command line. Jobs that read a run's outputs put the publishing run's record between the
defaults and what is given (:mod:`pipeline.report.config`); a ``--config`` file counts as given there.

``--help`` prints the job's docstring (its exit codes included), its arguments and every setting it
takes as ``key (type, default): meaning``, generated from the config dataclasses: the meaning is the
field's entry in its class's ``Attributes:`` docstring section. It does nothing else: this module and
what it imports load neither Ray, torch, LeRobot nor PyAV, and jobs import those only after parsing.
``--print-config`` prints the resolved settings as YAML, secret storage options masked, and exits.

An expected failure (a bad argument or setting, an input not found, missing credentials) ends a job
with one line on stderr, ``<job>: <cause>``, and exit status 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import re
import sys
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from typing import Any

import yaml

from pipeline.config import ConfigError, read_config_file
from pipeline.storage import _SECRET_MARKERS

EXIT_OK = 0
EXIT_REFUSED = 2
MASK = "***"
_DEFAULT_WIDTH = 40  # longer defaults (the prompt texts) are cut in --help

# Exceptions raised where credentials are missing or refused, by class name: botocore, google-auth.
_CREDENTIAL_ERRORS = (
    "NoCredentialsError",
    "PartialCredentialsError",
    "DefaultCredentialsError",
    "RefreshError",
)


class Refused(Exception):
    """The job cannot run as asked (an expected failure); the message is the one line printed."""


class Exit(Exception):
    """The job ends here with ``code``: ``--help`` or ``--print-config`` done, or a refusal printed."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class Settings:
    """A config dataclass whose settings a job takes, as ``--help`` lists them.

    Attributes:
        schema: The dataclass (``RelabelConfig``, ``ReportJob``).
        sections: Only these top-level fields of it; None: all.
        title: The heading of the list.
    """

    schema: type
    sections: tuple[str, ...] | None = None
    title: str = "settings (key=value, or in a --config file)"


@dataclass(frozen=True)
class Command:
    """A parsed command line.

    Attributes:
        args: The job's own arguments.
        overrides: The ``--config`` file's entries, then the command line's ``key=value`` (later win).
        print_config: ``--print-config`` was given: print the resolved settings instead of running.
    """

    args: argparse.Namespace
    overrides: list[str]
    print_config: bool


class JobParser(argparse.ArgumentParser):
    """An argument parser whose ``--help`` lists the settings and whose errors are one line, exit 2."""

    def __init__(self, job: str, doc: str | None, settings: Sequence[Settings]) -> None:
        super().__init__(
            prog=f"python -m {job}",
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self.job = job
        self.settings = tuple(settings)
        self.add_argument(
            "--config",
            metavar="FILE",
            help="a YAML of settings (local path or URI): over the defaults, under key=value",
        )
        self.add_argument(
            "--print-config",
            action="store_true",
            help="print the resolved settings as YAML (secrets masked) and exit without running",
        )

    def format_help(self) -> str:
        """The usage, docstring and arguments, then every setting (generated only when asked for)."""
        if self.epilog is None:
            self.epilog = "\n\n".join(settings_help(item) for item in self.settings) or None
        return super().format_help()

    def exit(self, status: int = 0, message: str | None = None) -> typing.NoReturn:
        """Raise instead of exiting, so that ``main()`` returns the status."""
        if message:
            sys.stderr.write(message)
        raise Exit(status)

    def error(self, message: str) -> typing.NoReturn:
        """One line naming the problem, exit 2."""
        self.exit(EXIT_REFUSED, f"{self.job}: {message} (--help lists the arguments and settings)\n")


def job_parser(job: str, doc: str | None, *settings: Settings) -> JobParser:
    """A parser for ``python -m <job>``: add the job's own arguments, then call :func:`parse`.

    Args:
        job: the module, e.g. ``jobs.report``; starts every error line.
        doc: the module docstring, shown first by ``--help``.
        settings: the config dataclasses the job takes, listed by ``--help``.
    """
    return JobParser(job, doc, settings)


def parse(parser: JobParser, argv: Sequence[str] | None, overrides_help: str | None = None) -> Command:
    """Parse ``argv`` (``sys.argv[1:]`` when None): the job's arguments, ``--config``, ``key=value``.

    Raises:
        ConfigError: the ``--config`` file is missing, unreadable or not a mapping of settings.
    """
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help=overrides_help or "settings, as listed below (OmegaConf dotlist: frames.fps=4)",
    )
    args = parser.parse_intermixed_args(None if argv is None else list(argv))
    for item in args.overrides:
        if "=" not in item:
            parser.error(f"{item!r}: expected key=value (e.g. frames.fps=4)")
    entries = read_config_file(args.config) if args.config else []
    args.overrides = [*entries, *args.overrides]  # what was given, the command line last
    return Command(args, args.overrides, args.print_config)


def run_job(job: str, body: Callable[[], int]) -> int:
    """Run a job's ``body`` and return its exit status; an expected failure becomes one line and 2.

    Expected: :class:`Exit` (``--help`` 0, bad arguments 2), and what :func:`refusals` turns into one
    line. Anything else propagates (a traceback: a bug).
    """
    try:
        with refusals(job):
            return body()
    except Exit as done:
        return done.code


@contextmanager
def refusals(job: str) -> Iterator[None]:
    """Turn an expected failure inside the block into one line on stderr and ``Exit(2)``.

    Expected: :class:`pipeline.config.ConfigError`, :class:`Refused`, an input not found, a permission
    refused, missing credentials (:func:`expected_failure`). Anything else propagates.
    """
    try:
        yield
    except (ConfigError, Refused) as err:
        raise Exit(refuse(job, str(err))) from None
    except Exit:
        raise
    except Exception as err:
        cause = expected_failure(err)
        if cause is None:
            raise
        raise Exit(refuse(job, cause)) from None


def refuse(job: str, cause: str) -> int:
    """Print ``<job>: <cause>`` as one line on stderr and return the refused status (2)."""
    print(f"{job}: {' '.join(cause.split())}", file=sys.stderr, flush=True)
    return EXIT_REFUSED


def expected_failure(err: BaseException) -> str | None:
    """The one-line cause of an error a user can fix (input missing, access, credentials); else None."""
    names = {cls.__name__ for cls in type(err).__mro__}
    if names & set(_CREDENTIAL_ERRORS):
        return f"missing or refused credentials: {err} (environment, or *.storage_options)"
    if isinstance(err, FileNotFoundError):
        return f"not found: {err}"
    if isinstance(err, PermissionError):
        return f"permission denied: {err}"
    return None


@functools.cache
def field_help(schema: type) -> dict[str, str]:
    """Each field's one-line meaning, from the ``Attributes:`` section of ``schema``'s docstring."""
    doc = inspect.cleandoc(schema.__doc__ or "")
    section = re.search(r"^Attributes:\n((?:[ \t]+\S.*\n?|\n)+)", doc, re.MULTILINE)
    if section is None:
        return {}
    entries: dict[str, str] = {}
    name = None
    for line in section.group(1).splitlines():
        match = re.match(r"^ {4}(\w+): (.*)$", line)
        if match:
            name = match.group(1)
            entries[name] = match.group(2).strip()
        elif name and line.strip():
            entries[name] += " " + line.strip()
    return entries


def missing_help(schema: type, prefix: str = "") -> list[str]:
    """Dotted keys of fields of ``schema`` (and of its nested config dataclasses) with no help entry."""
    meanings = field_help(schema)
    hints = typing.get_type_hints(schema)
    missing = []
    for item in fields(schema):
        if item.name not in meanings:
            missing.append(f"{prefix}{item.name}")
        if is_dataclass(hints[item.name]):
            missing.extend(missing_help(hints[item.name], f"{prefix}{item.name}."))
    return missing


def settings_help(settings: Settings) -> str:
    """``settings`` as ``--help`` lists them: ``key (type, default): meaning``, a heading per section."""
    lines = [f"{settings.title}:"]
    lines.extend(_setting_lines(settings.schema, "", "  ", settings.sections))
    return "\n".join(lines)


def _setting_lines(schema: type, prefix: str, indent: str, only: tuple[str, ...] | None = None) -> list[str]:
    meanings, hints = field_help(schema), typing.get_type_hints(schema)
    lines = []
    for item in fields(schema):
        if only is not None and item.name not in only:
            continue
        key, meaning = f"{prefix}{item.name}", meanings.get(item.name, "")
        if is_dataclass(hints[item.name]):
            lines.append(f"{indent}{key}: {meaning}")
            lines.extend(_setting_lines(hints[item.name], f"{key}.", indent + "  "))
            continue
        default = item.default_factory() if item.default_factory is not MISSING else item.default
        lines.append(f"{indent}{key} ({_type_name(item.type)}, {_short(default)}): {meaning}")
    return lines


def _type_name(kind: Any) -> str:
    """A field's type as written in its class (``float``, ``list[str]``, ``str | None``)."""
    if isinstance(kind, str):  # postponed annotations: the text as written
        return kind
    return kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")


def _short(value: Any) -> str:
    text = format_value(value)
    return text if len(text) <= _DEFAULT_WIDTH else text[: _DEFAULT_WIDTH - 3] + "..."


def format_value(value: Any) -> str:
    """A value as it is typed after ``key=``: ``null``, ``true``, ``[s3://a]``, ``{}``, ``2.0``."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, Mapping | list | tuple | str):  # strings quoted where YAML needs it
        text = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
        return text.removesuffix("...").strip()
    return str(value)


def is_secret(name: str) -> bool:
    """Whether a setting or storage option is a secret, by its name (key, secret, token, password, ...)."""
    return any(marker in name.lower() for marker in _SECRET_MARKERS)


def masked(value: Any) -> Any:
    """``value`` (a config as plain data) with every secret-named entry's value replaced by ``***``."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, Mapping):
        return {k: MASK if is_secret(str(k)) else masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(v) for v in value]
    return value


def config_yaml(value: Any) -> str:
    """A config (dataclass or plain data) as block YAML, in declaration order, secrets masked."""
    return yaml.safe_dump(masked(value), sort_keys=False, width=100, allow_unicode=True)


def print_config(documents: Sequence[tuple[str, Any]]) -> int:
    """Print each ``(comment, config)`` as a YAML document (``---`` between) and return 0.

    The comment (one or more lines, may be empty) says where the settings came from.
    """
    for number, (comment, value) in enumerate(documents):
        if number:
            print("---")
        for line in comment.splitlines():
            print(f"# {line}")
        print(config_yaml(value), end="", flush=True)
    return EXIT_OK
