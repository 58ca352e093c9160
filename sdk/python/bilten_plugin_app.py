"""The component's entry, written by `bilten-analytics plugin build`: the
contract's `validator` export around the plugin module `plugin`."""

import json

import bilten_plugin as sdk
import plugin
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

_config: dict = {}


class Validator(exports.Validator):
    def info(self) -> types.PluginInfo:
        return types.PluginInfo(name=str(getattr(plugin, "NAME", "python-plugin")),
                                version=str(getattr(plugin, "VERSION", "0.0.0")))

    def init(self, config: str) -> None:
        global _config
        try:
            _config = json.loads(config)
            if hasattr(plugin, "init"):
                plugin.init(_config)
        except Exception as e:  # init's error: the batch fails under the plugin's policy
            raise Err(f"{type(e).__name__}: {e}")

    def process(self, batch: types.Batch) -> list:
        return [sdk.to_wit(types, plugin.check(e, _config)) for e in sdk.events_of(batch)]
