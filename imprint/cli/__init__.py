"""The ``imprint`` command line: a thin shell over library calls (see ``imprint.cli.commands``).

Nothing heavy is imported before ``main`` runs, so Ctrl-C at any moment, start-up included, ends with one
line, and quick commands (info, presets, the top-level help) start in a fraction of a second.
"""
from __future__ import annotations

import re
import resource
import sys
from collections.abc import Sequence
from contextlib import contextmanager

from imprint.core.machine import available_memory, gib  # light, and imported before memory can run short


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):  # names from any file system print, never crash the output
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("imprint: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`imprint presets | head`): stop quietly, as other tools do
        _silence_stdout()
        return 0


def console() -> None:
    """The ``imprint`` command: ``main``, then a normal exit with its status. In-process callers use ``main``."""
    sys.exit(main())


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so flushing it at exit does not raise again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (tests): nothing to flush there
        pass


def _run(argv: list[str]) -> int:
    from imprint.cli.parser import WITH_SETTINGS, build_parser, command_in, plugins_in, print_error

    try:
        with _warnings_as_lines():
            plugins = plugins_in(argv)
            _import_plugins(plugins)
            from imprint.cli.commands import COMMANDS

            settings = command_in(argv, list(COMMANDS)) in WITH_SETTINGS  # flags of every classifier setting
            args = build_parser(COMMANDS, settings).parse_args(argv)
            args.run(args)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error already printed (2)
        return int(exit_.code or 0)
    except BrokenPipeError:
        raise  # an OSError, but not the user's mistake: main() stops quietly
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        if _is_user_error(exc):
            print_error(_message(exc))
            return 2
        starved = _out_of_memory(exc)
        if starved:
            print_error(starved)
            return 2
        import traceback

        traceback.print_exc()
        print_error(f"internal error ({type(exc).__name__}): this is a bug in imprint, not a mistake in what you "
                    "gave it; please report it with the lines above and the command you ran")
        return 3
    return 0


@contextmanager
def _warnings_as_lines():
    """Library warnings (empty class folders, unreadable images, untunable settings) as one line each, said when
    they happen."""
    import warnings

    from imprint.cli.output import warn

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        warn(str(message))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def _import_plugins(modules: list[str]) -> None:
    import importlib

    from imprint.core.errors import UserError

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UserError(f"--plugin {module}: cannot import it ({exc}); install it or put it on PYTHONPATH") \
                from None


def _is_user_error(exc: Exception) -> bool:
    """Mistakes in what the user gave (imprint's UserError) and problems of their machine (files, disks,
    memory) get one line; anything else is a bug."""
    from imprint.core.errors import UserError

    return isinstance(exc, (UserError, OSError, MemoryError))


def _out_of_memory(exc: Exception) -> str | None:
    """Work that ran out of memory, in one line: a library that could not be loaded (an address-space limit,
    ulimit -v, or a full machine), or an array torch could not allocate (its allocators raise RuntimeError, where
    numpy raises MemoryError); None for any other failure."""
    allocation = _torch_allocation(exc)
    if allocation is not None:
        return (f"out of memory: {allocation}; use fewer or smaller inputs, allow this process more memory "
                "(ulimit -v), or free memory")
    if not isinstance(exc, (ImportError, SystemError)):
        return None
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    mapped = "map segment" in text or "Cannot allocate memory" in text or "cannot allocate memory" in text
    if not mapped and available_memory() > 256 * 2**20:
        return None
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    bound = f"this process may use {gib(limit)} of address space (ulimit -v)" if limit != resource.RLIM_INFINITY \
        else "the machine's memory is short"
    return (f"out of memory while loading imprint's libraries ({type(exc).__name__}: {text[:100]}): {bound}; allow "
            "it more memory (torch alone maps about 3 GiB), or free memory")


def _torch_allocation(exc: Exception) -> str | None:
    """What torch failed to allocate, in words, where `exc` is its allocator's failure (CPU or GPU); else None."""
    text = str(exc)
    if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError: the GPU's memory
        return "the GPU's memory is full (" + (text.splitlines()[0][:120] if text else "torch.OutOfMemoryError") + ")"
    if not isinstance(exc, RuntimeError) or "DefaultCPUAllocator: can't allocate memory" not in text:
        return None
    size = re.search(r"tried to allocate (\d+) bytes", text)
    return f"torch could not allocate {gib(int(size.group(1))) if size else 'an array'}"


def _message(exc: Exception) -> str:
    from imprint.core.atomic import WriteError

    if isinstance(exc, OSError) and exc.filename and not isinstance(exc, WriteError):
        return f"{exc.strerror or exc}: {exc.filename}"
    if isinstance(exc, MemoryError) and not str(exc):
        return "out of memory; use fewer or smaller inputs, or allow this process more memory (ulimit -v), or free " \
               "memory"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
