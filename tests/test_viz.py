"""lmcore.viz: figure structure, escaping of tokens, CDN rewriting, the explorer."""
import numpy as np
import pytest
import torch

from lmcore import viz
from lmcore.attention import MultiHeadAttention

TOKENS = ["<script>", "a&b", '"q"', "ok"]


def weights(L=2, B=1, H=3, T=4, S=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, S, generator=g).softmax(-1) for _ in range(L)]


def test_as_layers_accepts_all_layouts():
    w = weights(B=2)
    assert viz.as_layers(w).shape == (2, 3, 4, 4)
    assert np.allclose(viz.as_layers(w, batch=1)[1], w[1][1].numpy())
    assert viz.as_layers(tuple(x[0] for x in w)).shape == (2, 3, 4, 4)   # (H, T, S) per layer
    assert viz.as_layers(torch.stack([x[0] for x in w])).shape == (2, 3, 4, 4)
    assert viz.as_layers(np.eye(3)).shape == (1, 1, 3, 3)
    with pytest.raises(ValueError, match="weights has shape"):
        viz.as_layers(np.zeros(3))
    with pytest.raises(ValueError, match="batch=5 out of range"):
        viz.as_layers(w, batch=5)


def test_heatmap_traces_sliders_and_escaping():
    w = weights()
    fig = viz.attention_heatmap(w, TOKENS)
    assert len(fig.data) == 2 * 3
    layer_slider, head_slider = fig.layout.sliders
    assert len(layer_slider.steps) == 2 and len(head_slider.steps) == 3
    assert layer_slider.steps[1].args[0]["visible"] == [False] * 3 + [True] * 3
    assert head_slider.steps[2].args[0]["opacity"] == [0.0, 0.0, 1.0] * 2
    assert np.allclose(np.asarray(fig.data[4].z), np.round(w[1][0, 1].numpy(), 3))
    labels = fig.data[0].y
    assert labels[0] == "&lt;script&gt;" and labels[1] == "a&amp;b"
    assert viz.attention_heatmap(w, ["x", "y", "x", "x"]).data[0].x == ("x", "y", "x\u200b", "x\u200b\u200b")
    assert "<script>" not in fig.to_json()
    assert viz.figure_json_kb(fig) < 300
    with pytest.raises(ValueError, match="tokens has 3 tokens but the weights have 4"):
        viz.attention_heatmap(w, TOKENS[:3])


def test_matplotlib_grid():
    import matplotlib
    matplotlib.use("Agg")
    fig = viz.attention_grid(weights(), TOKENS, layer=1)
    assert len(fig.axes) == 3 + 1  # three heads and a colorbar
    with pytest.raises(ValueError, match="layer=2 out of range"):
        viz.attention_grid(weights(), TOKENS, layer=2)


def test_bertviz_escapes_tokens_and_rewrites_urls_only_in_build(monkeypatch):
    monkeypatch.delenv("LMCORE_BOOK_BUILD", raising=False)
    page = viz.head_view_html(weights(), TOKENS).data
    script = page[page.index('<script type="text/javascript">'):]
    assert "<script>" not in script and "\\u003cscript\\u003e" in script and "a\\u0026b" in script
    assert '\\"q\\"' in script
    assert page.count('"attn"') == 1                 # bertviz's duplicate copy (in a JS comment) is dropped
    assert "https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.6/require.min.js" in page
    assert "_static/vendor" not in page
    monkeypatch.setenv("LMCORE_BOOK_BUILD", "1")
    for page in (viz.head_view_html(weights(), TOKENS).data,
                 viz.model_view_html(tuple(weights()), TOKENS).data):
        assert "cdnjs" not in page
        for local in viz.CDN_TO_LOCAL.values():
            assert local in page
    cross = viz.cross_view_html(weights(), weights(T=2, S=2), weights(T=2, S=4), TOKENS, ["x", "<y>"]).data
    assert "\\u003cy\\u003e" in cross and "cdnjs" not in cross


def test_explorer_recompute_shapes():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 2).eval()
    emb = torch.nn.Embedding(50, 16)

    def attend(tokens, causal, scale):
        x = emb(torch.tensor([len(t) % 50 for t in tokens]))[None]
        return [mha(x, is_causal=causal, need_weights=True)[1]]   # a list per layer (B, H, T, T)

    ex = viz.attention_explorer(attend, "one two three <b>")
    assert ex.weights.shape == (1, 2, 4, 4) and "&lt;b&gt;" in ex.view.value
    ex.causal.value = True                       # the observer recomputes
    assert np.allclose(np.triu(ex.weights[0, 0], 1), 0)
    ex.text.value = " ".join(["w"] * 32)
    assert ex.weights.shape == (1, 2, 32, 32) and ex.last_ms is not None

    def wrong(tokens, causal, scale):
        return torch.ones(1, 1, 2, 2)

    with pytest.raises(ValueError, match="expected"):
        viz.attention_explorer(wrong, "a b c")
