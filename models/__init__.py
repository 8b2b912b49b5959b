"""Model architectures (one file each) and their registry. Models never do I/O."""

from hsikit.models.registry import create_model, get_entry, list_models, register_model

from hsikit.models import spectral_cnn as _spectral_cnn  # noqa: F401,E402  (registers)
from hsikit.models import unet as _unet  # noqa: F401,E402  (registers)
from hsikit.models import freenet as _freenet  # noqa: F401,E402  (registers)
from hsikit.models import morpmamba as _morpmamba  # noqa: F401,E402  (registers)
from hsikit.models import svm as _svm  # noqa: F401,E402  (registers)
from hsikit.models import random_forest as _random_forest  # noqa: F401,E402  (registers)
from hsikit.models import essaformer as _essaformer  # noqa: F401,E402  (registers)
from hsikit.models import hsdt as _hsdt  # noqa: F401,E402  (registers)
from hsikit.models import mp_hsir as _mp_hsir  # noqa: F401,E402  (registers)
from hsikit.models import spectralgpt as _spectralgpt  # noqa: F401,E402  (registers)
from hsikit.models import spectralgpt_heads as _spectralgpt_heads  # noqa: F401,E402  (registers)
from hsikit.models import ffdnn as _ffdnn  # noqa: F401,E402  (registers)

__all__ = ["create_model", "get_entry", "list_models", "register_model"]
