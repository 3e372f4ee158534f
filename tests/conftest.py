import pytest

from spice.testing import tiny_model_dir


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random Llama with the SmolLM2 tokenizer, written once per test session."""
    return tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))
