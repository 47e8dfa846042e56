"""Daemon command lines (dispynode, dispyscheduler): options from a config file, and
the common ``main`` (validate, save the config or run the daemon's loop).

The file is INI with one section named after the program, whose keys are the
long option names; options given on the command line win.  ``--save_config``
writes the options in effect (mode 0600: it may hold a secret).
"""

from __future__ import annotations

import argparse
import configparser
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from .execution.processes import set_parent_death_signal
from .log import setup_logging
from .security import audit
from .transport.loop import new_event_loop

#: Options that are about this invocation, never read from or saved to a config file.
NOT_CONFIG = {'config', 'save_config', 'ready_fd', 'exit_with_parent', 'help', 'version'}


def config_argv(parser: argparse.ArgumentParser, section: str, path: str,
                argv: list[str]) -> list[str]:
    """Turn a config file into command-line words (skipping options ``argv`` sets)."""
    cp = configparser.ConfigParser(interpolation=None)
    try:
        with open(path) as f:
            cp.read_file(f)
    except (OSError, configparser.Error) as exc:
        raise ValueError(f'cannot read config file {path}: {exc}') from None
    if not cp.has_section(section):
        raise ValueError(f'config file {path} has no [{section}] section')
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    given = {a.dest for a in actions.values() for word in argv
             if word.split('=')[0] in a.option_strings}
    words: list[str] = []
    for key, value in cp.items(section):
        action = actions.get(key)
        if action is None or key in NOT_CONFIG:
            raise ValueError(f'config file {path}: unknown option {key!r}')
        if key in given:
            continue
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            if value.strip().lower() in ('1', 'true', 'yes', 'on'):
                words.append(flag)
            elif value.strip().lower() not in ('0', 'false', 'no', 'off', ''):
                raise ValueError(f'config file {path}: {key} must be true or false')
        elif isinstance(action, argparse._AppendAction):
            for item in value.split():
                words += [flag, item]
        elif value.strip():
            words += [flag, value.strip()]
    return words


def save_config(parser: argparse.ArgumentParser, args: argparse.Namespace, section: str,
                path: str) -> None:
    cp = configparser.ConfigParser(interpolation=None)
    cp.add_section(section)
    for action in parser._actions:
        if not action.option_strings or action.dest in NOT_CONFIG:
            continue
        value = getattr(args, action.dest)
        if value is None:
            continue
        if isinstance(value, list):
            value = ' '.join(value)
        cp.set(section, action.dest, str(value))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it may hold the secret
    with os.fdopen(fd, 'w') as f:
        cp.write(f)


def parse_args(parser: argparse.ArgumentParser, section: str, argv: list[str] | None
               ) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Parse ``argv``; with ``--config FILE`` its options come first (so argv wins)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = parser.parse_args(argv)
    if first.config:
        try:
            argv = config_argv(parser, section, first.config, argv) + argv
        except ValueError as exc:
            parser.error(str(exc))
        first = parser.parse_args(argv)
    return parser, first


def daemon_main(prog: str, section: str, parser: argparse.ArgumentParser,
                options: Callable[[argparse.Namespace], Any],
                run: Callable[[Any, argparse.Namespace], Awaitable[None]],
                argv: list[str] | None) -> int:
    """Parse (config file first, command line wins), validate with ``options`` (a
    ValueError exits 2 with its message), then save the config or ``run`` the daemon
    on a new event loop.  Returns the exit code."""
    parser, args = parse_args(parser, section, argv)
    try:
        opts = options(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.save_config:
        try:
            save_config(parser, args, section, args.save_config)
        except OSError as exc:
            parser.error(f'cannot write config file {args.save_config}: {exc}')
        print(f'{prog}: options saved to {args.save_config}')
        return 0
    if args.exit_with_parent:
        set_parent_death_signal(signal.SIGTERM)
    audit.install_from_env()   # tests only: see security.audit
    setup_logging(logging.DEBUG if args.debug else logging.INFO)
    try:
        new_event_loop().run_until_complete(run(opts, args))
    except OSError as exc:
        print(f'{prog}: {exc}', file=sys.stderr)
        return 1
    return 0
