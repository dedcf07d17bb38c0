// dcgateway portal: small progressive enhancements (the pages work without them).
// Wizard step 3: offer only the target sessions that can take the chosen front end system
// (every group reaching a target uses one front end); the server checks it again.
document.addEventListener("DOMContentLoaded", function () {
  var frontEnd = document.getElementById("front_end");
  if (!frontEnd) { return; }
  function update() {
    document.querySelectorAll("[data-front-ends]").forEach(function (row) {
      var fits = row.getAttribute("data-front-ends").split(" ").indexOf(frontEnd.value) >= 0;
      row.hidden = !fits;
      var box = row.querySelector("input");
      if (!fits && box) { box.checked = false; }
    });
  }
  frontEnd.addEventListener("change", update);
  update();
});
