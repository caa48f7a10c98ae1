// Shows every <time datetime> in the viewer's time zone. The server renders UTC; this only
// rewrites absolute times (class "abs") and the titles of relative ones ("3 h ago").
"use strict";
(function () {
  const format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short",
  });
  for (const element of document.querySelectorAll("time[datetime]")) {
    const moment = new Date(element.getAttribute("datetime"));
    if (Number.isNaN(moment.getTime())) {
      continue;
    }
    const local = format.format(moment);
    if (element.classList.contains("abs")) {
      element.textContent = local;
    }
    element.title = local;
  }
})();
