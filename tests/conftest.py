import pytest
import torch


@pytest.fixture
def float64():
    """Double precision for one test file's comparisons (``pytestmark = pytest.mark.usefixtures("float64")``);
    restored afterwards, since a module-level switch would leak into every other test file."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
