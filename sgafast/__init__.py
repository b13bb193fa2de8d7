"""sgafast: fast, faithful test-time latent refinement (SGA/SGA+) for CompressAI codecs."""

import warnings

# CompressAI 1.2.8 calls torch.jit.script at import; torch 2.14 warns about it on every run.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated",
                        category=FutureWarning)

from . import bitstream, families, images
from .errors import SgafastError
from .models import BaseModel
from .models import load as load_model
from .noise import gumbel_noise
from .refine import RefineConfig, Refined, refine
from .rounding import Rounding, sga_round
from .schedule import temperature

__all__ = ["bitstream", "families", "images", "BaseModel", "RefineConfig", "Refined", "Rounding",
           "SgafastError", "gumbel_noise", "load_model", "refine", "sga_round", "temperature"]
__version__ = "0.1.0"
