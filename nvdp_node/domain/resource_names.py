"""Kubelet's rules for extended resource names, as a pure function.

Kubelet rejects a Register call whose resource name fails
``IsExtendedResourceName`` (kubelet-api.md §2.1). The config schema calls
:func:`validate_extended_resource_name` so that a bad ``resource_name`` fails
when the config is loaded; the daemon may call it again before registering.
"""

from __future__ import annotations

import re

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
