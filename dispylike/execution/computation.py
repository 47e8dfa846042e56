"""Packaging a computation on the client and loading it on the node.

The client turns ``computation``, ``depends``, ``setup`` and ``cleanup`` into
one cloudpickled *bundle* plus a list of files.  On the node, the bundle is
loaded in the computation's own process (never in the node daemon), into one
shared namespace that plays the role of ``__main__``: depends functions and
classes, imported depends modules, and the globals that ``setup`` creates are
all visible to the computation.  Objects of classes defined in the client's
``__main__`` therefore pickle back as the client's own classes.
"""

from __future__ import annotations

import dis
import importlib
import inspect
import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from ..errors import ComputationError


@dataclass
class Package:
    """What the client sends: the pickled bundle and the files to stage."""
    name: str
    code: bytes
    files: list[tuple[str, str, int]] = field(default_factory=list)  # (local path, relpath, mode)
    is_program: bool = False


def _module_files(mod: types.ModuleType) -> list[tuple[str, str, int]]:
    path = getattr(mod, '__file__', None)
    if not path:
        raise ComputationError(f'module {mod.__name__} has no file to send')
    if os.path.basename(path) == '__init__.py':
        root = os.path.dirname(path)
        top = os.path.dirname(root)
        out = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d != '__pycache__']
            for fname in filenames:
                full = os.path.join(dirpath, fname)
                out.append((full, os.path.relpath(full, top).replace(os.sep, '/'), 0o644))
        return out
    return [(path, os.path.basename(path), 0o644)]


def _file_entries(path: str) -> list[tuple[str, str, int]]:
    if os.path.isdir(path):
        top = os.path.dirname(os.path.abspath(path))
        out = []
        for dirpath, _dirs, filenames in os.walk(path):
            for fname in filenames:
                full = os.path.join(dirpath, fname)
                out.append((full, os.path.relpath(full, top).replace(os.sep, '/'),
                            os.stat(full).st_mode & 0o777))
        return out
    if not os.path.isfile(path):
        raise ComputationError(f'dependency {path!r} is not a file or directory')
    return [(path, os.path.basename(path), os.stat(path).st_mode & 0o777)]


def classify_depends(depends: list) -> tuple[dict[str, Any], list[str], list[tuple[str, str, int]]]:
    """Split ``depends`` into (namespace objects, module names, files)."""
    namespace: dict[str, Any] = {}
    modules: list[str] = []
    files: list[tuple[str, str, int]] = []
    for dep in depends or ():
        if isinstance(dep, types.ModuleType):
            files.extend(_module_files(dep))
            modules.append(dep.__name__)
        elif isinstance(dep, str):
            files.extend(_file_entries(dep))
        elif inspect.isfunction(dep) or inspect.isclass(dep) or inspect.isbuiltin(dep):
            namespace[dep.__name__] = dep
        elif callable(dep) and hasattr(dep, 'func'):  # functools.partial
            namespace[getattr(dep.func, '__name__', 'partial')] = dep
        else:  # an instance: its class must be known on the node
            cls = type(dep)
            namespace[cls.__name__] = cls
    return namespace, modules, files


def package(computation: Callable | str, depends: list | None = None,
            setup: Callable | None = None, cleanup: Any = True,
            extra_namespace: dict[str, Any] | None = None,
            warm_workers: bool = False) -> Package:
    """Build the bundle sent to nodes.  Raises ComputationError for bad arguments.
    ``warm_workers``: the computation's process on each node runs job after job in
    reused job processes (see :mod:`.zygote`) instead of one fresh process each."""
    namespace, modules, files = classify_depends(list(depends or ()))
    namespace.update(extra_namespace or {})
    if setup is not None and not callable(setup):
        raise ComputationError('setup must be a function')
    if not (cleanup is True or cleanup is False or callable(cleanup)):
        raise ComputationError('cleanup must be True, False or a function')
    if isinstance(computation, str):
        if not os.path.isfile(computation):
            raise ComputationError(f'program {computation!r} is not a file')
        files.insert(0, (computation, os.path.basename(computation), 0o755))
        bundle = {'kind': 'program', 'func': None, 'program': os.path.basename(computation)}
        name = os.path.basename(computation)
    elif callable(computation):
        bundle = {'kind': 'function', 'func': computation, 'program': ''}
        name = getattr(computation, '__name__', 'computation')
    else:
        raise ComputationError('computation must be a function or the path of a program')
    bundle.update(namespace=namespace, modules=modules, setup=setup,
                  cleanup=cleanup if callable(cleanup) else None, warm=bool(warm_workers))
    try:
        code = cloudpickle.dumps(bundle, protocol=5)
    except Exception as exc:
        raise ComputationError(f'cannot serialise the computation: {exc}') from exc
    return Package(name, code, files, isinstance(computation, str))


# --- node side (runs in the computation's process only) ------------------------------

@dataclass
class Loaded:
    kind: str
    func: Callable | None
    program: str
    ns: types.ModuleType
    setup: Callable | None
    cleanup: Callable | None
    warm: bool = False      # warm workers: job processes run job after job


@dataclass
class JobDepends:
    """One job's own dependencies (dispy_job_depends), shipped with its arguments."""
    namespace: dict[str, Any]
    modules: list[str]
    files: list[tuple[str, bytes, int]]     # (relpath, content, mode)


def job_depends(depends: list) -> JobDepends:
    """Read a dispy_job_depends list (in the caller's thread: files are read here)."""
    namespace, modules, files = classify_depends(list(depends))
    contents = []
    for path, relpath, mode in files:
        with open(path, 'rb') as f:
            contents.append((relpath, f.read(), mode))
    return JobDepends(namespace, modules, contents)


def rebind(func: Any, ns: dict) -> Any:
    """Make a by-value function use the shared namespace as its globals."""
    if not isinstance(func, types.FunctionType) or func.__globals__ is ns:
        return func
    if func.__module__ not in ('__main__', None) and func.__module__ in sys.modules \
            and sys.modules[func.__module__].__dict__ is func.__globals__:
        return func  # an importable function, pickled by reference: leave it alone
    for key, value in func.__globals__.items():
        if not key.startswith('__'):
            ns.setdefault(key, value)
    new = types.FunctionType(func.__code__, ns, func.__name__, func.__defaults__,
                             func.__closure__)
    new.__kwdefaults__ = func.__kwdefaults__
    new.__dict__.update(func.__dict__)
    new.__qualname__ = func.__qualname__
    new.__module__ = '__main__'
    return new


def load(code: bytes, dest_path: str, node_globals: dict[str, Any],
         own_process: bool = True) -> Loaded:
    """Unpickle a bundle into a fresh ``__main__`` namespace rooted at ``dest_path``.
    ``own_process`` False (the node's --unsafe_setup): leave the process's working
    directory and ``__main__`` alone."""
    if own_process:
        os.chdir(dest_path)
    if dest_path not in sys.path:
        sys.path.insert(0, dest_path)
    ns = types.ModuleType('__main__')
    ns.__dict__['__builtins__'] = __builtins__
    if own_process:
        sys.modules['__main__'] = ns
    ns.__dict__.update(node_globals)
    bundle = cloudpickle.loads(code)
    d = ns.__dict__
    for name in bundle['modules']:
        d[name.split('.')[0]] = importlib.import_module(name.split('.')[0])
        importlib.import_module(name)
    for name, obj in bundle['namespace'].items():
        d[name] = rebind(obj, d)
    func = rebind(bundle['func'], d) if bundle['func'] is not None else None
    if func is not None:
        d.setdefault(func.__name__, func)
    return Loaded(bundle['kind'], func, bundle['program'], ns,
                  rebind(bundle['setup'], d), rebind(bundle['cleanup'], d),
                  bool(bundle.get('warm', False)))


def stdlib_imports(func: Callable) -> list[str]:
    """Standard-library modules the computation imports as it runs: ``import``
    statements in ``func``, in the functions nested in it and in the functions of its
    own module that it names (dispy's samples import ``socket`` and ``time`` inside
    ``compute``).  The computation process imports them once, before it forks, so that
    each job finds them loaded instead of importing them itself (``socket``: 2.5-3 ms
    per job here).  Only the standard library: its modules start no threads and run
    nothing of the user's when imported."""
    if not isinstance(func, types.FunctionType):
        return []
    stdlib = getattr(sys, 'stdlib_module_names', frozenset())
    found: list[str] = []
    source = func.__code__.co_filename   # "of its own module": defined in the same file
    names_in = func.__globals__
    seen: set[types.CodeType] = set()
    todo = [func.__code__]
    while todo:
        code = todo.pop()
        if code in seen:
            continue
        seen.add(code)
        for instr in dis.get_instructions(code):
            name = instr.argval
            if (instr.opname == 'IMPORT_NAME' and isinstance(name, str) and name
                    and name.partition('.')[0] in stdlib and name not in found):
                found.append(name)
        todo.extend(const for const in code.co_consts if isinstance(const, types.CodeType))
        for name in code.co_names:
            value = names_in.get(name)
            if isinstance(value, types.FunctionType) and value.__code__.co_filename == source:
                todo.append(value.__code__)
    return found
