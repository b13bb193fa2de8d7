"""sgafast: fast, faithful test-time latent refinement (SGA/SGA+) for CompressAI codecs."""

import warnings

__version__ = "0.1.0"

# CompressAI 1.2.8 calls torch.jit.script at import; torch 2.14 warns about it on every run.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated",
                        category=FutureWarning)

from . import bitstream, families, images
from .errors import SgafastError
from .models import BaseModel
from .models import load as load_model
from .ops.noise import gumbel_noise
from .ops.rounding import Rounding
from .ops.schedule import temperature
from .ops.sga_round import sga_round
from .refine import RefineConfig, Refined, refine
from .refining import Refining

__all__ = ["bitstream", "families", "images", "BaseModel", "RefineConfig", "Refined", "Refining",
           "Rounding", "SgafastError", "gumbel_noise", "load_model", "refine", "sga_round",
           "temperature"]
