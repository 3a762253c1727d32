import pytest
from explain_helpers import save_all


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """{kind: path} of saved tiny models (decoder, encoder, seq2seq)."""
    return save_all(tmp_path_factory.mktemp("explain_models"))
