"""ConfigError and the one-line-per-problem messages it carries.

``loader.py``, ``files.py``, ``sources.py`` and ``upstream_import.py`` raise
:class:`ConfigError`; the CLI prints ``str(error)`` and exits with
``ConfigError.EXIT_CODE`` (78, EX_CONFIG). Each line names the key path, the
bad value, what is expected and, for unknown keys, a "did you mean" drawn
from the schema with difflib. At most :data:`MAX_PROBLEMS` lines are shown.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError

from nvdp_node.config.keys import SECTIONS, config_keys, model_at, text_kind
from nvdp_node.config.schema import CROSS_KEY, Config
from nvdp_node.domain.errors import EX_CONFIG, PermanentError

MAX_PROBLEMS = 20  # lines shown; a file with 200 000 typos needs no 200 000-line answer

# Upstream (NVIDIA k8s-device-plugin) features nvdp does not implement, by
# snake_case name, so a key copied from an upstream config gets a useful hint.
UNSUPPORTED_UPSTREAM: dict[str, str] = {
    "gdrcopy_enabled": "GDRCopy injection is not supported yet",
    "gds_enabled": "GPUDirect Storage injection is not supported yet",
    "mofed_enabled": "MOFED injection is not supported yet",
    "imex": "IMEX channels are not supported yet",
    "container_driver_root": "not needed: nvdp runs on the host, not in a container",
    "device_discovery_strategy": "only NVML discovery is supported",
    "flags": "nvdp has no [flags] table; `nvdp config import FILE` translates an upstream config",
}
# Upstream spellings whose snake_case form differs from nvdp's key.
_ALIASES = {
    "driver_root": "plugin.nvidia_driver_root",
    "dev_root": "plugin.nvidia_dev_root",
    "nvidia_ctk_path": "plugin.nvidia_cdi_hook_path",
    "mps_root": "sharing.mps.root",
    "replicas": "sharing.time_slicing.resources",
}


class ConfigError(PermanentError):
    """The configuration cannot be used; ``lines`` lists every problem found."""

    EXIT_CODE = EX_CONFIG

    def __init__(self, header: str, lines: Sequence[str], *, path: Path | None = None) -> None:
        self.header = header
        self.lines = list(lines)
        self.path = path
        body = "".join(f"\n  {line}" for line in self.lines)
        super().__init__(f"nvdp: {header}{':' if self.lines else ''}{body}", exit_code=EX_CONFIG)


def show_value(value: object, limit: int = 60) -> str:
    """A value as the user would have written it in TOML, shortened."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:  # circular structures cannot come from TOML, but be safe
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def key_path(loc: Iterable[object]) -> str:
    """("health", "ignored_xids", 2) -> "health.ignored_xids[2]"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def did_you_mean(key: str, section: str = "") -> str:
    """A hint for an unknown key at ``section.key``, or "" if nothing is close."""
    here = f"{section}.{key}" if section else key
    snake = _snake(key)
    if "[" in section:  # inside a list entry such as resources.gpus[0]: only its own keys
        close = difflib.get_close_matches(snake, _names_in(section), n=1)
        return f"did you mean '{section}.{close[0]}'?" if close else ""
    if snake in UNSUPPORTED_UPSTREAM:
        return UNSUPPORTED_UPSTREAM[snake]
    if snake in _ALIASES:
        return f"did you mean '{_ALIASES[snake]}'?"
    # The right name in the wrong table, or an upstream camelCase spelling of it.
    same = [k for k in [*config_keys(), *SECTIONS] if k.rpartition(".")[2] == snake and k != here]
    if not section and snake in SECTIONS:
        same = [snake]
    if same:
        return f"did you mean '{same[0]}'?"
    local = [f"{section}.{name}" if section else name for name in _names_in(section)]
    close = difflib.get_close_matches(here, local, n=1) or difflib.get_close_matches(here, config_keys(), n=1)
    return f"did you mean '{close[0]}'?" if close else ""


def unknown_key_line(loc: Sequence[str | int]) -> str:
    """``health.enabld: unknown key (did you mean 'health.enabled'?)``."""
    hint = did_you_mean(str(loc[-1]), key_path(loc[:-1]))
    return f"{key_path(loc)}: unknown key" + (f" ({hint})" if hint else "")


def split_unknown(data: Mapping[str, object]) -> tuple[dict[str, object], list[tuple[str, ...]]]:
    """The known part of a config document, and the paths of its unknown keys in document order.

    Checking names here, before pydantic, keeps a document with a huge number
    of unknown keys cheap: they are counted, not validated one by one.
    """
    return _split(data, ())


def _split(data: Mapping[str, object], where: tuple[str, ...]) -> tuple[dict[str, object], list[tuple[str, ...]]]:
    fields = SECTIONS[".".join(where)].model_fields if where else Config.model_fields
    known: dict[str, object] = {}
    unknown: list[tuple[str, ...]] = []
    for name, value in data.items():
        path = (*where, str(name))
        if name not in fields:
            unknown.append(path)
        elif ".".join(path) in SECTIONS and isinstance(value, Mapping):
            known[name], inner = _split(value, path)
            unknown.extend(inner)
        else:
            known[name] = value
    return known, unknown


def problem_lines(first: Sequence[str], unknown: Sequence[tuple[str, ...]] = ()) -> list[str]:
    """``first``, then a line per unknown key, cut to MAX_PROBLEMS lines and a count of the rest."""
    shown = list(first[:MAX_PROBLEMS])
    shown += [unknown_key_line(loc) for loc in unknown[: MAX_PROBLEMS - len(shown)]]
    hidden = len(first) + len(unknown) - len(shown)
    if hidden:
        shown.append(f"... and {hidden} more problems; fix these, then run `nvdp config validate` again")
    return shown


def format_validation_error(exc: ValidationError, sources: Mapping[str, str] | None = None) -> list[str]:
    """One line per pydantic error: key path, what is expected, the bad value and its source."""
    lines = []
    for err in exc.errors(include_url=False)[: MAX_PROBLEMS + 1]:
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(unknown_key_line(loc))
            continue
        if err["type"] == CROSS_KEY:  # a model-level check: each message names its key and value
            for where, problem in err["ctx"]["problems"]:
                origin = _source_of(tuple(where), sources or {})
                suffix = f" (from {origin})" if origin not in ("file", "default", "") else ""
                lines.append(f"{key_path(where)}: {problem}{suffix}")
            continue
        shown = show_value(err.get("input"))
        msg = _friendly(err["type"], err["msg"])
        if err["type"] == "tuple_type" and isinstance(err.get("input"), Mapping) and _is_table_list(loc):
            # [resources.gpus] (one bracket) is a table; each list entry needs [[resources.gpus]].
            msg += f" of tables: write [[{key_path(loc)}]], with two brackets, above each entry"
        details = [] if shown in msg else [f"got {shown}"]
        origin = _source_of(loc, sources or {})
        if origin not in ("file", "default", ""):  # the header already names the file
            details.append(f"from {origin}")
        lines.append(f"{key_path(loc)}: {msg}" + (f" ({', '.join(details)})" if details else ""))
    return lines


def _friendly(kind: str, msg: str) -> str:
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "expected a table"
    if kind == "tuple_type":
        return "expected a list"
    # Strict types: TOML has booleans and integers, and a quoted "true" or "5" is a string.
    if kind == "bool_type":
        return "expected true or false (a TOML boolean, without quotes)"
    if kind == "int_type":
        return "expected an integer (a TOML integer, without quotes, not a boolean)"
    if kind == "missing":
        return "required key missing"
    return msg.removeprefix("Value error, ")


def _is_table_list(loc: tuple[object, ...]) -> bool:
    key = key_path(loc)
    return key in config_keys() and text_kind(key) == "table list"


def _source_of(loc: tuple[object, ...], sources: Mapping[str, str]) -> str:
    names = [str(p) for p in loc if not isinstance(p, int)]
    for n in range(len(names), 0, -1):
        found = sources.get(".".join(names[:n]))
        if found:
            return found
    return ""


def _names_in(section: str) -> list[str]:
    model = model_at(section)
    return list(model.model_fields) if model else []


def _snake(name: str) -> str:
    """deviceIDStrategy / device-id-strategy / DEVICE_ID_STRATEGY -> device_id_strategy."""
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return name.replace("-", "_").lower()


_TOML_POSITION = re.compile(r"^(?P<msg>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)$", re.DOTALL)


def toml_error_lines(path: Path, text: str, exc: ValueError) -> list[str]:
    """``path:line:column: message``, then the offending line with a caret under the column."""
    message = str(exc)
    match = _TOML_POSITION.match(message)
    source_lines = text.splitlines() or [""]
    if match:
        message, line, col = match["msg"], int(match["line"]), int(match["col"])
    else:
        message = message.replace(" (at end of document)", "")
        line, col = len(source_lines), len(source_lines[-1]) + 1
    shown = source_lines[line - 1] if 0 < line <= len(source_lines) else ""
    if message == "Invalid value" and (shown[col - 1 : col].isalpha() or shown[col - 1 : col] in ("/", ".")):
        message += " (strings must be quoted, e.g. key = \"value\")"
    caret = " " * len(shown[: col - 1].expandtabs()) + "^"
    return [f"{path}:{line}:{col}: invalid TOML: {message}", f"  {shown.expandtabs()}", f"  {caret}"]


def utf8_error_line(path: Path, raw: bytes, exc: UnicodeDecodeError) -> str:
    line = raw.count(b"\n", 0, exc.start) + 1
    col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
    return f"{path}:{line}:{col}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); TOML files must be UTF-8"
