/* ipywidgets 8 typesets widget labels through MathJax 2's API (MathJax.Hub.Queue), but the
   site loads MathJax 3. Loaded (deferred) right after MathJax, this maps that one call onto
   MathJax 3 so saved widgets render without "Cannot read properties of undefined". */
(function () {
  var mj = window.MathJax;
  if (!mj || mj.Hub || !mj.version) return;
  mj.Hub = {
    Queue: function (command) {
      var element = command && command[2];
      var typeset = function () { return mj.typesetPromise(element ? [element] : undefined); };
      (mj.startup && mj.startup.promise ? mj.startup.promise.then(typeset) : typeset())
        .catch(function (err) { console.warn("MathJax typeset failed", err); });
    }
  };
})();
