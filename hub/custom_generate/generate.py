"""TSDI decoding for ``model.generate(custom_generate=<this repository>, trust_remote_code=True)``.

transformers loads this file and calls ``generate(model=model, **arguments_of_generate)``. The work
is done by the installed ``tsdi_ext`` package (see requirements.txt): this function only turns the
bias argument into a table and hands the call to ``tsdi_ext.hf.tsdi_generate``, the fused
debias + temperature + top-k + top-p + min-p + sample decoding loop.
"""

from tsdi_ext import BiasTable
from tsdi_ext.hf import tsdi_generate


def generate(model, tsdi_bias=None, tsdi_alpha=1.0, tsdi_seed=0, tsdi_streamer=None, **kwargs):
    """Decodes with TSDI; arguments as ``model.generate``'s, plus the ``tsdi_*`` ones.

    ``tsdi_bias`` is a bias file written by ``tsdi estimate`` / ``BiasTable.save``, a loaded
    ``BiasTable``, or an ``[L, V]`` tensor; None decodes without debiasing.
    """
    if isinstance(tsdi_bias, (str, bytes)) or hasattr(tsdi_bias, "__fspath__"):
        tsdi_bias = BiasTable.load(
            tsdi_bias, vocab_size=model.get_output_embeddings().weight.shape[0]
        )
    return model.generate(
        custom_generate=tsdi_generate,
        tsdi_bias=tsdi_bias,
        tsdi_alpha=tsdi_alpha,
        tsdi_seed=tsdi_seed,
        tsdi_streamer=tsdi_streamer,
        **kwargs,
    )
