import pytest

import ckptdb


@pytest.fixture
def path(tmp_path):
    return tmp_path / "run.ckpt"


@pytest.fixture
def db(path):
    d = ckptdb.open(path)
    yield d
    d.close()
