/* studio ui: keep the log scrolled to its end when it updates (the only script besides htmx). */
document.addEventListener("htmx:afterSwap", function () {
  var pre = document.querySelector("#log pre.log");
  if (pre) { pre.scrollTop = pre.scrollHeight; }
});
