"""Adapters: model families of other libraries as dynamic registry names.

``smp:<arch>/<encoder>`` (segmentation_models.pytorch, extra ``smp``) and ``hf:<model type>``
(Hugging Face transformers, extra ``hf``). Registering a family imports neither library; a
name is resolved, and the library imported, on first use.
"""

from seglab.models.adapters import hf, smp
from seglab.models.registry import register_family

register_family("smp", smp.resolve, pattern="smp:<arch>/<encoder>",
                description="any segmentation_models.pytorch architecture x encoder",
                examples=smp.EXAMPLES)
register_family("hf", hf.resolve, pattern="hf:<model type>",
                description="Hugging Face transformers semantic-segmentation model",
                examples=hf.EXAMPLES)
