import pytest
import torch
from ft_helpers import tiny_model


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def tokens():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 97, (2, 16), generator=g)  # B*T < 128: the unfused q/k/v path
