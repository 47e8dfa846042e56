"""dispynode's pure parts: service hours, config files, kept replies."""

from __future__ import annotations

import datetime as dt

import pytest

from dispylike import configfile
from dispylike.node import cli
from dispylike.node.service import Service, ServiceHours
from dispylike.transport.session import RetainedReplies


def parse(argv):
    return configfile.parse_args(cli.build_parser(), cli.SECTION, argv)

S, T, E = Service.SERVING, Service.STOPPED, Service.ENDED


def at(hh, mm=0):
    return dt.datetime(2026, 11, 21, hh, mm)


@pytest.mark.parametrize('hours, expected', [
    (('08:00', '17:00', '18:00'), {7: E, 8: S, 12: S, 17: T, 18: E, 23: E}),
    (('20:00', '06:00', ''), {2: S, 7: T, 19: T, 20: S, 23: S}),      # wraps midnight
    (('22:00', '02:00', '04:00'), {1: S, 3: T, 5: E, 21: E, 23: S}),
    (('', '10:00', ''), {0: S, 9: S, 10: T, 23: T}),
    (('', '', '10:00'), {9: S, 10: E}),
    (('', '', ''), {0: S, 12: S}),
])
def test_service_state_through_the_day(hours, expected):
    sh = ServiceHours.parse(*hours)
    assert {h: sh.state(at(h)) for h in expected} == expected


def test_minutes_count():
    sh = ServiceHours.parse('', '10:30', '')
    assert sh.state(at(10, 29)) is S and sh.state(at(10, 30)) is T


@pytest.mark.parametrize('hours, words', [
    (('8', '', ''), 'HH:MM'), (('', '24:00', ''), 'HH:MM'), (('', '10:5', ''), 'HH:MM'),
    (('08:00', '07:00', '09:00'), 'between'), (('08:00', '08:00', ''), 'never serve'),
])
def test_bad_service_hours(hours, words):
    with pytest.raises(ValueError, match=words):
        ServiceHours.parse(*hours)


def test_config_round_trip(tmp_path):
    path = str(tmp_path / 'node.ini')
    argv = ['-c', '1', '-i', '127.0.0.1', '-i', '::1', '--name', 'n1', '--zombie_interval', '5',
            '--service_stop', '18:00', '--unsafe_setup', '--max_file_size', '0']
    parser, args = parse(argv + ['--save_config', path])
    configfile.save_config(parser, args, cli.SECTION, path)
    _, loaded = parse(['--config', path])
    _, direct = parse(argv)
    skip = configfile.NOT_CONFIG
    assert {k: v for k, v in vars(loaded).items() if k not in skip} == \
        {k: v for k, v in vars(direct).items() if k not in skip}


def test_command_line_wins_over_the_config_file(tmp_path):
    path = tmp_path / 'node.ini'
    path.write_text('[dispynode]\ncpus = 1\nhost = 10.77.0.1 10.77.0.2\nclean = true\n')
    _, args = parse(['--config', str(path), '-c', '2', '-i', '127.0.0.1'])
    assert args.cpus == 2 and args.host == ['127.0.0.1'] and args.clean is True


def entry(uid, size):
    return (uid, 1, 11, 1.5, 2.25, bytes([uid % 256]) * size)


def test_kept_replies_spill_to_disk_and_come_back_in_order(tmp_path):
    kept = RetainedReplies(str(tmp_path / 'spill'), memory_cap=250, disk_cap=10_000)
    for uid in range(1, 6):
        kept.add(entry(uid, 100))
    assert kept.memory_bytes == 200 and kept.disk_bytes == 300
    assert list(kept.entries()) == [entry(uid, 100) for uid in range(1, 6)]
    kept.discard((4, 1))
    kept.discard((1, 1))
    assert [e[0] for e in kept.entries()] == [2, 3, 5] and kept.disk_bytes == 200
    kept.clear()
    assert len(kept) == 0 and not (tmp_path / 'spill').exists()


def test_kept_replies_on_disk_are_bounded(tmp_path):
    kept = RetainedReplies(str(tmp_path / 'spill'), memory_cap=0, disk_cap=250)
    for uid in range(1, 5):
        kept.add(entry(uid, 100))
    assert [e[0] for e in kept.entries()] == [3, 4] and kept.dropped == 2
