"""For the demo test only (tests/test_demo.py puts this folder on PYTHONPATH of the demo it
runs, so every Python process of that run imports this module at start-up): two changes
that make the demo's ~100 ``evault`` steps cheaper and change nothing they print. Nothing
here is imported by evault or the demo when run by hand (`make demo`, which .ci/run also
runs, is the demo as users run it).

- Key files the ``evault`` processes create get the lowest scrypt cost the reader
  accepts, as the in-process tests' do (tests/conftest.py). The demo makes and unlocks key
  files about a hundred times; at the default cost that was half a minute of the suite, and
  the key file itself is tested elsewhere at every cost.
- With ``EVAULT_TEST_FORK_EVAULT=1`` (the test sets it), the demo's
  ``subprocess.run([sys.executable, "-m", "vault", ...])`` forks the demo's own process,
  which has imported evault's modules once, instead of starting a new interpreter that
  imports them again (about a third of each step's time). Each step is still a process of
  its own, started as ``python -m vault`` starts: the step's arguments, environment and
  working folder, stdout and stderr on pipes, its exit code (or the signal that killed it,
  e.g. the crash hook's SIGKILL) as the return code, and the process's exit handlers run.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType
from typing import Any

LOWEST = 10


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        module.DEFAULT_WORK_FACTOR = LOWEST  # type: ignore[attr-defined]


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "vault.crypto.secretbox":
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(name, path, target)  # type: ignore[attr-defined]
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)
                return spec
        return None


sys.meta_path.insert(0, _Finder())


# ----------------------------------------------------------------------------- forked steps

_preloaded = False


def _preload() -> None:
    """Import every module of evault (not its migrations, which Alembic runs as scripts),
    once, in the process the steps fork from. No evault module does anything on import
    but define things (no listener, handler or setting of the process), so a step that
    would not have imported one behaves the same."""
    global _preloaded
    if _preloaded:
        return
    import importlib
    import pkgutil

    import vault

    for info in pkgutil.walk_packages(vault.__path__, "vault."):
        if info.name.startswith(("vault.migrations", "vault.__main__")):
            continue
        importlib.import_module(info.name)
    _preloaded = True


def _child(args: list[str], env: dict[str, str], cwd: Any, out: int, err: int) -> None:
    """In the forked process: become ``python -m vault ARGS``, then exit as it would."""
    import atexit
    import runpy
    import traceback

    code: Any = 1
    try:
        atexit._clear()  # the demo's own exit handlers are not the step's
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        if cwd is not None:
            os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = ["-m", *args]
        try:
            runpy.run_module("vault", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit_:
            code = exit_.code
        except BaseException:
            traceback.print_exc()
            code = 1
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
        atexit._run_exitfuncs()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


def _forked_run(args: list[str], *, env: dict[str, str] | None, cwd: Any,
                text: bool) -> Any:
    import selectors
    import subprocess

    _preload()
    sys.stdout.flush()
    sys.stderr.flush()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        os.close(err_r)
        _child(args, dict(os.environ if env is None else env), cwd, out_w, err_w)
    os.close(out_w)
    os.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    with selectors.DefaultSelector() as selector:
        for fd in chunks:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            for key, _ in selector.select():
                data = os.read(key.fd, 65536)
                if data:
                    chunks[key.fd].append(data)
                else:
                    selector.unregister(key.fd)
                    os.close(key.fd)
    _, status = os.waitpid(pid, 0)
    stdout, stderr = b"".join(chunks[out_r]), b"".join(chunks[err_r])
    if text:  # as subprocess.run(text=True) decodes: the locale's encoding, \r\n as \n
        import locale

        encoding = locale.getpreferredencoding(False)
        stdout = stdout.decode(encoding).replace("\r\n", "\n").replace("\r", "\n")
        stderr = stderr.decode(encoding).replace("\r\n", "\n").replace("\r", "\n")
    return subprocess.CompletedProcess([sys.executable, "-m", "vault", *args],
                                       os.waitstatus_to_exitcode(status), stdout, stderr)


def _install_forked_steps() -> None:
    import subprocess

    real_run = subprocess.run

    def run(argv: Any, *popenargs: Any, **kwargs: Any) -> Any:
        # Only what the demo's Demo.run asks for; anything else is a real subprocess.
        if (not popenargs and isinstance(argv, list) and argv[:3] == [sys.executable, "-m",
                                                                       "vault"]
                and kwargs.get("capture_output") is True
                and set(kwargs) <= {"env", "capture_output", "text", "cwd"}):
            return _forked_run(argv[3:], env=kwargs.get("env"), cwd=kwargs.get("cwd"),
                               text=bool(kwargs.get("text")))
        return real_run(argv, *popenargs, **kwargs)

    subprocess.run = run


if os.environ.get("EVAULT_TEST_FORK_EVAULT") == "1" and sys.platform == "linux":
    _install_forked_steps()
