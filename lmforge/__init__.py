"""lmforge: build, train, evaluate and use transformer language models on your own machine.

    import lmforge
    run = lmforge.train_lm(lmforge.RunConfig.load("tiny.toml"))
    lm = lmforge.load_model_dir(run.out_dir)
    print(lmforge.generate_text(lm.model, lm.tokenizer, "ROMEO:", lmforge.GenerationConfig()))
"""

from .version import __version__  # noqa: E402,F401

from .config import apply_overrides, from_dict, to_dict  # noqa: E402
from .errors import LMForgeError  # noqa: E402
from .evaluation import perplexity, text_perplexity  # noqa: E402
from .inference import GenerationConfig, generate, generate_text, stream_text  # noqa: E402
from .modeldir import load_model_dir, save_model_dir  # noqa: E402
from .models import ModelConfig, build_model  # noqa: E402
from .tasks import RunConfig, train_task  # noqa: E402
from .tasks.lm import train_lm  # noqa: E402
from .tokenizers import load_tokenizer, train_tokenizer  # noqa: E402
from .training import Trainer, TrainConfig  # noqa: E402

__all__ = [
    "GenerationConfig", "LMForgeError", "ModelConfig", "RunConfig", "TrainConfig", "Trainer",
    "apply_overrides", "build_model", "from_dict", "generate", "generate_text", "load_model_dir",
    "load_tokenizer", "perplexity", "save_model_dir", "stream_text", "text_perplexity", "to_dict",
    "train_lm", "train_task", "train_tokenizer",
]
