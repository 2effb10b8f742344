"""Test configuration. The VM fixtures come from the `cos_vm` plugin (vm/pytest_plugin.py),
which pytest loads through the package's entry point; this only says so clearly when the
package was not installed."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("cos_vm"):
        raise pytest.UsageError(
            "the cos_vm pytest plugin is not loaded: install the project with "
            "`pip install -e .` (it registers vm.pytest_plugin as an entry point)"
        )
