"""The machinery :mod:`fmadask.options` declares its sections with: :class:`Option` (one setting's
type, default, rules and help), :func:`option` and :func:`section` (a frozen dataclass whose fields
are options, registered in :data:`OPTIONS`), :class:`OptionError` and the lookups
(:func:`check`, :func:`default`, :func:`setting`). Import them from :mod:`fmadask.options`: the
lookups read :data:`OPTIONS`, which importing that module fills.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
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
    """One setting: type, default, rules, help and where it appears.

    Made by :func:`section` from a field declared with :func:`option`.

    Attributes
    ----------
    key : str
        ``section.key`` as in a job spec (``predict.top`` for options of one command only).
    type : type
        ``int``, ``float``, ``str``, ``bool``, ``list`` (a list of strings) or ``dict`` (a
        table of settings).
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
    form : callable, optional
        Checks a value whose rules the type cannot say (a memory size: :func:`memory_size`):
        returns it, or raises ValueError; it replaces the type check.
    expected_text : str
        What a valid value looks like, when the type's name does not say it well.
    flag : str
        The command-line flag, when not ``--<key's name with dashes>`` (``--no-<name>`` for a
        boolean that is true by default).
    metavar : str
        The value's name in ``--help``.
    cli_help : str
        The help on the command line, when it says more than (or other than) ``help``.
    cli, spec : bool
        Offered on the command line; a key of the job spec.
    result : bool
        Decides a stage's outputs (recorded in its marker; :func:`fmadask.stages.stage_params`).
    omit_default : bool
        A result option added after run folders were written: recorded only when it differs
        from its default, so a folder recorded before the option existed (without the key)
        still matches a run that leaves it at its default, and resumes instead of redoing.
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
    form: typing.Callable[[Any], Any] | None = None
    expected_text: str = ""
    flag: str = ""
    metavar: str = ""
    cli_help: str = ""
    cli: bool = True
    spec: bool = True
    result: bool = True
    omit_default: bool = False

    @property
    def name(self) -> str:
        """The key's name within its section (``partition_size``)."""
        return self.key.rsplit(".", 1)[-1]

    @property
    def flag_name(self) -> str:
        """The command-line flag (``--partition-size``)."""
        if self.flag:
            return self.flag
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.type is bool and self.default is True else f"--{dashed}"


    def check(self, value: Any) -> Any:
        """``value`` validated (ints become floats for a float option), or :class:`OptionError`."""
        if isinstance(value, str) and value in self.words:
            return value
        if value is None:
            if self.nullable or self.default is None:
                return None
            raise OptionError(self.key, f"must be {self.expected()}, not nothing")
        if self.form is not None:
            try:
                return self.form(value)
            except ValueError:
                raise OptionError(self.key, f"must be {self.expected()}, not {value!r}") from None
        if self.type is dict:
            return self._check_table(value)
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
            raise OptionError(self.key, f"must be at least {_bound(self.minimum)}, not {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise OptionError(self.key, f"must be at most {_bound(self.maximum)}, not {value!r}")
        self._check_choice(value)
        return value

    def parse(self, text: str) -> Any:
        """A command-line string converted to the option's type, then :meth:`check`-ed."""
        if text in self.words or self.form is not None:
            return self.check(text)
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
        if self.expected_text:
            return self.expected_text
        names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
                 list: "a list", dict: "a table of KEY = VALUE settings"}
        kinds = [repr(w) for w in self.words] + [names[self.type]]
        return " or ".join(kinds)

    def _check_table(self, value: Any) -> dict:
        """A table (the command line builds it from ``KEY=VALUE`` items) as a dict."""
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            # The value itself is not shown: it may hold a secret.
            raise OptionError(self.key, f"must be {self.expected()}, not a {type(value).__name__}")
        return dict(value)

    def _check_choice(self, item: Any) -> None:
        if self.choices is not None and item not in self.choices:
            close = difflib.get_close_matches(str(item), [str(c) for c in self.choices], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise OptionError(self.key, f"unknown {{option}} {item!r}: choose one of "
                                        f"{', '.join(map(str, self.choices))}{hint}")

    def field(self) -> Any:
        """A dataclass field holding this option: its default, and the option as metadata."""
        meta = {"option": self}
        if isinstance(self.default, (list, dict)):
            return dataclasses.field(default_factory=lambda d=self.default: type(d)(d),
                                     metadata=meta)
        return dataclasses.field(default=self.default, metadata=meta)


def _bound(number: float) -> str:
    """A range's bound in a message: whole numbers in full (4294967295, not 4.29497e+09)."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


#: Every option, by ``section.key`` (filled by :func:`section`).
OPTIONS: dict[str, Option] = {}
#: The job spec's sections: name -> dataclass, in the order a spec is written and printed.
SPEC_SECTIONS: dict[str, type] = {}


@dataclass(frozen=True)
class _Declared:
    """A field declared with :func:`option`; :func:`section` makes it an :class:`Option`."""

    default: Any
    rules: dict[str, Any]


def option(default: Any = MISSING, help: str = "", **rules: Any) -> Any:
    """Declare an option field of a :func:`section` class: its default, help and rules.

    ``rules`` are the other :class:`Option` attributes (``minimum``, ``maximum``, ``choices``,
    ``words``, ``path``, ``expected_text``, ``flag``, ``metavar``, ``cli_help``, ``cli``,
    ``spec``, ``result``, ``omit_default``); the type comes from the field's annotation (``int | None``: an int
    or unset; ``int | str`` with ``words``: an int or one of the words; ``list[str]``: a list).
    """
    return _Declared(default, dict(help=help, **rules))


def same_as(key: str) -> Any:
    """A field of a stage config holding option ``key`` of another section (same default and
    rules), e.g. the featurize config's ``subset``, which is ``data.subset``."""
    return OPTIONS[key].field()


def _option_type(hint: Any) -> tuple[type, bool]:
    """``(type, nullable)`` of an option from its field's annotation."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = list(typing.get_args(hint)) if union else [hint]
    nullable = type(None) in kinds
    kinds = [typing.get_origin(k) or k for k in kinds if k is not type(None)]
    if len(kinds) > 1 and str in kinds:       # the words an int or float option also takes
        kinds.remove(str)
    if len(kinds) != 1 or kinds[0] not in (int, float, str, bool, list, dict):
        raise TypeError(f"an option's annotation must be one of int, float, str, bool, list, "
                        f"dict (| None, | str for words), not {hint!r}")
    return kinds[0], nullable


class Options:
    """Base of the section classes: every option field is validated when an instance is made
    (ints become floats for a float option)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every option field (:class:`OptionError` naming the first invalid one)."""
        for f in option_fields(type(self)):
            object.__setattr__(self, f.name, f.metadata["option"].check(getattr(self, f.name)))


def section(name: str, *, spec: bool = True) -> Any:
    """Class decorator: a frozen, keyword-only dataclass whose :func:`option` fields are the
    options ``<name>.<field>``, registered in :data:`OPTIONS` (and the class in
    :data:`SPEC_SECTIONS` with ``spec``: a section of the job spec)."""

    def wrap(cls: type) -> type:
        hints = typing.get_type_hints(cls)
        for field_name in cls.__dict__.get("__annotations__", {}):
            declared = cls.__dict__.get(field_name)
            if not isinstance(declared, _Declared):
                continue
            kind, nullable = _option_type(hints[field_name])
            opt = Option(f"{name}.{field_name}", kind, declared.default,
                         nullable=nullable or declared.default is None, **declared.rules)
            if opt.key in OPTIONS:
                raise TypeError(f"option {opt.key} is declared twice")
            OPTIONS[opt.key] = opt
            setattr(cls, field_name, opt.field())
        cls = dataclass(frozen=True, kw_only=True)(cls)
        if spec:
            SPEC_SECTIONS[name] = cls
        return cls

    return wrap


def option_fields(cls: type, *, cli: bool | None = None,
                  spec: bool | None = None) -> list[dataclasses.Field]:
    """The option fields of a dataclass (those on the command line / in the job spec only)."""
    found = []
    for f in dataclasses.fields(cls):
        opt = f.metadata.get("option")
        if opt is None or (cli is not None and opt.cli != cli) or \
                (spec is not None and opt.spec != spec):
            continue
        found.append(f)
    return found


def option_values(obj: Any, cls: type | None = None, *, result: bool | None = None
                  ) -> dict[str, Any]:
    """``{field: value}`` of the option fields of ``obj`` (those of ``cls`` only, e.g. the
    training options of a :class:`CnnSection`; those that decide results only, without the
    ``omit_default`` ones left at their default)."""
    values = {}
    for f in option_fields(cls or type(obj)):
        rule, value = f.metadata["option"], getattr(obj, f.name)
        if result is not None and (rule.result != result
                                   or result and rule.omit_default and value == rule.default):
            continue
        values[f.name] = value
    return values


def check(key: str, value: Any) -> Any:
    """``value`` validated as option ``key`` (see :meth:`Option.check`)."""
    return OPTIONS[key].check(value)


def default(key: str) -> Any:
    """The default of option ``key`` (a fresh copy of a list)."""
    value = OPTIONS[key].default
    return type(value)(value) if isinstance(value, (list, dict)) else value


def setting(key: str) -> str:
    """Option ``key`` named inside another message (a hint in an error stored in ``errors/``, a
    warning) so that it reads right wherever the user set it: ``--max-seconds
    (featurize.max_seconds)``; the flag alone for an option of the command line only, the key
    alone for one of the job spec only. (For an error about the option's own value, raise
    :class:`OptionError`, which the command line and the job spec each name their way.)"""
    opt = OPTIONS[key]
    if opt.cli and opt.spec:
        return f"{opt.flag_name} ({opt.key})"
    return opt.flag_name if opt.cli else opt.key
