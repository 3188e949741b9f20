"""Tests for the twistd plugin in twisted/plugins/chatd_plugin.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin, getPlugins
from zope.interface.verify import verifyObject

from tests.daemon import venv_script


def test_plugin_provides_service_maker() -> None:
    """The installed plugin is a valid IServiceMaker named chatd that uses chatd.tap."""
    from twisted import plugins

    makers = {p.tapname: p for p in getPlugins(IServiceMaker, plugins)}
    maker = makers["chatd"]
    assert verifyObject(IServiceMaker, maker)
    assert verifyObject(IPlugin, maker)
    assert maker.module == "chatd.tap"
    assert maker.options().__class__.__module__ == "chatd.tap"


def test_twistd_lists_chatd_outside_the_source_tree(tmp_path: Path) -> None:
    """The installed twistd finds the plugin from any directory, not just this checkout."""
    result = subprocess.run(
        [venv_script("twistd"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "chatd" in result.stdout
    assert "Unable to write to plugin cache" not in result.stderr + result.stdout
