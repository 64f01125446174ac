"""Fixtures of the tuner tests."""

import pytest

from tests.tuner.common import write_data


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("tuner_records"))
