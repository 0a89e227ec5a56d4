"""nnsight 0.8 backend: capture through a trace of the HF model (attention weights and head outputs).

Per layer l, inside one ``model.trace(...)``:
  ``<layer>.input``                        [B, T, D] residual entering the layer -> ``HiddenSummary``
  ``<layer>.self_attn.o_proj.input``       [B, T, H*Dh] head outputs (scaled for ``head_scale``)
  ``<layer>.self_attn.output[1]``          [B, H, T, S] attention weights -> ``LayerStats``
(reads follow execution order, as nnsight requires). The model runs with eager attention during
the trace (only eager returns weights); its previous implementation is restored afterwards.

Locally the trace body runs on real tensors, so each layer's map is reduced as soon as it exists
(peak: one layer's map). Remotely (NDIF, ``remote=True``) the body runs on the server: the maps
and residuals are ``.save()``d, shipped back and reduced here (short prompts only).
The wrapper is built once (instant, no copy) and cached in ``handle.extra['nnsight_model']``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Optional

from torch import Tensor

from ..errors import ProbeError
from .base import BackendRecorder
from .reduce import key_start_from_mask, record_hidden, record_probs

SMOLLM2_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
KNOWN_REPOS = {"smollm2": SMOLLM2_REPO}


def wrap_model(handle):
    """The handle's nnsight model (``TransformersModel`` over the already-loaded HF model; cached)."""
    lm = handle.extra.get("nnsight_model")
    if lm is not None:
        return lm
    try:
        from nnsight.modeling.transformers import TransformersModel
    except ImportError as err:
        raise ProbeError("the nnsight backend needs nnsight >= 0.8", "pip install 'nnsight>=0.8'") from err
    from .support import check
    check(handle, "nnsight")
    lm = TransformersModel(handle.model, tokenizer=handle.tokenizer)
    handle.extra["nnsight_model"] = lm
    return lm


def layer_paths(handle) -> list[str]:
    """Dotted module path of every decoder layer, e.g. 'model.layers.3'."""
    names = {id(m): n for n, m in handle.model.named_modules()}
    return [names[id(layer)] for layer in handle.decoder_layers()]


def envoy_at(lm, path: str):
    """The nnsight envoy at a dotted module path of the wrapped model."""
    node = lm
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


@contextlib.contextmanager
def eager_attention(model):
    """Run ``model`` with eager attention (the implementation that returns weights); restore on exit."""
    before = model.config._attn_implementation
    if before != "eager":
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if before != "eager":
            model.set_attn_implementation(before)


class NNsightRecorder(BackendRecorder):
    """Runs one nnsight trace per ``run``; reduces maps inside it (local) or after it (remote)."""

    backend = "nnsight"

    def __init__(self, handle, lm, layers, remote=False, **kw):
        super().__init__(handle, layers=layers, **kw)
        self.lm = lm
        self.layer_list = layers
        self.paths = layer_paths(handle)
        self.windows = handle.sliding_windows
        self.remote = remote
        self.head_dim = handle.head_dim

    def _forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        B, S = input_ids.shape
        key_start = key_start_from_mask(attention_mask, B, S)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.remote:
            return self._remote_forward(inputs, key_start)
        with eager_attention(self.handle.model):
            with self.lm.trace(inputs, use_cache=False):
                for layer in self.layer_list:
                    env = envoy_at(self.lm, self.paths[layer])
                    if self.hidden_mode:
                        record_hidden(self, layer, env.input, attention_mask)
                    self._scale(env, layer)
                    if self.request.any:
                        record_probs(self, layer, env.self_attn.output[1], key_start, self.windows.get(layer))
                logits = self.lm.output.logits.save()
        return logits

    def _scale(self, env, layer: int) -> None:
        _scale_heads(env, (self.head_scale or {}).get(layer), self.head_dim)

    # -- NDIF --------------------------------------------------------------------------------
    def _remote_forward(self, inputs: dict, key_start: Tensor) -> Tensor:
        backend = remote_backend(self.lm, self.remote, self.repo)
        # The trace body is serialised and shipped: it may reference only plain values, never ``self``
        # (the recorder holds the handle, whose extras - e.g. a TransformerBridge - do not pickle).
        lm, paths, layer_list, head_dim = self.lm, self.paths, list(self.layer_list), self.head_dim
        want_hidden, want_maps, scales = bool(self.hidden_mode), bool(self.request.any), dict(self.head_scale or {})
        maps, resid = {}, {}
        try:
            with eager_attention(self.handle.model), lm.trace(inputs, use_cache=False, backend=backend):
                for layer in layer_list:
                    env = envoy_at(lm, paths[layer])
                    if want_hidden:
                        resid[layer] = env.input.save()
                    _scale_heads(env, scales.get(layer), head_dim)
                    if want_maps:
                        maps[layer] = env.self_attn.output[1].save()
                logits = lm.output.logits.save()
        except ProbeError:
            raise
        except Exception as err:
            raise ProbeError(f"the NDIF request failed: {type(err).__name__}: {str(err)[:200]}",
                             "check the network, the API key and that NDIF serves this model (nnsight.ndif_status())"
                             ) from err
        for layer in self.layer_list:
            if layer in resid:
                record_hidden(self, layer, resid[layer], inputs["attention_mask"].to(resid[layer].device))
            if layer in maps:
                if maps[layer] is None:
                    raise ProbeError("the remote model returned no attention weights (it does not run eager attention)",
                                     "ask NDIF for a deployment with eager attention, or run locally")
                record_probs(self, layer, maps[layer], key_start, self.windows.get(layer))
        return logits


def _scale_heads(env, heads: Optional[dict], head_dim: int) -> None:
    """Inside a trace: multiply head h's slice of o_proj's input [B, T, H * Dh] by heads[h]."""
    if heads:
        z = env.self_attn.o_proj.input
        for h, factor in heads.items():
            z[..., h * head_dim:(h + 1) * head_dim] *= factor


def repo_id_of(handle) -> str:
    """The hub id NDIF knows this model by (hub loads, known aliases, or handle.extra['repo_id'])."""
    repo = handle.extra.get("repo_id") or KNOWN_REPOS.get(str(handle.source))
    if repo is None and handle.kind == "hub":
        repo = str(handle.source)
    if repo is None:
        raise ProbeError(f"model '{handle.source}' has no hub id for NDIF",
                         "remote runs need a hub-hosted model: load it by hub id or set handle.extra['repo_id']")
    return repo


def remote_backend(lm, remote, repo: Optional[str] = None):
    """nnsight's RemoteBackend for ``lm`` (``remote=True``: the configured NDIF host; a URL: that host;
    ``"local"``: nnsight's in-process simulation, which serialises the request exactly as for NDIF).

    Raises ProbeError before any network use when no API key is configured.
    """
    if remote == "local":
        from nnsight.intervention.backends.local import LocalSimulationBackend

        return LocalSimulationBackend(lm)
    from nnsight import CONFIG
    from nnsight.intervention.backends.remote import RemoteBackend

    key = CONFIG.API.APIKEY or os.environ.get("NDIF_API_KEY")
    if not key:
        raise ProbeError("nnsight remote execution needs an NDIF API key",
                         "get one at https://login.ndif.us and run nnsight.CONFIG.set_default_api_key(KEY) "
                         "or export NDIF_API_KEY=KEY")
    before = getattr(lm, "repo_id", None)
    try:
        if repo:
            lm.repo_id = repo            # the hub id NDIF serves (a locally wrapped model holds a folder path)
        model_key = lm.to_model_key()   # canonicalises the repo id on the Hub: needs the network
    except Exception as err:
        raise ProbeError(f"cannot reach the Hugging Face Hub to name the model for NDIF ({type(err).__name__})",
                         "remote runs need network access to the Hub and to NDIF") from err
    finally:
        lm.repo_id = before
    host = remote if isinstance(remote, str) else None
    return RemoteBackend(model_key, host=host, api_key=key, blocking=True)


def make_recorder(handle, *, lm=None, layers, remote=False, **kw) -> NNsightRecorder:
    lm = lm if lm is not None else wrap_model(handle)
    rec = NNsightRecorder(handle, lm, layers, remote=remote, **kw)
    rec.repo = repo_id_of(handle) if remote and remote != "local" else None  # fails before running
    return rec


def handle_from_nnsight(lm, source: Optional[str] = None):
    """A probe Handle over an nnsight model the user already holds (``lm._module`` is the HF model)."""
    from ..models import Handle

    model = lm._module
    tok = getattr(lm, "tokenizer", None)
    if tok is None:
        raise ProbeError("this nnsight model has no tokenizer", "build it with LanguageModel(model, tokenizer=tok)")
    handle = Handle(model, tok, source or str(getattr(lm, "repo_id", None) or type(model).__name__), "object")
    handle.extra.update(backend="nnsight", nnsight_model=lm)
    repo = getattr(lm, "repo_id", None)
    if isinstance(repo, str) and "/" in repo and not os.path.exists(repo):
        handle.extra["repo_id"] = repo
    return handle
