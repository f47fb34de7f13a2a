"""YAML for specs (audit specs, sweep spaces): safe loading with YAML 1.2 numbers.

PyYAML implements YAML 1.1, whose float pattern needs a dot and a signed exponent, so ``1e-4`` and
``1e3`` load as *strings*; YAML 1.2 (and every user) reads them as numbers. The loader here is
``yaml.SafeLoader`` with the float resolver widened to the YAML 1.2 core schema.
"""

from __future__ import annotations

import re

import yaml

from mine_dist import storage


class _Loader(yaml.SafeLoader):
    pass


# YAML 1.2 core schema floats (plus 1.1's .inf/.nan spellings, which SafeLoader already handles).
_FLOAT = re.compile(r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
# Plain integers stay ints: the int resolver is tried first for them, so only patterns with a dot
# or an exponent reach the float tag.
_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _ch in list("-+0123456789."):
    _Loader.yaml_implicit_resolvers[_ch] = [
        (tag, rx) for tag, rx in _Loader.yaml_implicit_resolvers.get(_ch, []) if tag != "tag:yaml.org,2002:float"]
    _Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, [_ch])


def loads(text: str | bytes, where: str):
    """Parse YAML text; ``where`` names the source in the one-line error.

    Raises:
        ValueError: not valid YAML (the first line of the parser's message).
    """
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ValueError(f"{where}: not valid YAML: {str(e).splitlines()[0]}") from None


def read(uri: str, where: str):
    """Load a YAML file at any storage URI (see :func:`loads`)."""
    return loads(storage.read_bytes(uri), where)
