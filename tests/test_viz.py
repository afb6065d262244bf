"""lmcore.viz: figure structure, escaping of tokens, arguments, the site's local scripts, the explorer."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lmcore import viz
from lmcore.attention import MultiHeadAttention

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "tools" / "sphinx")]
import offline_site
import vendor_js

del sys.path[:2]

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


def test_as_layers_never_ignores_batch():
    one = weights(B=1)
    with pytest.raises(ValueError, match="batch=5 out of range"):
        viz.as_layers(one, batch=5)                          # a batch of 1
    with pytest.raises(ValueError, match="batch=1 but weights\\[0\\] has shape \\(3, 4, 4\\)"):
        viz.as_layers([x[0] for x in one], batch=1)          # (H, T, S): no batch axis
    with pytest.raises(ValueError, match="no batch axis"):
        viz.as_layers(torch.stack([x[0] for x in one]), batch=1)
    with pytest.raises(ValueError, match="batch=-1 out of range"):
        viz.as_layers(one, batch=-1)
    two = weights(B=2, seed=3)
    for b in (0, 1):
        assert np.allclose(viz.as_layers(two, batch=b), torch.stack([x[b] for x in two]).numpy())
        fig = viz.attention_heatmap(two, TOKENS, batch=b)
        assert np.allclose(np.asarray(fig.data[0].z), np.round(two[0][b, 0].numpy(), 3))


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


def _params(page):
    """The params object each bertviz script defines, parsed as JSON."""
    lines = [line.strip() for line in page.splitlines() if line.strip().startswith("const params = ")]
    return [json.loads(line[len("const params = "):-1]) for line in lines]


def test_bertviz_escapes_tokens():
    page = viz.head_view_html(weights(), TOKENS).data
    script = page[page.index('<script type="text/javascript">'):]
    assert "<script>" not in script and "\\u003cscript\\u003e" in script and "a\\u0026b" in script
    assert '\\"q\\"' in script
    assert page.count('"attn"') == 1                 # bertviz's duplicate copy (in a JS comment) is dropped
    (params,) = _params(page)
    assert params["attention"][0]["left_text"] == TOKENS == params["attention"][0]["right_text"]


HOSTILE = ["a//b", "</script>", "<!--", "; // HACK: x", viz._MARKER, "-->", "$x$", "\u2028"]


@pytest.mark.parametrize("view", ["head", "model", "cross"])
def test_bertviz_scripts_survive_hostile_tokens(view):
    """Tokens with //, </script>, <!-- or bertviz's own template text leave every script
    intact: the params parse as JSON and give the tokens back; no raw </script> or <!--."""
    toks = HOSTILE[:4]
    if view == "head":
        page = viz.head_view_html(weights(), toks).data
    elif view == "model":
        page = viz.model_view_html(weights(), HOSTILE[4:]).data
    else:
        page = viz.cross_view_html(weights(), weights(T=2, S=2), weights(T=2, S=4), toks, ["//", "<!--"]).data
    (params,) = _params(page)
    text = json.dumps(params)
    for t in toks if view != "model" else HOSTILE[4:]:
        assert json.dumps(t)[1:-1] in text or t in text
    if view == "cross":
        assert params["attention"][0]["left_text"] == toks and params["attention"][0]["right_text"] == toks
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", page, re.DOTALL)
    assert scripts  # the duplicate in a comment is gone: _params parsed the whole line
    for body in scripts:
        assert "<!--" not in body and "</script" not in body.lower()
    node = shutil.which("node")
    if node:  # every inline script is valid JavaScript
        for body in scripts:
            proc = subprocess.run([node, "--check"], input=body, text=True, capture_output=True,
                                  check=False)
            assert proc.returncode == 0, proc.stderr


def test_bertviz_pages_get_local_scripts_in_the_site():
    """viz writes bertviz's CDN URLs (they work in Jupyter and Colab); the book build's
    extension swaps each for a file that tools/vendor_js.py installs, and refuses a page
    that would still need a CDN."""
    pages = [viz.head_view_html(weights(), TOKENS).data, viz.model_view_html(tuple(weights()), TOKENS).data,
             viz.cross_view_html(weights(), weights(T=2, S=2), weights(T=2, S=4), TOKENS, ["x", "<y>"]).data]
    vendored = {f"vendor/{name}" for name in vendor_js.FILES}
    for page in pages:
        assert "cdnjs.cloudflare.com" in page and "_static" not in page
        local = offline_site.vendor_urls(page, "../_static/")
        assert "cdnjs" not in local
        used = set(re.findall(r"\.\./_static/(vendor/[\w.]+)", local))
        assert used and all(u in vendored or u + ".js" in vendored for u in used), used
    for cdn, target in offline_site.CDN_TO_VENDOR.items():
        assert target in vendored or target + ".js" in vendored, (cdn, target)
    with pytest.raises(ValueError, match="from a CDN"):
        offline_site.vendor_urls('<script src="https://cdn.jsdelivr.net/npm/x.js"></script>', "../_static/")


def test_matplotlib_labels_with_dollars():
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import cbook

    toks = ["$^$", "a$b$c", "$", "\\$"]
    fig = viz.attention_grid(weights(), toks)
    fig.canvas.draw()  # "$^$" is a mathtext parse error unless escaped
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert not any(cbook.is_math_text(label) for label in labels)
    assert [label.replace("\\$", "$") for label in labels] == toks


def test_arguments_are_checked_at_the_edge():
    w = weights()
    with pytest.raises(ValueError, match="NaN"):
        viz.as_layers([torch.full((1, 2, 3, 3), float("nan"))])
    with pytest.raises(TypeError, match="tokens is a str"):
        viz.attention_heatmap(w, "abcd")
    with pytest.raises(ValueError, match="decimals=-1"):
        viz.attention_heatmap(w, TOKENS, decimals=-1)
    with pytest.raises(TypeError, match="batch=True"):
        viz.as_layers(w, batch=True)
    with pytest.raises(ValueError, match="layer=2 out of range"):
        viz.head_view_html(w, TOKENS, layer=2)
    with pytest.raises(ValueError, match="heads entry=3 out of range"):
        viz.head_view_html(w, TOKENS, heads=[0, 3])
    with pytest.raises(ValueError, match="tokens has 3 tokens"):
        viz.model_view_html(w, TOKENS[:3])
    with pytest.raises(ValueError, match="cross_attention has"):
        viz.cross_view_html(w, weights(T=2, S=2), weights(T=4, S=4), TOKENS, ["x", "y"])
    with pytest.raises(ValueError, match="expected \\(T, S\\)"):
        viz.weights_table_html(np.zeros((2, 2, 2)), ["a", "b"])
    with pytest.raises(TypeError, match="attend is a int"):
        viz.attention_explorer(3)
    with pytest.raises(ValueError, match="max_tokens=0"):
        viz.attention_explorer(lambda t, c, s: None, max_tokens=0)


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
