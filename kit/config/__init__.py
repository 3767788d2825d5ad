"""Every knob of a run: the schema, each field with its rule (schema, rules), the named presets
(presets; v1 frozen as data in v1), `--set` overrides (overrides), the named pipelines of
several runs (pipelines). Nothing here reads data or imports JAX.

The package's public names are gathered here, so the rest of the kit says
`from kit.config import Config, preset`.
"""
from kit.config.overrides import *
from kit.config.pipelines import *
from kit.config.presets import *
from kit.config.schema import *
