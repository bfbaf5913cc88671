// memstore inspector: small progressive enhancement (everything works without it).
// Forms marked data-confirm ask before they submit (deleting a memory, removing a rule).
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    event.stopImmediatePropagation();
  }
}, true);
