from __future__ import annotations

import pytest

from tests.training.tiny import make_batch


@pytest.fixture
def batch():
    return make_batch()
