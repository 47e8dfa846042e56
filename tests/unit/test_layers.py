"""Layers import downward only; daemons and client never import each other."""

import ast
import pathlib

PKG = pathlib.Path(__file__).resolve().parents[2] / 'dispylike'
PURE = {'protocol', 'scheduling'}
TOP = {'client', 'node', 'scheduler', 'relay'}
FORBIDDEN_IN_PURE = {'asyncio', 'socket', 'ssl', 'subprocess', 'selectors', 'threading', 'time'}


def imports(path: pathlib.Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, 0
        elif isinstance(node, ast.ImportFrom):
            yield node.module or '', node.level


def package_of(path: pathlib.Path) -> str:
    rel = path.relative_to(PKG).parts
    return rel[0] if len(rel) > 1 else ''


def test_pure_core_does_no_io():
    for sub in PURE:
        for path in (PKG / sub).rglob('*.py'):
            for name, level in imports(path):
                if level == 0:
                    assert name.split('.')[0] not in FORBIDDEN_IN_PURE, (path, name)


def target_of(owner: str, name: str, level: int) -> str | None:
    """The dispylike subpackage an import refers to (None: not dispylike)."""
    if level == 0:
        parts = name.split('.')
        return parts[1] if parts[0] == 'dispylike' and len(parts) > 1 else None
    if level == 1:
        return owner if owner else name.split('.')[0]
    return name.split('.')[0] if level == 2 else None


def test_top_layers_do_not_import_each_other():
    for path in PKG.rglob('*.py'):
        owner = package_of(path)
        for name, level in imports(path):
            target = target_of(owner, name, level)
            if owner in TOP and target in TOP:
                assert target == owner, f'{path} imports {name} (level {level})'
            if owner in PURE | {'transport', 'execution', 'protocol', 'driver'}:
                assert target not in TOP, f'{path} imports {name}'


def test_the_check_itself_catches_a_violation():
    assert target_of('node', 'client.engine', 2) == 'client'
    assert target_of('node', 'daemon', 1) == 'node'
    assert target_of('', 'client.cluster', 1) == 'client'
    assert target_of('x', 'dispylike.client', 0) == 'client'
