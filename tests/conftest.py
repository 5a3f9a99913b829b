"""Shared test fixtures."""

from pathlib import Path

import pytest
import torch

from ccl.icd.tabular import default_xml_path


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Two shared cores: one torch thread per process runs these small models fastest."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def xml_path() -> Path:
    """The Tabular List XML shipped with simple-icd-10-cm (skip when absent)."""
    try:
        path = default_xml_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    if not path.exists():
        pytest.skip(f"{path} is not shipped with this simple-icd-10-cm version")
    return path
