"""Config as text: the commented default file and the effective configuration.

``nvdp config init`` prints :func:`render_template` (which is also the
shipped etc/nvdp/config.toml), ``nvdp config import`` uses it with the
imported keys uncommented, ``nvdp config show`` prints
:func:`render_effective`, and ``nvdp serve`` logs :func:`effective_summary`
at start and on every reload.
"""

from __future__ import annotations

import textwrap
from collections.abc import Collection, Iterator, Mapping, Sequence

import tomli_w

from nvdp_node.config.loader import CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH, env_var_name
from nvdp_node.config.keys import SECTIONS, config_keys, field_info
from nvdp_node.config.schema import Config

_WIDTH = 79

HEADER = f"""\
# nvdp configuration: {DEFAULT_CONFIG_PATH}
# (${CONFIG_PATH_ENV} or `nvdp --config PATH` may name another file).
#
# Every setting is listed with its default value, commented out: remove the
# leading "#" to change one. Precedence: command-line flag > environment
# variable (the "env:" line) > this file > default.
#
# `nvdp config validate` checks this file, `nvdp config show --sources` prints
# the effective configuration and where each value came from. Apply changes
# with `systemctl reload nvdp`: an invalid file is reported and the running
# configuration kept. Every key is described in configuration.md in the nvdp
# documentation.
"""


def render_template(
    config: Config | None = None,
    *,
    active: Collection[str] = (),
    preamble: Sequence[str] = (),
) -> str:
    """The commented file: keys in ``active`` are set to ``config``'s value, the rest show defaults."""
    values = _flat(_dump(config or Config()))
    defaults = _flat(_dump(Config()))
    out = [HEADER.rstrip("\n")]
    if preamble:
        out += ["#"] + [f"# {line}".rstrip() for line in preamble]
    for kind, name in _layout():
        if kind == "section":
            out += ["", f"[{name}]"]
            out += _comment(SECTIONS[name].__doc__ or "")
            continue
        out.append("")
        out += _comment(field_info(name).description or "")
        leaf = name.rpartition(".")[2]
        if name == "version":
            out.append(f"{leaf} = {_inline(values[name])}")
            continue
        out.append(f"# env: {env_var_name(name)}")
        if name in active:
            out += _assignment(leaf, values[name])
        else:
            out.append(f"#{leaf} = {_inline(defaults[name])}")
    return "\n".join(out) + "\n"


def render_default() -> str:
    """What `nvdp config init` prints and etc/nvdp/config.toml contains."""
    return render_template()


def render_effective(config: Config, sources: Mapping[str, str] | None = None) -> str:
    """The effective configuration as TOML; with ``sources``, each key says where it came from."""
    dumped = _dump(config)
    if sources is None:
        return tomli_w.dumps(dumped)
    values = _flat(dumped)
    out: list[str] = []
    for kind, name in _layout():
        if kind == "section":
            out += ["", f"[{name}]"]
        else:
            first, *rest = _assignment(name.rpartition(".")[2], values[name])
            out += [f"{first}  # {sources.get(name, 'default')}", *rest]
    return "\n".join(out).lstrip("\n") + "\n"


def effective_summary(config: Config) -> str:
    """Every leaf key on one line, ``key=value`` in file order, values as TOML writes them.

    ``version=1 resource_name="nvidia.com/gpu" kubelet.socket_dir="/var/lib/kubelet/device-plugins" ...``
    """
    values = _flat(_dump(config))
    return " ".join(f"{key}={_inline(values[key], sep=',')}" for key in config_keys())


def _layout() -> Iterator[tuple[str, str]]:
    """("key", "version"), ..., ("section", "kubelet"), ("key", "kubelet.socket_dir"), ..."""
    current = ""
    for key in config_keys():
        section = key.rpartition(".")[0]
        if section != current:
            current = section
            yield "section", section
        yield "key", key


def _flat(dumped: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for name, value in dumped.items():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(value, Mapping) and path in SECTIONS:
            flat.update(_flat(value, path))
        else:
            flat[path] = value
    return flat


def _dump(config: Config) -> dict[str, object]:
    # An unset optional key (a shared resource's rename) is left out: TOML has no null.
    return config.model_dump(mode="json", exclude_none=True)


def _assignment(leaf: str, value: object) -> list[str]:
    """``leaf = value``; a list of tables gets one inline table per line."""
    if isinstance(value, list) and value and all(isinstance(item, Mapping) for item in value):
        return [f"{leaf} = ["] + [f"  {_inline(item)}," for item in value] + ["]"]
    return [f"{leaf} = {_inline(value)}"]


def _inline(value: object, sep: str = ", ") -> str:
    """A TOML value on one line (tomli-w writes arrays over several lines, tables as sections)."""
    if isinstance(value, (list, tuple)):
        return "[" + sep.join(_inline(item, sep) for item in value) + "]"
    if isinstance(value, Mapping):
        pairs = sep.join(f"{_key(k)}{' = ' if sep == ', ' else '='}{_inline(v, sep)}" for k, v in value.items())
        return f"{{ {pairs} }}" if sep == ", " else f"{{{pairs}}}"
    return tomli_w.dumps({"v": value})[len("v = ") :].rstrip("\n")


def _key(name: object) -> str:
    return tomli_w.dumps({name: 0})[: -len(" = 0\n")]


def _comment(text: str) -> list[str]:
    return [f"# {line}" for line in textwrap.wrap(" ".join(text.split()), _WIDTH - 2, break_on_hyphens=False)]
