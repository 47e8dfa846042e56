"""Packaging on the client and loading into one namespace on the node (in-process)."""

import json
import os
import sys
import types

import pytest

from dispylike.errors import ComputationError
from dispylike.execution.computation import classify_depends, load, package

CLIENT_MAIN = """
def helper(x):
    return x + 1


class Point:
    def __init__(self, x):
        self.x = x


def compute(n):
    return helper(n) + SCALE


def setup():
    global SCALE
    SCALE = 100
    return 0
"""

# Functions of a client program live in its __main__, so cloudpickle ships them by value:
# build them the same way here.
_main: dict = {'__name__': '__main__'}
exec(compile(CLIENT_MAIN, '<client __main__>', 'exec'), _main)
helper, Point, compute, setup = _main['helper'], _main['Point'], _main['compute'], _main['setup']


@pytest.fixture
def node_side(tmp_path):
    """Run load() in this process, restoring what it changes."""
    saved = sys.modules['__main__'], os.getcwd(), list(sys.path)
    yield str(tmp_path)
    sys.modules['__main__'] = saved[0]
    os.chdir(saved[1])
    sys.path[:] = saved[2]


def test_classify_depends(tmp_path):
    data = tmp_path / 'data.txt'
    data.write_text('x')
    ns, mods, files = classify_depends([helper, Point, Point(1), json, str(data)])
    assert ns == {'helper': helper, 'Point': Point}
    assert mods == ['json']
    rels = [rel for _path, rel, _mode in files]
    assert 'data.txt' in rels and any(r.startswith('json/') for r in rels)


def test_bad_arguments():
    with pytest.raises(ComputationError):
        package(42)
    with pytest.raises(ComputationError):
        package('/no/such/program')
    with pytest.raises(ComputationError):
        package(compute, cleanup='yes')
    with pytest.raises(ComputationError, match='not a file'):
        package(compute, depends=['/no/such/file'])


def test_program_is_sent_as_executable(tmp_path):
    prog = tmp_path / 'prog.sh'
    prog.write_text('#!/bin/sh\necho hi\n')
    pkg = package(str(prog))
    assert pkg.is_program and pkg.files[0][1:] == ('prog.sh', 0o755)


def test_load_shares_one_namespace_with_setup_globals(node_side):
    pkg = package(compute, depends=[helper, Point], setup=setup)
    loaded = load(pkg.code, node_side, {'dispy_node_name': 'n1'})
    assert os.getcwd() == os.path.realpath(node_side)
    assert loaded.setup() == 0
    assert loaded.func(1) == 102                     # helper from depends, SCALE from setup
    ns = loaded.ns.__dict__
    assert ns['dispy_node_name'] == 'n1'
    assert loaded.func.__globals__ is ns and ns['helper'].__globals__ is ns
    assert sys.modules['__main__'] is loaded.ns


def test_closures_and_lambdas_survive(node_side):
    k = 7
    loaded = load(package(lambda n: n * k).code, node_side, {})
    assert loaded.func(6) == 42


def test_module_dependency_is_imported_from_dest_path(node_side):
    mod_dir = os.path.join(node_side, 'srcmods')
    os.makedirs(mod_dir)
    with open(os.path.join(mod_dir, 'dlk_dep_mod.py'), 'w') as f:
        f.write('VALUE = 5\n')
    sys.path.insert(0, mod_dir)
    import dlk_dep_mod
    sys.path.remove(mod_dir)
    pkg = package(compute, depends=[dlk_dep_mod])
    del sys.modules['dlk_dep_mod']
    assert [rel for _p, rel, _m in pkg.files] == ['dlk_dep_mod.py']
    dest = os.path.join(node_side, 'dest')
    os.makedirs(dest)
    with open(os.path.join(dest, 'dlk_dep_mod.py'), 'w') as f:
        f.write('VALUE = 6\n')                        # what the node received
    loaded = load(pkg.code, dest, {})
    assert isinstance(loaded.ns.__dict__['dlk_dep_mod'], types.ModuleType)
    assert loaded.ns.__dict__['dlk_dep_mod'].VALUE == 6
    del sys.modules['dlk_dep_mod']
