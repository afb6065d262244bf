"""Pictures of attention weights: plotly (web), matplotlib (print), a widget, bertviz.

Weights are accepted as (layers, heads, T, S), as a list per layer of (heads, T, S) or
(batch, heads, T, S) tensors (lmcore / Hugging Face ``output_attentions``), or (T, S).
Token strings are escaped before they reach any HTML, JavaScript or matplotlib mathtext.
The bertviz views load their scripts from bertviz's CDN; the book build serves local
copies instead (``tools/sphinx/offline_site.py``), so nothing here knows about the site.
"""
from __future__ import annotations

import html
import time

import numpy as np
import torch


def _check_int(value, name, low=None, high=None):
    """value must be an int (not a bool) with low <= value < high; returns it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}={value!r}; expected an int")
    if (low is not None and value < low) or (high is not None and value >= high):
        span = f"{low}..{high - 1}" if high is not None else f">= {low}"
        raise ValueError(f"{name}={value} out of range; expected {span}")
    return int(value)


def _as_array(w, name) -> np.ndarray:
    if isinstance(w, torch.Tensor):
        w = w.detach().float().cpu().numpy()
    else:
        try:
            w = np.asarray(w, dtype=float)
        except (TypeError, ValueError):
            raise TypeError(f"{name} is a {type(w).__name__}; expected a tensor or array "
                            "of attention weights") from None
    if w.size and not np.isfinite(w).all():
        raise ValueError(f"{name} contains NaN or infinite weights")
    return w


def as_layers(weights, batch=0) -> np.ndarray:
    """Any accepted layout -> float numpy (layers, heads, T, S).

    A list/tuple per layer may hold (heads, T, S) or (batch, heads, T, S) tensors; for the
    latter, ``batch`` picks the sequence. Layouts without a batch axis need ``batch=0``.
    """
    batch = _check_int(batch, "batch", 0)
    if isinstance(weights, (list, tuple)):
        if not weights:
            raise ValueError("weights is an empty list; expected one (heads, T, S) tensor per layer")
        layers = []
        for i, w in enumerate(weights):
            w = _as_array(w, f"weights[{i}]")
            if w.ndim == 4:  # (batch, heads, T, S)
                if batch >= w.shape[0]:
                    raise ValueError(f"batch={batch} out of range: weights[{i}] has shape "
                                     f"{w.shape}, a batch of {w.shape[0]}")
                w = w[batch]
            elif w.ndim not in (2, 3):
                raise ValueError(f"weights[{i}] has shape {w.shape}; expected (heads, T, S) "
                                 "or (batch, heads, T, S)")
            elif batch:
                raise ValueError(f"batch={batch} but weights[{i}] has shape {w.shape}, "
                                 "which has no batch axis; expected batch=0")
            layers.append(w.reshape((1,) * (3 - w.ndim) + w.shape))  # (T, S): one head
        if len({w.shape for w in layers}) != 1:
            raise ValueError(f"per-layer weights differ in shape: {[w.shape for w in layers]}")
        return np.stack(layers)
    w = _as_array(weights, "weights")
    if w.ndim not in (2, 3, 4):
        raise ValueError(f"weights has shape {w.shape}; expected (T, S), (heads, T, S), "
                         "(layers, heads, T, S) or a list per layer of (heads, T, S) / "
                         "(batch, heads, T, S)")
    if batch:
        raise ValueError(f"batch={batch} but weights of shape {w.shape} have no batch axis "
                         "(a list per layer of (batch, heads, T, S) has); expected batch=0")
    return w.reshape((1,) * (4 - w.ndim) + w.shape)


def _token_strings(tokens, n, name):
    """tokens (a sequence of n items, or None for 0..n-1) -> n strings."""
    if tokens is None:
        return [str(i) for i in range(n)]
    if isinstance(tokens, (str, bytes)) or not hasattr(tokens, "__len__"):
        raise TypeError(f"{name} is a {type(tokens).__name__}; expected a list of {n} tokens")
    if len(tokens) != n:
        raise ValueError(f"{name} has {len(tokens)} tokens but the weights have {n} positions")
    return [str(t) for t in tokens]


def _labels(tokens, n, name):
    """Tokens for HTML and plotly: plotly decodes &lt; &amp; (not &quot;)."""
    return [html.escape(t, quote=False) for t in _token_strings(tokens, n, name)]


def _tex_safe(label: str) -> str:
    """A label for matplotlib: a "$" would start mathtext (and "$x" fails to parse)."""
    return label.replace("$", r"\$")


def _slanted_height(labels, angle=60) -> int:
    """Pixels that tick labels slanted at ``angle`` degrees need (wide characters count 2)."""
    widest = max((sum(2 if ord(c) > 0x2E80 else 1 for c in label) for label in labels), default=0)
    return round(7 * widest * np.sin(np.radians(angle))) + 8


def _unique(labels):
    """Make repeated labels distinct with invisible zero-width spaces (plotly merges equal categories)."""
    seen, out = {}, []
    for label in labels:
        seen[label] = seen.get(label, -1) + 1
        out.append(label + "\u200b" * seen[label])
    return out


def attention_heatmap(weights, tokens=None, key_tokens=None, batch=0, title="Attention weights",
                      decimals=3, height=450):
    """plotly heatmap with a layer slider and a head slider (both work on the static site).

    weights: see the module docstring (a list per layer of (B, H, T, S) uses ``batch``).
    tokens: the T query tokens (rows); key_tokens: the S key tokens (columns; default tokens).
    One heatmap trace per (layer, head); the layer slider toggles ``visible``, the head slider
    toggles ``opacity`` and hover, so the two choices combine without callbacks.
    """
    import plotly.graph_objects as go

    w = as_layers(weights, batch)
    decimals = _check_int(decimals, "decimals", 0)
    height = _check_int(height, "height", 1)
    L, H, T, S = w.shape
    y = _unique(_labels(tokens, T, "tokens"))
    x = _unique(_labels(key_tokens if key_tokens is not None else (tokens if S == T else None), S, "key_tokens"))
    fig = go.Figure()
    for layer in range(L):
        for head in range(H):
            fig.add_trace(go.Heatmap(
                z=np.round(w[layer, head], decimals), x=x, y=y,
                coloraxis="coloraxis", visible=layer == 0, opacity=1.0 if head == 0 else 0.0,
                hoverinfo="all" if head == 0 else "skip", name=f"layer {layer} head {head}",
                hovertemplate="%{y} → %{x}<br>weight %{z}<extra></extra>"))
    n = L * H
    layer_steps = [dict(method="restyle", label=str(layer),
                        args=[{"visible": [i // H == layer for i in range(n)]}]) for layer in range(L)]
    head_steps = [dict(method="restyle", label=str(head),
                       args=[{"opacity": [1.0 if i % H == head else 0.0 for i in range(n)],
                              "hoverinfo": ["all" if i % H == head else "skip" for i in range(n)]}])
                  for head in range(H)]
    fig.update_layout(
        # The title at the top of the figure and, under it, room for the key axis (on top,
        # where a matrix has its column labels): its title and its labels slanted at 60°.
        title=dict(text=title, yref="container", y=1, yanchor="top", pad=dict(t=10)),
        height=height, margin=dict(l=10, r=10, t=70 + _slanted_height(x), b=10),
        coloraxis=dict(colorscale="Blues", cmin=0, cmax=1, colorbar=dict(title="weight")),
        xaxis=dict(type="category", side="top", title="key (attended to)", tickangle=-60),
        yaxis=dict(type="category", autorange="reversed", title="query"),
        # A slider with a single step would be a control that does nothing: leave it out.
        sliders=[slider for slider, steps in (
            (dict(active=0, steps=layer_steps, currentvalue=dict(prefix="layer "), y=-0.02, len=0.45, x=0), layer_steps),
            (dict(active=0, steps=head_steps, currentvalue=dict(prefix="head "), y=-0.02, len=0.45, x=0.55), head_steps),
        ) if len(steps) > 1])
    return fig


def attention_grid(weights, tokens=None, key_tokens=None, layer=0, batch=0, cmap="Blues"):
    """matplotlib figure: one panel per head of ``layer``, for print."""
    import matplotlib.pyplot as plt

    w = as_layers(weights, batch)
    layer = _check_int(layer, "layer", 0, w.shape[0])
    H, T, S = w.shape[1:]
    y = [_tex_safe(t) for t in _token_strings(tokens, T, "tokens")]
    keys = key_tokens if key_tokens is not None else (tokens if S == T else None)
    x = [_tex_safe(t) for t in _token_strings(keys, S, "key_tokens")]
    fig, axes = plt.subplots(1, H, figsize=(2.2 + 2.6 * H, 2.6 + 0.12 * T), squeeze=False)
    for head, ax in enumerate(axes[0]):
        im = ax.imshow(w[layer, head], cmap=cmap, vmin=0, vmax=1)
        ax.set_title(f"layer {layer}, head {head}", fontsize=9)
        ax.set_xticks(range(S), x, rotation=90, fontsize=7)
        ax.set_yticks(range(T), y if head == 0 else [""] * T, fontsize=7)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="weight")
    return fig


def weights_table_html(w, tokens, key_tokens=None, decimals=2) -> str:
    """A (T, S) weight matrix as a small coloured HTML table (escaped tokens)."""
    w = _as_array(w, "w")
    if w.ndim != 2:
        raise ValueError(f"w has shape {w.shape}; expected (T, S)")
    decimals = _check_int(decimals, "decimals", 0)
    rows = _labels(tokens, w.shape[0], "tokens")
    cols = _labels(key_tokens if key_tokens is not None else tokens, w.shape[1], "key_tokens")
    head = "".join(f"<th style='writing-mode:vertical-rl;font-weight:normal'>{c}</th>" for c in cols)
    body = []
    for i, r in enumerate(rows):
        cells = "".join(
            f"<td title='{v:.{decimals}f}' style='width:14px;height:14px;"
            f"background:rgba(31,119,180,{min(max(v, 0), 1):.3f})'></td>" for v in w[i])
        body.append(f"<tr><th style='text-align:right;font-weight:normal'>{r}</th>{cells}</tr>")
    return (f"<table style='border-collapse:collapse;font-size:11px'><tr><th></th>{head}</tr>"
            + "".join(body) + "</table>")


class AttentionExplorer:
    """ipywidgets explorer over any model: ``attend(tokens, causal, scale) -> (L, H, T, T)``.

    ``scale`` multiplies the usual scores q·k/sqrt(d) (scale = 1 / temperature).
    ``tokenize(text) -> list[str]`` (default: whitespace split). Show ``explorer.widget``;
    ``explorer.update()`` recomputes (and is called once on creation so the saved widget
    state shows a picture on the static site). ``last_ms`` is the last recompute time.
    """

    def __init__(self, attend, text="the cat sat on the mat", tokenize=None, max_tokens=64):
        import ipywidgets as W

        if not callable(attend):
            raise TypeError(f"attend is a {type(attend).__name__}; expected a function "
                            "attend(tokens, causal, scale) -> weights")
        if tokenize is not None and not callable(tokenize):
            raise TypeError(f"tokenize is a {type(tokenize).__name__}; expected a function "
                            "tokenize(text) -> list of str, or None")
        if not isinstance(text, str):
            raise TypeError(f"text is a {type(text).__name__}; expected a str")
        max_tokens = _check_int(max_tokens, "max_tokens", 1)
        self.attend, self.tokenize, self.max_tokens = attend, tokenize or str.split, max_tokens
        self.text = W.Text(value=text, description="sentence", layout=W.Layout(width="95%"),
                           continuous_update=False)
        self.layer = W.BoundedIntText(value=0, min=0, max=0, description="layer", layout=W.Layout(width="150px"))
        self.head = W.BoundedIntText(value=0, min=0, max=0, description="head", layout=W.Layout(width="150px"))
        self.causal = W.Checkbox(value=False, description="causal mask")
        self.scale = W.FloatLogSlider(value=1.0, base=10, min=-1, max=1, step=0.05,
                                      description="logit scale", readout_format=".2f")
        self.view = W.HTML()
        self.status = W.HTML()
        for control in (self.text, self.layer, self.head, self.causal, self.scale):
            control.observe(lambda change: self.update(), names="value")
        self.widget = W.VBox([self.text, W.HBox([self.layer, self.head, self.causal]),
                              self.scale, self.status, self.view])
        self.weights, self.last_ms = None, None
        self.update()

    def update(self):
        """Recompute the weights and redraw; returns the weights (L, H, T, T) as numpy."""
        start = time.perf_counter()
        tokens = self.tokenize(self.text.value)[: self.max_tokens] or ["(empty)"]
        with torch.no_grad():
            w = as_layers(self.attend(tokens, bool(self.causal.value), float(self.scale.value)))
        L, H, T, S = w.shape
        if (T, S) != (len(tokens), len(tokens)):
            raise ValueError(f"attend returned weights {w.shape}; expected (L, H, {len(tokens)}, {len(tokens)})")
        self.layer.max, self.head.max = L - 1, H - 1
        layer, head = min(self.layer.value, L - 1), min(self.head.value, H - 1)
        self.view.value = weights_table_html(w[layer, head], tokens)
        entropy = float(-(w[layer, head] * np.log(np.clip(w[layer, head], 1e-12, 1))).sum(-1).mean())
        self.weights = w
        self.last_ms = (time.perf_counter() - start) * 1e3
        self.status.value = (f"{T} tokens · layer {layer} head {head} · mean row entropy "
                             f"{entropy:.3f} nats (uniform: {np.log(np.arange(1, T + 1)).mean() if self.causal.value else np.log(T):.3f})"
                             f" · recomputed in {self.last_ms:.1f} ms")
        return w


def attention_explorer(attend, text="the cat sat on the mat", tokenize=None, max_tokens=64):
    """Build an :class:`AttentionExplorer` (already updated once) and return it."""
    return AttentionExplorer(attend, text, tokenize, max_tokens)


# --- bertviz -------------------------------------------------------------------------------
_PLACEHOLDER = {"<": "\ue000", ">": "\ue001", "&": "\ue002"}
_JS_ESCAPE = {"\\ue000": "\\u003c", "\\ue001": "\\u003e", "\\ue002": "\\u0026"}
_PARAMS, _HACK = "const params = ", "; // HACK: "
_MARKER = " is a template marker that is replaced by actual params."


def _bertviz_layers(weights, batch=0, decimals=3):
    """lmcore/HF attention -> the list per layer of (1, H, T, S) tensors bertviz wants.

    Rounded in float64 so bertviz's JSON holds "0.123", not float32's "0.12300000339746475"
    (a 6-layer, 12-head, 16-token page shrinks about 4x).
    """
    w = np.round(as_layers(weights, batch).astype(np.float64), decimals)
    return [torch.from_numpy(w[i]).unsqueeze(0) for i in range(w.shape[0])]


def _safe_tokens(tokens, n, name):
    # bertviz puts the tokens into a <script> through json.dumps, which leaves "</script>"
    # and "<!--" intact; d3 then shows them with .text() (no HTML parsing). So we swap <, >,
    # & for private-use characters here and for JavaScript escapes (\u003c ...) in the output.
    out = []
    for t in _token_strings(tokens, n, name):
        for ch, ph in _PLACEHOLDER.items():
            t = t.replace(ph, "").replace(ch, ph)
        out.append(t)
    return out


def _drop_params_comment(line: str) -> str:
    """bertviz writes its params twice on one line: ``const params = P; // HACK: P is a
    template marker...``. Keep ``const params = P;``, found by length, not by pattern, so
    that no token ("//", "HACK", the marker text itself) can confuse it."""
    body = line.strip()
    if not (body.startswith(_PARAMS) and body.endswith(_MARKER)):
        return line
    body = body[len(_PARAMS):-len(_MARKER)]
    params = body[: (len(body) - len(_HACK)) // 2]
    if body != params + _HACK + params:
        raise RuntimeError("bertviz's output has an unexpected form; lmcore.viz needs updating")
    return line[: len(line) - len(line.lstrip())] + _PARAMS + params + ";"


def _finish(result):
    text = result.data if hasattr(result, "data") else str(result)
    text = "\n".join(_drop_params_comment(line) for line in text.split("\n"))
    for ph, esc in _JS_ESCAPE.items():
        text = text.replace(ph, esc)
    from IPython.display import HTML
    return HTML(text)


def _check_view(w, layer, heads):
    L, H = w.shape[:2]
    if layer is not None:
        _check_int(layer, "layer", 0, L)
    if heads is not None:
        if isinstance(heads, (str, bytes)) or not hasattr(heads, "__iter__"):
            raise TypeError(f"heads={heads!r}; expected a list of head indices or None")
        for h in heads:
            _check_int(h, "heads entry", 0, H)


def head_view_html(attentions, tokens, layer=None, heads=None, batch=0, **kwargs):
    """bertviz head view as an ``IPython.display.HTML`` (display it, or use ``.data``).

    attentions: a list/tuple per layer of (B, H, T, T) tensors (lmcore or HF
    ``output_attentions``) or an array (L, H, T, T); tokens: the T tokens.
    layer / heads: what is selected first (None: bertviz's choice).
    """
    from bertviz import head_view

    layers = _bertviz_layers(attentions, batch)
    _check_view(as_layers(layers), layer, heads)
    tokens = _safe_tokens(tokens, layers[0].shape[-1], "tokens")
    return _finish(head_view(layers, tokens, layer=layer, heads=heads, html_action="return",
                             **kwargs))


def model_view_html(attentions, tokens, batch=0, **kwargs):
    """bertviz model view (all layers x heads) as ``IPython.display.HTML``; see head_view_html."""
    from bertviz import model_view

    layers = _bertviz_layers(attentions, batch)
    tokens = _safe_tokens(tokens, layers[0].shape[-1], "tokens")
    return _finish(model_view(layers, tokens, html_action="return", **kwargs))


def cross_view_html(encoder_attention, decoder_attention, cross_attention, encoder_tokens,
                    decoder_tokens, batch=0, **kwargs):
    """bertviz head view of an encoder-decoder: encoder, decoder and cross attention.

    Shapes per layer: encoder (B, H, S, S), decoder (B, H, T, T), cross (B, H, T, S).
    """
    from bertviz import head_view

    enc, dec, cross = (_bertviz_layers(a, batch) for a in
                       (encoder_attention, decoder_attention, cross_attention))
    S, T = enc[0].shape[-1], dec[0].shape[-1]
    if tuple(cross[0].shape[-2:]) != (T, S):
        raise ValueError(f"cross_attention has (T, S) = {tuple(cross[0].shape[-2:])}; expected "
                         f"({T}, {S}) from the decoder and encoder attention")
    return _finish(head_view(encoder_attention=enc, decoder_attention=dec, cross_attention=cross,
                             encoder_tokens=_safe_tokens(encoder_tokens, S, "encoder_tokens"),
                             decoder_tokens=_safe_tokens(decoder_tokens, T, "decoder_tokens"),
                             html_action="return", **kwargs))


def figure_json_kb(fig) -> float:
    """Size of a plotly figure's JSON in KB (the site embeds it in the page)."""
    if not hasattr(fig, "to_json"):
        raise TypeError(f"fig is a {type(fig).__name__}; expected a plotly figure")
    return len(fig.to_json()) / 1024
