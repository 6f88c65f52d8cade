import pytest

from tests.core import fakeplugin


@pytest.fixture
def scripted():
    """The scripted store class, registered and with its records cleared."""
    fakeplugin.install()
    fakeplugin.ScriptedStore.objects.clear()
    fakeplugin.ScriptedStore.calls.clear()
    return fakeplugin.ScriptedStore
