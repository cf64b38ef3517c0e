"""The one error hierarchy of bridge.

::

    BridgeError                      base; never raised itself
    ├── UserError                    the user can fix it: exit code 2, one line, no traceback
    │   ├── InputError               a model, inputs file or option is malformed or unreadable
    │   │   └── UnsafeInputError     loading would run code or escape a directory (see docs/safety.md)
    │   ├── OutputError              the output directory cannot be written or already exists
    │   ├── UnsupportedRouteError    no chain of hops joins the two formats
    │   ├── MissingExtraError        an optional framework is not installed
    │   └── HopError                 a hop failed (exception, crash, timeout); carries its stage
    │       ├── RuntimeLoadError     a runtime could not load or run an artifact
    │       │   └── DeviceUnavailableError  the device asked for is not here (no GPU, a CPU-only runtime)
    │       ├── NotApplicableError   a hop's candidate does not apply to this model (the next is tried)
    │       └── UnverifiedError      no candidate of a hop made an artifact that agrees with its parent: exit 1
    └── DriftError                   not raised by the library (a Report carries drift); the CLI's exit 1

Exit codes: 0 pass, 1 drift (DriftError, UnverifiedError), 2 UserError, 3 anything else (a bug
in bridge: the CLI prints one line and writes the traceback to a file), 130 Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_DRIFT = 1
EXIT_USER_ERROR = 2
EXIT_INTERNAL = 3
"""A bug in bridge: one line on stderr, the traceback in a file whose path is printed."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (SIGINT): running child steps ended, partial output removed."""
EXIT_TERMINATED = 143
"""SIGTERM: as for Ctrl-C."""


class BridgeError(Exception):
    """Base of every error bridge raises on purpose."""

    exit_code: int = EXIT_USER_ERROR


class UserError(BridgeError):
    """Something the user can fix. The message is one or two lines naming the file and the fix."""


class InputError(UserError):
    """A model file, inputs file or option is malformed or does not fit."""


class UnsafeInputError(InputError):
    """Loading this file would run code or reach outside its directory."""


class QuantizeError(InputError):
    """The model cannot be quantized as asked (an op left in float32 by an integer-only scheme): the whole
    conversion stops and leaves nothing, whatever candidate made the float artifact."""


class OutputError(UserError):
    """The output location cannot be used."""


class UnsupportedRouteError(UserError):
    """No chain of registered hops joins the two formats."""


class MissingExtraError(UserError):
    """An optional dependency needed for a hop or runtime is missing."""


class HopError(UserError):
    """A hop failed. `stage` names the hop (``torch->onnx``), `detail` holds the tail of its output."""

    def __init__(self, message: str, *, stage: str = "", detail: str = "", conversion: object = None,
                 log: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.detail = detail
        self.conversion = conversion
        """From `bridge.convert`: the partial Conversion, whose completed artifacts were published."""
        self.log = log
        """The file holding the step's whole output (the converter's own log), when it was kept."""


class RuntimeLoadError(HopError):
    """A runtime could not load or run an artifact."""


class DeviceUnavailableError(RuntimeLoadError):
    """The device asked for is not present here, or the runtime cannot use it. Verify reports it as unavailable."""


class NotApplicableError(HopError):
    """A hop's candidate has nothing to do for this model (a rewrite that finds nothing to rewrite)."""


class UnverifiedError(HopError):
    """A hop kept the closest of its candidates' artifacts, and none agreed with its parent (exit code 1, like drift)."""

    exit_code = EXIT_DRIFT


class DriftError(BridgeError):
    """Outputs differ beyond tolerance. The CLI maps a failed Report to this exit code."""

    exit_code = EXIT_DRIFT
