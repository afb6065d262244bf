// The ipywidgets embed manager (embed-amd.js) fetches its icon fonts from the folder of
// the URL that require.js gives its modules. Without a path for them that URL is relative
// to the page (chapters/@jupyter-widgets/html-manager/dist/*.woff2: 404 on every widget
// page). Map "@jupyter-widgets" to the vendored copy next to this file (_static/vendor/npm),
// the layout data-jupyter-widgets-cdn already uses. Loaded after require.js, before the manager.
(function () {
  var here = document.currentScript && document.currentScript.src;
  if (!here || typeof window.require === "undefined" || !window.require.config) return;
  window.require.config({
    paths: { "@jupyter-widgets": new URL("vendor/npm/@jupyter-widgets", here).href },
  });
})();
