"""Checked loading of a run's files: every model and weight load of llmbio goes through here.

Each loader refuses what it cannot trust before handing it to a library, and reports the
problem as one :class:`~llmbio.errors.ArtefactError` line naming the path and the Snakemake
rule that remakes it, instead of a library traceback:

- a missing file or folder;
- a pickle (``pytorch_model.bin``, ``*.pt``) where safetensors belong: llmbio never unpickles,
  since a pickle can run code (every ``from_pretrained`` passes ``use_safetensors=True``);
- a truncated or corrupt safetensors file (its header and size are checked before reading);
- weights that do not fit their config (missing or mis-shaped tensors, which ``transformers``
  would otherwise fill with random values), or a transcoder made for another model;
- a table or world file that does not parse.

Models and transcoders of a released model (config ``pretrained:``) pass the same checks, with
the download rules as their remedy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from llmbio.errors import ArtefactError

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn
    from transformers import PreTrainedTokenizerBase

    from llmbio.transcoder.clt import CrossLayerTranscoder
    from llmbio.world import World

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_MAX_HEADER = 100 * 2**20  # a safetensors header larger than this is a corrupt length field


def remake(rule: str) -> str:
    """The fix of an artefact the rule ``rule`` writes."""
    return f"remake it with `snakemake --cores all --forcerun {rule}`"


def first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def check_safetensors(path: str | Path, rule: str) -> None:
    """Refuse a safetensors file whose header does not parse or whose size does not match it
    (a truncated download, a copy cut short, another format under the same name)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        try:
            if not 0 < n <= min(size - 8, _MAX_HEADER):
                raise ValueError("bad header length")
            header = json.loads(fh.read(n))
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            raise ArtefactError(path, "is truncated or corrupt", remake(rule)) from None
    if 8 + n + max(ends, default=0) != size:
        raise ArtefactError(path, "is truncated or corrupt", remake(rule))


def check_weights_folder(folder: str | Path, rule: str, name: str = "model.safetensors") -> None:
    """``folder`` exists and holds sound safetensors weights, and no pickle in their place."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtefactError(folder, "is missing", remake(rule))
    weights = sorted(folder.rglob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ArtefactError(
                folder / pickles[0],
                "is a pickle, which llmbio never loads (unpickling can run code)",
                f"{remake(rule)}, or convert the weights to {name}",
            )
        raise ArtefactError(folder, f"holds no {name}", remake(rule))
    for path in weights:
        check_safetensors(path, rule)


def load_model(model_dir: str | Path, rule: str = "train_model", **kwargs) -> nn.Module:
    """A causal LM from ``model_dir`` in eval mode, from safetensors only, checked first.

    ``kwargs`` go to ``AutoModelForCausalLM.from_pretrained`` (``dtype``, ...).
    """
    from transformers import AutoModelForCausalLM

    model_dir = Path(model_dir)
    check_weights_folder(model_dir, rule)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            model_dir, use_safetensors=True, output_loading_info=True, **kwargs
        )
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise ArtefactError(model_dir, f"does not load ({first_line(err)})", remake(rule)) from err
    unfit = [*info.get("missing_keys", ()), *(k for k, *_ in info.get("mismatched_keys", ()))]
    if unfit:
        raise ArtefactError(
            model_dir,
            f"has weights that do not fit its config.json ({len(unfit)} missing or mis-shaped, "
            f"e.g. {sorted(unfit)[0]})",
            remake(rule),
        )
    return model.eval()


def load_tokenizer(model_dir: str | Path, rule: str = "train_model") -> PreTrainedTokenizerBase:
    """The tokenizer saved in ``model_dir`` (the organism's model folder or its tokenizer)."""
    from llmbio.tokenizer import load_tokenizer as load

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ArtefactError(model_dir, "is missing", remake(rule))
    try:
        return load(model_dir)
    except (OSError, ValueError, KeyError) as err:
        raise ArtefactError(
            model_dir, f"holds no readable tokenizer ({first_line(err)})", remake(rule)
        ) from err


def load_transcoder(
    directory: str | Path, rule: str = "train_transcoder", model: nn.Module | None = None, **kwargs
) -> CrossLayerTranscoder:
    """:func:`llmbio.transcoder.io.load_transcoder`, its files checked first; ``model``: the
    transcoder must fit it (layers, width)."""
    from safetensors import SafetensorError

    from llmbio.transcoder import io

    directory = Path(directory)
    if not directory.is_dir():
        raise ArtefactError(directory, "is missing", remake(rule))
    for path in sorted(directory.rglob("*.safetensors")):
        check_safetensors(path, rule)
    try:
        return io.load_transcoder(directory, model=model, **kwargs)
    except (OSError, ValueError, KeyError, SafetensorError) as err:
        raise ArtefactError(directory, f"does not load ({first_line(err)})", remake(rule)) from err


def read_table(path: str | Path, rule: str, **kwargs) -> pd.DataFrame:
    """A Parquet table of the run; ``kwargs`` go to ``pandas.read_parquet`` (``columns``)."""
    import pandas as pd
    import pyarrow

    path = Path(path)
    if not path.exists():
        raise ArtefactError(path, "is missing", remake(rule))
    try:
        return pd.read_parquet(path, **kwargs)
    except (OSError, ValueError, pyarrow.ArrowException) as err:
        raise ArtefactError(
            path, f"is truncated or corrupt ({first_line(err)})", remake(rule)
        ) from err


def load_world(path: str | Path, rule: str = "world") -> World:
    from llmbio.world import World

    path = Path(path)
    if not path.exists():
        raise ArtefactError(path, "is missing", remake(rule))
    try:
        return World.load(path)
    except (ValueError, KeyError, TypeError) as err:
        raise ArtefactError(
            path, f"is not a world this llmbio reads ({first_line(err)})", remake(rule)
        ) from err
