"""Interactive plotly figures that work on the static site: one control, one home.

Every chapter has figures whose slider or dropdown shows one group of traces at a time
(one activation function, one learning rate, one layer...). ``visibility_menu`` builds
that control, so no chapter writes the "visible" lists by hand.
"""
from __future__ import annotations

from collections.abc import Sequence


def _check_groups(groups, labels, titles, n_traces: int) -> list[list[int]]:
    groups = [list(g) for g in groups]
    if not groups:
        raise ValueError("groups is empty; expected one list of trace indices per option")
    if len(labels) != len(groups):
        raise ValueError(f"labels has {len(labels)} entries but groups has {len(groups)}; "
                         "expected one label per group")
    if titles is not None and len(titles) != len(groups):
        raise ValueError(f"titles has {len(titles)} entries but groups has {len(groups)}")
    for i, g in enumerate(groups):
        bad = [t for t in g if not isinstance(t, int) or not 0 <= t < n_traces]
        if bad:
            raise ValueError(f"groups[{i}] names traces {bad}; the figure has traces "
                             f"0..{n_traces - 1}")
    return groups


def visibility_menu(fig, groups: Sequence[Sequence[int]], labels: Sequence[str], *,
                    kind: str = "dropdown", active: int = 0,
                    titles: Sequence[str] | None = None, prefix: str = "", **position):
    """Add a dropdown or slider to ``fig`` that shows one group of traces at a time.

    groups: one list of trace indices per option; a trace in no group is always shown.
    labels: the option names. titles: optional figure title per option.
    kind: "dropdown" or "slider". position: extra keys for the menu/slider (x, y, pad...).
    Returns ``fig`` with the ``active`` option shown.
    """
    if kind not in ("dropdown", "slider"):
        raise ValueError(f"kind={kind!r}; expected 'dropdown' or 'slider'")
    groups = _check_groups(groups, labels, titles, len(fig.data))
    if not 0 <= active < len(groups):
        raise ValueError(f"active={active} is not an option index 0..{len(groups) - 1}")
    grouped = {t for g in groups for t in g}

    def visible(i):
        return [t in groups[i] or t not in grouped for t in range(len(fig.data))]

    options = []
    for i, label in enumerate(labels):
        args = [{"visible": visible(i)}]
        if titles is not None:
            args.append({"title.text": titles[i]})
        options.append(dict(label=str(label), method="update", args=args))
    for t, shown in enumerate(visible(active)):
        fig.data[t].visible = shown
    if titles is not None:
        fig.update_layout(title_text=titles[active])
    if kind == "dropdown":
        menu = dict(type="dropdown", buttons=options, active=active, x=0.0, y=1.2,
                    xanchor="left", yanchor="top")
        menu.update(position)
        fig.update_layout(updatemenus=[*fig.layout.updatemenus, menu])
    else:
        slider = dict(steps=options, active=active, currentvalue=dict(prefix=prefix),
                      pad=dict(t=40))
        slider.update(position)
        fig.update_layout(sliders=[*fig.layout.sliders, slider])
    return fig
