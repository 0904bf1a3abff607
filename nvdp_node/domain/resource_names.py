"""Resource names: kubelet's rules for them, and the plugin socket each one is served on.

Kubelet rejects a Register call whose resource name fails
``IsExtendedResourceName`` (kubelet-api.md §2.1). The config schema calls
:func:`validate_extended_resource_name` and :func:`socket_path_problem` so that
a name kubelet would refuse, or one whose socket cannot be bound, fails when
the config is loaded; ``nvdp_node.app.resource_plugin`` calls
:func:`socket_name` to name the socket it serves. All pure.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePath

# k8s.io/apimachinery validation: DNS-1123 subdomain and qualified-name part.
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_SUBDOMAIN_MAX = 253
_NAME_PART_MAX = 63
_REQUESTS_PREFIX = "requests."


def validate_extended_resource_name(name: str) -> str | None:
    """Return kubelet's error for ``name`` followed by the rule it breaks, or None if valid."""
    reason = _violation(name)
    if reason is None:
        return None
    return f'the ResourceName "{name}" is invalid: {reason}'


def _violation(name: str) -> str | None:
    if "/" not in name:
        return f'it needs a domain prefix, e.g. "nvidia.com/{name}" (a name without "/" is a native resource)'
    if "kubernetes.io/" in name:
        return 'the "kubernetes.io/" domain is reserved for native resources'
    if name.startswith(_REQUESTS_PREFIX):
        return f'it must not start with "{_REQUESTS_PREFIX}"'
    # Kubelet checks the quota form "requests.<name>", which is what limits the prefix length.
    prefix, _, part = (_REQUESTS_PREFIX + name).partition("/")
    if "/" in part:
        return 'it may contain only one "/"'
    if len(prefix) > _SUBDOMAIN_MAX:
        limit = _SUBDOMAIN_MAX - len(_REQUESTS_PREFIX)
        return f"the domain prefix is longer than {limit} characters"
    if not _DNS1123_SUBDOMAIN.fullmatch(prefix):
        return (
            "the domain prefix must be a DNS subdomain: lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    if not part:
        return 'the name after "/" is empty'
    if len(part) > _NAME_PART_MAX:
        return f'the name after "/" is longer than {_NAME_PART_MAX} characters'
    if not _QUALIFIED_NAME_PART.fullmatch(part):
        return (
            "the name after \"/\" must consist of letters, digits, '-', '_' or '.', "
            "and start and end with a letter or digit"
        )
    return None


# sun_path is 108 bytes on Linux and the kernel wants a NUL inside it, so a
# path that can be bound or dialled has at most 107 bytes; a file name at most
# NAME_MAX (255) bytes.
UNIX_PATH_MAX = 107
NAME_MAX = 255
# The plugin server binds in a private directory <socket_dir>/.nvdp-<12 hex>/s
# and renames the socket into place, so that path must fit as well.
PRIVATE_BIND_SUFFIX = len("/.nvdp-") + 12 + len("/s")


def socket_name(resource_name: str) -> str:
    """``nvidia.com/gpu`` → ``nvidia-gpu.sock`` (upstream's naming); other domains keep theirs.

    ``example.com/gpu`` → ``nvidia-example.com-gpu.sock``, so two resource names
    never share a socket (a reload from one to the other serves both at once).
    """
    domain, _, name = resource_name.rpartition("/")
    return f"nvidia-{name}.sock" if domain == "nvidia.com" else f"nvidia-{domain}-{name}.sock"


def socket_dir_problem(socket_dir: PurePath | str) -> str | None:
    """Why no plugin socket can be bound under ``socket_dir`` (too deep), or None."""
    size = len(os.fsencode(str(socket_dir)))
    if size + PRIVATE_BIND_SUFFIX <= UNIX_PATH_MAX:
        return None
    return (
        f"the socket directory {str(socket_dir)!r} is {size} bytes long; nvdp binds its socket as "
        f"<socket_dir>/.nvdp-<12 hex digits>/s ({PRIVATE_BIND_SUFFIX} more bytes) before moving it into "
        f"place, and a unix socket path has at most {UNIX_PATH_MAX} bytes, so the directory may have at "
        f"most {UNIX_PATH_MAX - PRIVATE_BIND_SUFFIX}; use a shorter kubelet.socket_dir"
    )


def socket_path_problem(socket_dir: PurePath | str, resource_name: str) -> str | None:
    """Why ``resource_name`` cannot be served under ``socket_dir``, with the computed path; or None."""
    dir_problem = socket_dir_problem(socket_dir)
    if dir_problem:
        return dir_problem
    name = socket_name(resource_name)
    path = f"{str(socket_dir).rstrip('/')}/{name}"
    name_size, path_size = len(os.fsencode(name)), len(os.fsencode(path))
    if name_size > NAME_MAX:
        return (
            f"the socket file name {name!r} for {resource_name!r} is {name_size} bytes long, over the "
            f"{NAME_MAX}-byte limit of a file name; use a shorter resource_name"
        )
    if path_size > UNIX_PATH_MAX:
        room = UNIX_PATH_MAX - (path_size - name_size)
        return (
            f"the socket path {path!r} for {resource_name!r} is {path_size} bytes long, over the "
            f"{UNIX_PATH_MAX}-byte limit of a unix socket path; use a resource_name whose socket name "
            f"fits in {room} bytes, or a shorter kubelet.socket_dir"
        )
    return None
