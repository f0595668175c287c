"""Options: one definition of each setting, shared by the command line and the job spec.

Each :class:`Option` has its type, default, range (floats must also be finite), allowed choices
and help text, under the job spec's ``section.key`` name. ``fmadask.cli`` builds its flags from
them (:func:`add_option`), ``fmadask.jobspec`` its sections (:func:`spec_field`), and both run
the same validator (:meth:`Option.check`). An invalid value raises :class:`OptionError`, which
names the setting in the user's terms when printed: ``--partition-size`` on the command line,
``featurize.partition_size`` in a job spec, the parameter name elsewhere.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fmadask.errors import ConfigError

MISSING = dataclasses.MISSING


class OptionError(ConfigError):
    """An option has a wrong value.

    Parameters
    ----------
    key : str
        The option's ``section.key`` (see :data:`OPTIONS`).
    problem : str
        What is wrong, either a predicate (``'must be at least 1, not 0'``), shown after the
        option's name, or a sentence with ``{option}`` where the name goes.
    """

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(self.render(key.rsplit(".", 1)[-1]))

    def render(self, label: str) -> str:
        """The message with the option called ``label``."""
        if "{option}" in self.problem:
            return self.problem.replace("{option}", label)
        return f"{label} {self.problem}"

    def named(self, label: str) -> OptionError:
        """The same error, with the option called ``label`` in its message."""
        error = OptionError(self.key, self.problem)
        error.args = (self.render(label),)
        return error


@dataclass(frozen=True)
class Option:
    """One setting: type, default, rules and help.

    Attributes
    ----------
    key : str
        ``section.key`` as in a job spec (``predict.top`` for options of one command only).
    type : type
        ``int``, ``float``, ``str``, ``bool`` or ``list`` (a list of strings).
    default : object
        The default (``MISSING``: required); ``None`` means "not set".
    help : str
        One line for ``--help`` and ``fmadask run --check``.
    choices : tuple, optional
        Allowed values (of each item, for a list).
    minimum, maximum : float, optional
        Inclusive bounds of a number.
    words : tuple of str
        Strings accepted besides the type (``'native'`` for a rate, ``'none'`` for no limit).
    nullable : bool
        None is allowed (an unset value).
    path : bool
        A local path or URL.
    """

    key: str
    type: type
    default: Any = MISSING
    help: str = ""
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    words: tuple[str, ...] = ()
    nullable: bool = False
    path: bool = False

    def check(self, value: Any) -> Any:
        """``value`` validated (ints become floats for a float option), or :class:`OptionError`."""
        if isinstance(value, str) and value in self.words:
            return value
        if value is None:
            if self.nullable or self.default is None:
                return None
            raise OptionError(self.key, f"must be {self.expected()}, not nothing")
        if self.type is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise OptionError(self.key, f"must be a list such as [\"a\", \"b\"], not "
                                            f"{value!r}")
            for item in value:
                self._check_choice(item)
            return list(value)
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            raise OptionError(self.key, f"must be {self.expected()}, not {value!r}")
        if self.type is float and not math.isfinite(value):
            raise OptionError(self.key, f"must be a finite number, not {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise OptionError(self.key, f"must be at least {self.minimum:g}, not {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise OptionError(self.key, f"must be at most {self.maximum:g}, not {value!r}")
        self._check_choice(value)
        return value

    def parse(self, text: str) -> Any:
        """A command-line string converted to the option's type, then :meth:`check`-ed."""
        if text in self.words:
            return text
        try:
            if self.type is int:
                value: Any = int(text)
            elif self.type is float:
                value = float(text)
            elif self.type is bool:
                value = {"true": True, "false": False}[text.lower()]
            elif self.type is list:
                value = [w.strip() for w in text.split(",") if w.strip()]
            else:
                value = text
        except (ValueError, KeyError):
            raise OptionError(self.key, f"must be {self.expected()}, not {text!r}") from None
        return self.check(value)

    def expected(self) -> str:
        """What a valid value looks like, in words."""
        names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
                 list: "a list"}
        kinds = [repr(w) for w in self.words] + [names[self.type]]
        return " or ".join(kinds)

    def _check_choice(self, item: Any) -> None:
        if self.choices is not None and item not in self.choices:
            close = difflib.get_close_matches(str(item), [str(c) for c in self.choices], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise OptionError(self.key, f"{{option}}: {item!r} is not one of "
                                        f"{', '.join(map(str, self.choices))}{hint}")
