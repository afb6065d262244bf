// Plotly figures on narrow screens (phones): one layout policy for every figure of the book.
//
// Below NARROW pixels of available width, each figure is relaid out in two steps:
// 1. Subplots side by side become one column: each panel gets the full width and its own
//    height, subplot titles move with their panels, colour bars follow their panel
//    (figures with insets or axes shared between panels are not restacked). A title too
//    wide for the screen is wrapped (also the titles that sliders and menus switch to) and
//    sits at the top, with the menus that were above the plot in a row under it (a row of
//    many buttons becomes a dropdown).
// 2. Under the plot, measured from the drawn x axis (tick labels and title): the sliders,
//    one per row, then the legend, laid out horizontally. The figure grows by what they
//    take (measured once drawn), so the plot keeps its height.
// Wider again (rotation), the figure gets its own layout back.
// Each figure is marked data-lmcore-layout="wide" | "narrow" | "stacked" | "error".
(function () {
  "use strict";
  var NARROW = 600; // px of width available to the figure
  var PANEL = 260; // px of plot height per stacked panel, at least
  var GAP = 90; // px between stacked panels: x tick labels, x title, next subplot title
  var SLIDER = 100; // px a slider takes (current value, rail, step labels) if not yet drawn

  function axisName(letter, id) { // "x2" -> "xaxis2"
    return letter + "axis" + id.slice(1);
  }

  function get(obj, path) {
    var parts = path.split(".");
    for (var i = 0; i < parts.length && obj !== undefined && obj !== null; i++) obj = obj[parts[i]];
    return obj === undefined ? null : obj;
  }

  function cartesianPanels(gd) {
    var fl = gd._fullLayout;
    var ids = (fl._subplots && fl._subplots.cartesian) || [];
    var panels = [];
    var seen = {};
    for (var i = 0; i < ids.length; i++) {
      var m = /^(x\d*)(y\d*)$/.exec(ids[i]);
      if (!m) return null;
      var xn = axisName("x", m[1]);
      var yn = axisName("y", m[2]);
      var xa = fl[xn];
      var ya = fl[yn];
      if (!xa || !ya) return null;
      if (xa.overlaying || ya.overlaying) continue; // drawn on top of its base panel
      if (seen[xn] || seen[yn]) return null; // one axis in two panels: leave it alone
      seen[xn] = seen[yn] = true;
      panels.push({ x: xn, y: yn, xd: xa.domain.slice(), yd: ya.domain.slice() });
    }
    return panels;
  }

  function overlaps(a, b) {
    return a[0] < b[1] - 1e-6 && b[0] < a[1] - 1e-6;
  }

  function sideBySide(panels) {
    if (!panels || panels.length < 2) return false;
    var columns = false;
    for (var i = 0; i < panels.length; i++) {
      for (var j = i + 1; j < panels.length; j++) {
        var xo = overlaps(panels[i].xd, panels[j].xd);
        if (xo && overlaps(panels[i].yd, panels[j].yd)) return false; // an inset
        if (!xo) columns = true;
      }
    }
    return columns;
  }

  function titleText(layout) {
    var t = get(layout, "title.text");
    return t === null && typeof layout.title === "string" ? layout.title : t;
  }

  function wrap(text, perLine) { // lines of at most perLine characters, broken at spaces
    if (typeof text !== "string" || text.length <= perLine || text.indexOf("<br") >= 0) return null;
    var words = text.split(" ");
    var lines = [""];
    for (var i = 0; i < words.length; i++) {
      var line = lines[lines.length - 1];
      if (line && (line + " " + words[i]).length > perLine) lines.push(words[i]);
      else lines[lines.length - 1] = line ? line + " " + words[i] : words[i];
    }
    return lines.length > 1 ? lines : null;
  }

  // Long category labels (a sentence per row...) would leave the plot a sliver: on a phone
  // each axis gets at most 30 % of the width for them, cut with "…" (hover shows all);
  // an axis title wider than the figure is wrapped.
  function shortenLabels(gd, update, width) {
    var fl = gd._fullLayout;
    Object.keys(fl).forEach(function (name) {
      var axis = fl[name];
      if (!/^[xy]axis\d*$/.test(name) || !axis || axis.overlaying) return;
      var font = (axis.tickfont && axis.tickfont.size) || 12;
      if (axis.type === "category" && name[0] === "y" && axis.tickmode !== "array" && axis._categories) {
        var fits = Math.max(8, Math.floor(0.3 * width / (0.6 * font)));
        var labels = axis._categories.map(String);
        if (labels.some(function (t) { return t.length > fits; })) {
          update[name + ".tickmode"] = "array";
          update[name + ".tickvals"] = labels;
          update[name + ".ticktext"] = labels.map(function (t) {
            return t.length > fits ? t.slice(0, fits - 1) + "…" : t;
          });
        }
      }
      var text = axis.title && axis.title.text;
      var el = gd.querySelector(".infolayer > g.g-" + name.replace("axis", "") + "title");
      var px = el ? el.getBoundingClientRect()[name[0] === "x" ? "width" : "height"] : 0;
      if (typeof text === "string" && px > (name[0] === "x" ? width - 20 : 0.9 * fl._size.h)) {
        var lines = wrap(text, Math.max(10, Math.floor(text.length * (width - 40) / px / (name[0] === "x" ? 1 : 2))));
        if (lines) update[name + ".title.text"] = lines.join("<br>");
      }
    });
  }

  // Step 1: stack the panels, wrap the titles, menus under the title.
  function topUpdate(gd, panels, width) {
    var fl = gd._fullLayout;
    var layout = gd.layout;
    var update = {};
    var size = fl._size; // the plot area as drawn (margins grown by plotly included)
    var oldPlot = size.h;
    var newPlot = oldPlot;
    var bars = { idx: [], x: [], y: [], len: [] };
    if (panels) {
      panels.sort(function (a, b) { return (b.yd[1] - a.yd[1]) || (a.xd[0] - b.xd[0]); });
      var rowPx = 0;
      panels.forEach(function (p) { rowPx = Math.max(rowPx, (p.yd[1] - p.yd[0]) * oldPlot); });
      var panelPx = Math.max(PANEL, Math.min(rowPx, 400));
      newPlot = panels.length * panelPx + (panels.length - 1) * GAP;
      var boxes = {};
      panels.forEach(function (p, i) {
        var top = 1 - i * (panelPx + GAP) / newPlot;
        update[p.x + ".domain"] = [0, 1];
        update[p.y + ".domain"] = [top - panelPx / newPlot, top];
        boxes[p.y] = [top - panelPx / newPlot, top];
        p.newTop = top;
      });
      gd._fullData.forEach(function (t, i) {
        var box = t.showscale && t.yaxis && boxes[axisName("y", t.yaxis)];
        if (!box) return;
        bars.idx.push(i); bars.x.push(1.02); bars.y.push((box[0] + box[1]) / 2);
        bars.len.push(box[1] - box[0]);
      });
      (layout.annotations || []).forEach(function (a, i) {
        if (a.xref !== "paper" || a.yref !== "paper") return;
        var home = panels.filter(function (p) {
          return Math.abs((p.xd[0] + p.xd[1]) / 2 - a.x) < 0.02 && Math.abs(p.yd[1] - a.y) < 0.02;
        })[0];
        if (home) { // a subplot title
          update["annotations[" + i + "].x"] = 0.5;
          update["annotations[" + i + "].y"] = home.newTop;
        }
      });
    }
    // Titles: the one shown, and those that sliders and menus switch to.
    var title = titleText(layout);
    var el = gd.querySelector(".g-gtitle .gtitle");
    var fontSize = get(fl, "title.font.size") || 17;
    var pxPerChar = el && title ? el.getBoundingClientRect().width / title.length : 0.6 * fontSize;
    var perLine = Math.max(12, Math.floor((width - 30) / pxPerChar));
    var lines = wrap(title, perLine);
    var most = lines ? lines.length : 1;
    if (lines) update["title.text"] = lines.join("<br>");
    [["sliders", "steps"], ["updatemenus", "buttons"]].forEach(function (kind) {
      (layout[kind[0]] || []).forEach(function (control, i) {
        (control[kind[1]] || []).forEach(function (step, j) {
          var args = step.args || [];
          var k = step.method === "update" ? 1 : (step.method === "relayout" ? 0 : -1);
          var t = k >= 0 && args[k] ? args[k]["title.text"] || (typeof args[k].title === "string" ? args[k].title : null) : null;
          var stepLines = wrap(t, perLine);
          if (!stepLines) return;
          most = Math.max(most, stepLines.length);
          var copy = JSON.parse(JSON.stringify(args));
          delete copy[k].title;
          copy[k]["title.text"] = stepLines.join("<br>");
          update[kind[0] + "[" + i + "]." + kind[1] + "[" + j + "].args"] = copy;
        });
      });
    });
    var menusAbove = (layout.updatemenus || []).filter(function (m) {
      return m.visible !== false && typeof m.y === "number" && m.y >= 1;
    });
    // Subplot titles over the top panel: the menus go above them.
    var titled = (layout.annotations || []).some(function (a, i) {
      var y = update["annotations[" + i + "].y"];
      return a.xref === "paper" && a.yref === "paper" && Math.abs((y === undefined ? a.y : y) - 1) < 0.02;
    });
    var menuLift = 6 + (titled ? 24 : 0);
    var top = size.t;
    if (most > 1 || menusAbove.length) {
      var lineHeight = Math.round(1.3 * fontSize);
      var titleBlock = title ? most * lineHeight + 10 : 0;
      top = Math.max(size.t, 8 + titleBlock + menusAbove.length * 34 + menuLift);
      update["margin.t"] = top;
      if (title) {
        update["title.yref"] = "container";
        update["title.yanchor"] = "top";
        update["title.pad.t"] = 8;
      }
    }
    (layout.updatemenus || []).forEach(function (m, i) {
      var row = menusAbove.indexOf(m);
      if (row < 0) return; // above the plot, under the title: one row each, from the left
      update["updatemenus[" + i + "].y"] = 1 + (menuLift + (menusAbove.length - 1 - row) * 34) / newPlot;
      update["updatemenus[" + i + "].yanchor"] = "bottom";
      update["updatemenus[" + i + "].x"] = 0;
      update["updatemenus[" + i + "].xanchor"] = "left";
      if (m.type === "buttons" && (m.buttons || []).length > 2) update["updatemenus[" + i + "].type"] = "dropdown";
    });
    shortenLabels(gd, update, width);
    if (layout.width) { update.width = null; update.autosize = true; }
    var height = newPlot + top + (fl.height - size.t - size.h);
    if (Math.abs(height - fl.height) > 1) update.height = height;
    if (update["title.yref"]) update["title.y"] = 1;
    return { layout: update, bars: bars };
  }

  // Step 2, on the drawn figure: sliders, then the legend, under the x axis.
  function bottomUpdate(gd) {
    var fl = gd._fullLayout;
    var layout = gd.layout;
    var update = {};
    var plotTop = fl._size.t;
    var plotPx = fl._size.h;
    var bottom = plotTop + plotPx; // px from the figure's top
    var origin = gd.getBoundingClientRect().top;
    var grow = 0; // px the figure grows by
    var title = gd.querySelector(".g-gtitle");
    var box = title && title.getBoundingClientRect();
    if (box && box.height > 0) {
      // The title, pinned to the top, must clear what sits above the plot (a top x axis,
      // its title, menus): grow the top margin if they would meet.
      var highest = plotTop;
      gd.querySelectorAll(".xaxislayer-above, .infolayer > g[class^='g-x'], .updatemenu-container").forEach(function (e) {
        var r = e.getBoundingClientRect();
        if (r.height > 0 && r.bottom - origin <= plotTop + 2) highest = Math.min(highest, r.top - origin);
      });
      var top = box.top - origin;
      var pinned = get(layout, "title.yref") === "container" && get(layout, "title.yanchor") === "top";
      var titleBottom = pinned && top >= 4 ? box.bottom - origin : 8 + box.height;
      var needTop = titleBottom + 6 + (plotTop - highest);
      if (!pinned || top < 4) {
        update["title.yref"] = "container";
        update["title.yanchor"] = "top";
        update["title.y"] = top < 4 && pinned ? get(layout, "title.y") - (8 - top) / fl.height : 1;
        update["title.pad.t"] = 8;
      }
      if (needTop > plotTop + 1) {
        update["margin.t"] = needTop;
        grow += needTop - plotTop;
      }
    }
    gd.querySelectorAll(".xaxislayer-above, .infolayer > g[class^='g-x']").forEach(function (e) {
      var r = e.getBoundingClientRect();
      if (r.height > 0) bottom = Math.max(bottom, r.bottom - origin);
    });
    var cursor = bottom - (plotTop + plotPx) + 10; // px under the plot area
    var below = (layout.sliders || []).filter(function (s) {
      return s.visible !== false && (typeof s.y !== "number" || s.y <= 0.1);
    });
    (layout.sliders || []).forEach(function (s, i) {
      if (below.indexOf(s) < 0) return;
      update["sliders[" + i + "].y"] = -cursor / plotPx;
      update["sliders[" + i + "].yanchor"] = "top";
      if (below.length > 1) { update["sliders[" + i + "].x"] = 0; update["sliders[" + i + "].len"] = 1; }
      var full = fl.sliders && fl.sliders[i];
      var padT = full && full.pad ? full.pad.t : 0;
      update["sliders[" + i + "].pad.t"] = 8; // the gap under the axis is made here already
      cursor += (full && full._dims && full._dims.height ? full._dims.height - padT + 8 : SLIDER) + 6;
    });
    var legend = gd.querySelector(".legend");
    var legendPx = 0;
    if (fl.showlegend && legend && legend.getBoundingClientRect().height > 0) {
      update["legend.orientation"] = "h";
      update["legend.x"] = 0;
      update["legend.xanchor"] = "left";
      update["legend.y"] = -cursor / plotPx;
      update["legend.yanchor"] = "top";
      var entries = gd._fullData.filter(function (t) { return t.showlegend !== false && t.visible !== false; }).length;
      legendPx = 22 * entries + 10; // a first guess: settle() fixes it once drawn
    }
    gd.__lmcorePlotPx = plotPx;
    var need = cursor + legendPx;
    var drawn = fl.height - plotTop - plotPx;
    if (need > drawn) {
      update["margin.b"] = need;
      grow += need - drawn;
    }
    if (grow > 0) update.height = fl.height + grow;
    return update;
  }

  // Step 3: plotly grew the margins for what did not fit: grow the figure as much, so the
  // plot keeps its height (and paper positions under it their pixel distances).
  function settle(gd) {
    var fl = gd._fullLayout;
    var lost = Math.max(0, gd.__lmcorePlotPx - fl._size.h);
    var origin = gd.getBoundingClientRect().top;
    var overflow = 0; // px drawn below the figure's bottom edge
    gd.querySelectorAll(".legend, .slider-container").forEach(function (e) {
      var r = e.getBoundingClientRect();
      if (r.height > 0) overflow = Math.max(overflow, r.bottom - origin + 6 - fl.height);
    });
    if (lost + overflow <= 1) return {};
    return { height: fl.height + lost + overflow, "margin.b": fl._size.b + overflow };
  }

  function inverse(gd, update) { // the values the figure has now, for the keys we change
    var back = {};
    Object.keys(update).forEach(function (key) {
      var value = get(gd.layout, key.replace(/\[(\d+)\]/g, ".$1"));
      if (key === "title.text" && value === null) value = titleText(gd.layout);
      back[key] = value === null ? null : JSON.parse(JSON.stringify(value));
    });
    return back;
  }

  function colourBars(gd, bars, values) {
    if (!bars.idx.length) return Promise.resolve();
    return window.Plotly.restyle(gd, { "colorbar.x": values.x, "colorbar.y": values.y,
                                       "colorbar.len": values.len }, bars.idx);
  }

  function narrowLayout(gd, state, width) {
    var change = topUpdate(gd, state.panels && state.panels.map(function (p) { return Object.assign({}, p); }), width);
    state.back = [inverse(gd, change.layout)];
    state.bars = change.bars;
    state.barsBack = ["x", "y", "len"].reduce(function (acc, k) {
      acc[k] = change.bars.idx.map(function (i) { return get(gd.data[i], "colorbar." + k); });
      return acc;
    }, {});
    // plotly's HTML fixes the height of the figure's div (and of its wrapper) inline.
    state.boxes = [gd, gd.parentElement].filter(function (e) { return e && e.style.height; });
    // Setting a height makes plotly pin the width it has: unpin it afterwards, so the
    // figure keeps following its container; put all three back when wide again.
    state.size = { width: get(gd.layout, "width"), height: get(gd.layout, "height"),
                   autosize: get(gd.layout, "autosize") };
    state.styleHeights = state.boxes.map(function (e) { return e.style.height; });
    return window.Plotly.relayout(gd, change.layout)
      .then(function () { return colourBars(gd, state.bars, state.bars); })
      .then(function () {
        var update = bottomUpdate(gd);
        state.back.unshift(inverse(gd, update));
        return window.Plotly.relayout(gd, update);
      })
      .then(function () {
        var update = settle(gd);
        state.back.unshift(inverse(gd, update));
        return window.Plotly.relayout(gd, update);
      })
      .then(function () { // the page makes room for the taller figure
        state.boxes.forEach(function (e) { e.style.height = gd._fullLayout.height + "px"; });
        return window.Plotly.relayout(gd, { width: null, autosize: true });
      });
  }

  function wideLayout(gd, state) {
    // Undo step 2, then step 1; the colour bars last.
    return state.back.reduce(function (done, back) {
      return done.then(function () { return window.Plotly.relayout(gd, back); });
    }, Promise.resolve()).then(function () {
      state.boxes.forEach(function (e, i) { e.style.height = state.styleHeights[i]; });
      return window.Plotly.relayout(gd, state.size);
    }).then(function () {
      return colourBars(gd, state.bars, state.barsBack);
    }).then(function () { return window.Plotly.Plots.resize(gd); });
  }

  function apply(gd) {
    if (!gd._fullLayout || !gd._fullData || gd.__lmcoreBusy) return;
    var state = gd.__lmcoreNarrow;
    if (!state) {
      var panels = cartesianPanels(gd);
      state = gd.__lmcoreNarrow = { panels: sideBySide(panels) ? panels : null, narrow: false };
    }
    var width = gd.parentElement ? gd.parentElement.clientWidth : window.innerWidth;
    var narrow = width > 0 && width < NARROW;
    var name = narrow ? (state.panels ? "stacked" : "narrow") : "wide";
    if (narrow === state.narrow) { gd.setAttribute("data-lmcore-layout", name); return; }
    gd.__lmcoreBusy = true;
    (narrow ? narrowLayout(gd, state, width) : wideLayout(gd, state)).then(function () {
      state.narrow = narrow;
      gd.setAttribute("data-lmcore-layout", name);
      gd.__lmcoreBusy = false;
      apply(gd); // the screen may have turned again meanwhile
    }).catch(function (err) {
      gd.__lmcoreBusy = false;
      gd.setAttribute("data-lmcore-layout", "error");
      console.error("narrow_figures.js:", err);
    });
  }

  function whenDrawn(gd, tries) {
    if (gd._fullLayout && gd._fullData && gd.querySelector(".main-svg")) { apply(gd); return; }
    if (tries > 600) return; // 10 s: not a figure that will be drawn
    window.requestAnimationFrame(function () { whenDrawn(gd, tries + 1); });
  }

  function scan() {
    if (!window.Plotly) return;
    var figures = document.querySelectorAll("div.plotly-graph-div");
    for (var i = 0; i < figures.length; i++) {
      if (!figures[i].__lmcoreSeen) { figures[i].__lmcoreSeen = true; whenDrawn(figures[i], 0); }
    }
  }

  var timer = null;
  window.addEventListener("resize", function () {
    clearTimeout(timer);
    timer = setTimeout(function () {
      var figures = document.querySelectorAll("div.plotly-graph-div");
      for (var i = 0; i < figures.length; i++) {
        if (figures[i].__lmcoreNarrow) apply(figures[i]);
      }
    }, 150);
  });

  function start() {
    scan();
    // Figures drawn later (inside widget outputs) are picked up too.
    var pending = false;
    new MutationObserver(function () {
      if (pending) return;
      pending = true;
      window.requestAnimationFrame(function () { pending = false; scan(); });
    }).observe(document.body, { childList: true, subtree: true });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
