"""Settings declared once, read from flags, `FMNIST_*` variables and a YAML file.

A setting is a field of a frozen dataclass, declared with `setting(default, help)`: its name,
type (the annotation), default and help are written in that one line. Nested dataclass fields
are flattened, so `TrainingConfig.epochs` is `--epochs`, `FMNIST_EPOCHS` and `epochs:` in YAML.
Precedence: flag > environment variable > file > declared default.

    parser = argparse.ArgumentParser()
    add_arguments(parser, RunnerSettings)
    values = resolve(RunnerSettings, parser.parse_args(argv), os.environ, config_file)
    settings = values.build(RunnerSettings)

Values are parsed by type: booleans accept true/false/1/0/yes/no/on/off (anything else is an
error naming where it came from), `X | None` accepts an empty string or `none` as None.

A subcommand's own dataclass may set `ENV_SCOPE` (a ClassVar, e.g. "SERVE_"): its variables are
then `FMNIST_SERVE_*`, so two commands' `--dest` never read each other's variable. A field may
take another user-facing name (`setting(..., name="model_base_path")`) when its flag is older
than the field. A declared default that is a relative `Path` is anchored at the project root
(fmnist.paths), so every command finds the same files from any directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmnist import paths

ENV_PREFIX = "FMNIST_"
CONFIG = "config"  # a setting of this name names the YAML file
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class SettingsError(ValueError):
    """A setting with a value that cannot be used; the message names the setting and its source."""


def setting(default: Any, help: str, *, choices: tuple | None = None, required: bool = False,
            name: str | None = None) -> Any:
    """A dataclass field that is also a user setting (flag, FMNIST_ variable, YAML key), named
    like the field unless `name` says otherwise."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "required": required,
                                                        "name": name})


def _setting_name(field: dataclasses.Field) -> str:
    return field.metadata.get("name") or field.name


@dataclass(frozen=True)
class Declared:
    """One setting as declared: `path` is where it sits in nested dataclasses."""

    name: str
    type: Any
    default: Any
    help: str
    choices: tuple | None
    required: bool
    path: tuple[str, ...]
    scope: str = ""  # the ENV_SCOPE of the top-level class: FMNIST_<scope><NAME>

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.scope + self.name.upper()


def _is_dataclass_type(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def declared(*classes: type) -> list[Declared]:
    """Every setting of the given dataclasses, nested ones flattened, in declaration order."""
    found: list[Declared] = []

    def walk(cls: type, path: tuple[str, ...], scope: str) -> None:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            kind = hints[field.name]
            if _is_dataclass_type(kind):
                walk(kind, (*path, field.name), scope)
            elif "help" in field.metadata:
                found.append(Declared(_setting_name(field), kind, field.default, field.metadata["help"],
                                      field.metadata["choices"], field.metadata["required"], (*path, field.name),
                                      scope))

    for cls in classes:
        walk(cls, (), getattr(cls, "ENV_SCOPE", ""))
    names = [d.name for d in found]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise TypeError(f"settings declared twice: {duplicated}")
    return found


def _base_type(kind: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) for `int`, `int | None`, `Path | None`, ..."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return inner, True
    return kind, False


def parse_value(item: Declared, raw: Any, source: str) -> Any:
    """`raw` (text from a variable or flag, or a YAML value) as the declared type."""
    kind, optional = _base_type(item.type)
    if optional and (raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none", "null"))):
        return None
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ValueError("expected true/false, 1/0, yes/no or on/off")
        if kind is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError("expected an integer")
            value: Any = int(raw)
        elif kind is float:
            if isinstance(raw, bool):
                raise ValueError("expected a number")
            value = float(raw)
        elif kind is Path:
            value = Path(raw)
        elif kind is str:
            value = str(raw)
        else:
            raise TypeError(f"setting {item.name}: unsupported type {kind}")
    except (TypeError, ValueError) as err:
        raise SettingsError(f"{source}: invalid value {raw!r} for {item.name} ({err})") from None
    if item.choices is not None and value not in item.choices:
        raise SettingsError(f"{source}: {item.name} must be one of {', '.join(map(str, item.choices))}, got {raw!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser, *classes: type, title: str | None = None) -> None:
    """One flag per declared setting. Flags default to "not given" so that variables and the
    file can still supply the value; booleans get `--x` / `--no-x`."""
    group = parser.add_argument_group(title) if title else parser
    for item in declared(*classes):
        kind, _ = _base_type(item.type)
        help_text = f"{item.help}{default_text(item)} [{item.env}]".replace("%", "%%")
        if kind is bool:
            # --x sets True; --no-x (not for names that already start with no_) sets False.
            negative = [] if item.name.startswith("no_") else ["--no-" + item.flag[2:]]
            group.add_argument(item.flag, *negative, dest=item.name, action=_Switch, nargs=0,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            metavar = "{" + ",".join(map(str, item.choices)) + "}" if item.choices else item.name.upper()
            group.add_argument(item.flag, dest=item.name, default=argparse.SUPPRESS, metavar=metavar,
                               choices=item.choices, help=help_text,
                               type=lambda text, item=item: _flag_value(item, text))


def default_text(item: Declared) -> str:
    """" (default: X)" for help; nothing for None (the help says what no value means). Paths are
    shown as declared (relative to the project root), never as this machine's absolute path."""
    if item.default is None or item.required:
        return ""
    if isinstance(item.default, bool):
        return f" (default: {'on' if item.default else 'off'})"
    return f" (default: {item.default})"


class _Switch(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, option_string == self.option_strings[0])


def _flag_value(item: Declared, text: str) -> Any:
    try:
        return parse_value(item, text, item.flag)
    except SettingsError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def read_file(path: Path) -> dict[str, Any]:
    """A YAML mapping of setting names to values."""
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text())
    # ValueError: not UTF-8, or (found by fuzzing) an integer of over 4,300 digits in PyYAML's int()
    except (OSError, ValueError, yaml.YAMLError) as err:
        # YAML errors span lines (the problem, then where): an error is one line
        raise SettingsError(f"{path}: cannot read the settings file ({' '.join(str(err).split())})") from None
    except RecursionError:  # found by fuzzing: PyYAML recurses per level of `[[[...`
        raise SettingsError(f"{path}: cannot read the settings file (nested too deep)") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise SettingsError(f"{path}: expected a mapping of setting names to values")
    return loaded


@dataclass(frozen=True)
class Values:
    """Resolved settings: the value of each, and which ones a user gave (not defaults)."""

    values: dict[str, Any]
    given: frozenset[str]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def build(self, cls: type, **overrides: Any) -> Any:
        """An instance of `cls` (nested dataclasses included) from these values."""
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for field in dataclasses.fields(cls):
            if field.name in overrides:
                kwargs[field.name] = overrides[field.name]
            elif _is_dataclass_type(hints[field.name]):
                kwargs[field.name] = self.build(hints[field.name])
            elif _setting_name(field) in self.values:
                kwargs[field.name] = self.values[_setting_name(field)]
        return cls(**kwargs)

    def with_defaults(self, profile: Mapping[str, Any]) -> Values:
        """Other defaults (e.g. the sample profile) for the settings nobody gave."""
        unknown = sorted(set(profile) - set(self.values))
        if unknown:  # a misspelt profile key would otherwise change nothing, silently
            raise TypeError(f"profile names undeclared settings {unknown}")
        return Values({**self.values, **{k: v for k, v in profile.items() if k not in self.given}}, self.given)


def _anchored_default(item: Declared) -> Any:
    kind, _ = _base_type(item.type)
    if kind is Path and isinstance(item.default, Path):
        return paths.anchored(item.default)
    return item.default


def resolve(classes: type | tuple[type, ...], args: argparse.Namespace | None = None,
            environ: Mapping[str, str] | None = None, config_file: Path | None = None) -> Values:
    """Flags over FMNIST_* variables over the YAML file over the declared defaults. The file is
    `config_file`, else a declared setting named `config` (its flag or variable)."""
    items = declared(*(classes if isinstance(classes, tuple) else (classes,)))
    environ = os.environ if environ is None else environ
    flags = vars(args) if args is not None else {}
    if config_file is None and any(item.name == CONFIG for item in items):
        config_item = next(item for item in items if item.name == CONFIG)
        config_file = flags.get(CONFIG) or (parse_value(config_item, environ[config_item.env], config_item.env)
                                            if config_item.env in environ else None)
    from_file = read_file(config_file) if config_file else {}
    known = {item.name for item in items}
    unknown = sorted(set(from_file) - known)
    if unknown:
        raise SettingsError(f"{config_file}: unknown settings {unknown}")
    values, given = {}, set()
    for item in items:
        if item.name in flags:
            values[item.name] = flags[item.name]
        elif item.env in environ:
            values[item.name] = parse_value(item, environ[item.env], item.env)
        elif item.name in from_file:
            values[item.name] = parse_value(item, from_file[item.name], f"{config_file}: {item.name}")
        else:
            values[item.name] = _anchored_default(item)
            continue
        given.add(item.name)
    missing = [f"{i.flag} ({i.env})" for i in items if i.required and values[i.name] in (None, "")]
    if missing:
        raise SettingsError(f"missing {', '.join(missing)}: give a flag, a variable or a --config file entry")
    return Values(values, frozenset(given))
