// Shows the progress of an upload. Without this script the form posts as usual.
"use strict";
(function () {
  var form = document.getElementById("hochladen");
  var bar = document.getElementById("fortschritt");
  var text = document.getElementById("fortschritt-text");
  if (!form || !bar || !text || !window.XMLHttpRequest || !window.FormData) {
    return;
  }
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var request = new XMLHttpRequest();
    request.open("POST", form.action);
    bar.hidden = false;
    request.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) {
        var percent = Math.floor((e.loaded / e.total) * 100);
        bar.value = percent;
        text.textContent = "Hochgeladen: " + percent + " %";
      }
    });
    request.addEventListener("load", function () {
      text.textContent = "Übertragen; die Prüfung ist abgeschlossen.";
      document.open();
      document.write(request.responseText);
      document.close();
    });
    request.addEventListener("error", function () {
      text.textContent = "Die Übertragung ist fehlgeschlagen. Bitte erneut versuchen.";
    });
    text.textContent = "Hochladen beginnt …";
    request.send(new FormData(form));
  });
})();
