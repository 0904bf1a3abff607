"""Kubelet's resource-name and version checks for Register, and Go-style error texts.

Written from the rules in docs (kubelet-api.md §2.1): ``IsExtendedResourceName`` in
``k8s.io/kubernetes/pkg/apis/core/v1/helper`` and ``IsQualifiedName`` /
``IsDNS1123Subdomain`` in ``k8s.io/apimachinery/pkg/util/validation``.

Stdlib only: this module runs inside system-test boxes.
"""

from __future__ import annotations

import re

SUPPORTED_VERSIONS: tuple[str, ...] = ("v1beta1",)

# Go: errUnsupportedVersion = "requested API version %q is not supported by kubelet.
# Supported version is %q", formatted with api.SupportedVersions ([]string). Go's %q on a
# []string quotes every element inside the brackets, so the tail reads ["v1beta1"].
UNSUPPORTED_VERSION_FMT = "requested API version {version} is not supported by kubelet. Supported version is {supported}"
INVALID_RESOURCE_NAME_FMT = "the ResourceName {name} is invalid"

_DEFAULT_NAMESPACE_PREFIX = "kubernetes.io/"
_REQUESTS_PREFIX = "requests."
_DNS1123_SUBDOMAIN_MAX = 253
_QUALIFIED_NAME_MAX = 63
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_RE = re.compile(_DNS1123_LABEL + r"(\." + _DNS1123_LABEL + r")*")
_QUALIFIED_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def go_quote(s: str) -> str:
    """Approximate Go's ``%q`` / ``strconv.Quote`` for a string."""
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def go_quote_list(items: list[str] | tuple[str, ...]) -> str:
    """Go's ``%q`` applied to a ``[]string``: ``["a" "b"]``."""
    return "[" + " ".join(go_quote(i) for i in items) + "]"


def unsupported_version_error(version: str) -> str:
    return UNSUPPORTED_VERSION_FMT.format(version=go_quote(version), supported=go_quote_list(SUPPORTED_VERSIONS))


def invalid_resource_name_error(name: str) -> str:
    return INVALID_RESOURCE_NAME_FMT.format(name=go_quote(name))


def is_version_supported(version: str) -> bool:
    return version in SUPPORTED_VERSIONS


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= _DNS1123_SUBDOMAIN_MAX and _DNS1123_SUBDOMAIN_RE.fullmatch(value) is not None


def is_qualified_name(value: str) -> bool:
    """``validation.IsQualifiedName``: ``[prefix/]name``, prefix a DNS-1123 subdomain."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix or not is_dns1123_subdomain(prefix):
            return False
    else:
        return False
    if not name or len(name) > _QUALIFIED_NAME_MAX:
        return False
    return _QUALIFIED_NAME_RE.fullmatch(name) is not None


def is_native_resource(name: str) -> bool:
    """No prefix at all, or anything under ``kubernetes.io/`` (checked anywhere in the name)."""
    return "/" not in name or _DEFAULT_NAMESPACE_PREFIX in name


def is_extended_resource_name(name: str) -> bool:
    """``v1helper.IsExtendedResourceName``, the check kubelet's Register applies."""
    if is_native_resource(name) or name.startswith(_REQUESTS_PREFIX):
        return False
    return is_qualified_name(_REQUESTS_PREFIX + name)
